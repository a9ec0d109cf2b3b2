use super::*;
use crate::observe::Member;
use crate::planner::tests::World;
use crate::planner::{AdminCall, KubeAction};

fn outcome_of(
    w: &World,
    p: &Plan,
    admin: Option<AdminResult>,
) -> (KVClusterStatus, Vec<PlannedEvent>) {
    let mut o = Outcome::new(p.clone(), "ringkv:test".into());
    o.admin = admin;
    report(&w.spec, &w.status, &w.observed(), &o)
}

fn status_of(w: &World, p: &Plan) -> KVClusterStatus {
    outcome_of(w, p, None).0
}

fn cond<'a>(s: &'a KVClusterStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn a_healthy_cluster_is_available_not_progressing_not_degraded() {
    let w = World::new(&[2, 2, 2]);
    let p = w.plan();
    let s = status_of(&w, &p);
    assert_eq!(s.observed_generation, Some(7));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!((s.replicas, s.ready_replicas), (6, 6));
    assert_eq!(s.replication, "3/2/2");
    assert_eq!(
        s.selector,
        "app.kubernetes.io/instance=kv,app.kubernetes.io/name=ringkv"
    );
    assert_eq!(s.vnodes, Some(128));
    assert_eq!(
        s.zones
            .iter()
            .map(|z| (z.name.as_str(), z.ready_replicas))
            .collect::<Vec<_>>(),
        vec![("zone-a", 2), ("zone-b", 2), ("zone-c", 2)]
    );
    assert_eq!(s.members.len(), 6);
    assert!(s.members.iter().all(|m| m.state == "normal" && m.alive));
    assert_eq!(cond(&s, AVAILABLE).status, "True");
    assert_eq!(cond(&s, PROGRESSING).status, "False");
    assert_eq!(cond(&s, PROGRESSING).reason, "Reconciled");
    assert_eq!(cond(&s, DEGRADED).status, "False");
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(7))
    );
}

#[test]
fn transition_times_are_kept_while_a_condition_holds() {
    let mut w = World::new(&[1, 1, 1]);
    let s1 = status_of(&w, &w.plan());
    w.status = s1.clone();
    w.now += 60_000;
    let s2 = status_of(&w, &w.plan());
    assert_eq!(
        cond(&s1, AVAILABLE).last_transition_time,
        cond(&s2, AVAILABLE).last_transition_time
    );
    // Flip availability: the time moves.
    w.status = s2.clone();
    for z in 0..3 {
        w.zones[z].as_mut().unwrap().ready_replicas = 0;
    }
    let s3 = status_of(&w, &w.plan());
    assert_eq!(cond(&s3, AVAILABLE).status, "False");
    assert_ne!(
        cond(&s2, AVAILABLE).last_transition_time,
        cond(&s3, AVAILABLE).last_transition_time
    );
    assert_eq!(cond(&s3, DEGRADED).reason, "NodesNotReady");
    assert_eq!(s3.phase, Phase::Degraded);
}

#[test]
fn scaling_shows_progress_and_the_blocker_shows_why() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    let p = w.plan();
    assert!(matches!(p.admin, Some(AdminCall::Decommission { .. })));
    let (s, _) = outcome_of(
        &w,
        &p,
        Some(AdminResult::Decommission(Ok(DecommissionReport {
            phase: DecommissionPhase::Streaming,
            ranges_total: 8,
            ranges_done: 2,
            keys_streamed: 40,
            error: String::new(),
        }))),
    );
    assert_eq!(s.phase, Phase::Scaling);
    assert_eq!(cond(&s, PROGRESSING).reason, "Decommissioning");
    let d = s.decommission.unwrap();
    assert_eq!((d.ranges_done, d.ranges_total, d.keys_streamed), (2, 8, 40));
    assert_eq!(d.message.as_deref(), Some("2/8 ranges streamed, 40 keys"));

    let p = w.plan();
    let (s, events) = outcome_of(
        &w,
        &p,
        Some(AdminResult::Decommission(Err(
            AdminError::FailedPrecondition {
                node: "kv-zone-c-1".into(),
                message: "would leave 2 < N=3 nodes".into(),
            },
        ))),
    );
    assert_eq!(events.last().unwrap().reason, "DecommissionRefused");
    assert!(events.last().unwrap().warning);
    assert_eq!(cond(&s, PROGRESSING).status, "False");
    assert_eq!(cond(&s, PROGRESSING).reason, "DecommissionRefused");
    assert!(cond(&s, PROGRESSING).message.contains("N=3"));
}

#[test]
fn a_failed_decommission_degrades_and_warns_once() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    let p = w.plan();
    let failed = DecommissionReport {
        phase: DecommissionPhase::Failed,
        ranges_total: 8,
        ranges_done: 3,
        keys_streamed: 1,
        error: "peer unreachable".into(),
    };
    let (s, events) = outcome_of(&w, &p, Some(AdminResult::Decommission(Ok(failed.clone()))));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason == "DecommissionFailed")
            .count(),
        1
    );
    assert_eq!(cond(&s, DEGRADED).reason, "DecommissionFailed");
    assert!(cond(&s, DEGRADED).message.contains("peer unreachable"));
    // Still failing on the next retry: no new warning.
    w.status = s;
    let p = w.plan();
    let (_, events) = outcome_of(&w, &p, Some(AdminResult::Decommission(Ok(failed))));
    assert!(events.iter().all(|e| e.reason != "DecommissionFailed"));
}

#[test]
fn below_n_shows_scale_down_refused() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replicas = 2;
    let s = status_of(&w, &w.plan());
    let c = cond(&s, PROGRESSING);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ScaleDownRefused")
    );
}

#[test]
fn an_invalid_spec_is_degraded_and_does_not_record_vnodes() {
    let mut w = World::new(&[0, 0, 0]);
    w.zones = vec![None, None, None];
    w.status = KVClusterStatus::default();
    w.spec.replication.r = 5;
    let s = status_of(&w, &w.plan());
    assert_eq!(s.phase, Phase::Invalid);
    assert_eq!(cond(&s, DEGRADED).reason, "InvalidSpec");
    assert_eq!(cond(&s, PROGRESSING).reason, "InvalidSpec");
    assert_eq!(s.vnodes, None);
    assert_eq!(s.replication_factor, None);
    assert_eq!(s.image, None, "nothing was created with any image");
}

#[test]
fn members_merge_self_reports_over_peer_views() {
    let mut w = World::new(&[1, 1, 1]);
    // zone-a-0 thinks zone-b-0 is dead and joining; zone-b-0 says it is normal.
    if let Some(NodeObservation::Report(r)) = w.nodes.get_mut("kv-zone-a-0") {
        r.members.push(Member {
            node_id: "kv-zone-b-0".into(),
            zone: "zone-b".into(),
            state: NodeState::Joining,
            alive: false,
        });
        r.members.push(Member {
            node_id: "old-node".into(),
            zone: "zone-b".into(),
            state: NodeState::Left,
            alive: false,
        });
    }
    let s = status_of(&w, &w.plan());
    let b = s
        .members
        .iter()
        .find(|m| m.node_id == "kv-zone-b-0")
        .unwrap();
    assert_eq!(
        (b.state.as_str(), b.alive, b.zone.as_str()),
        ("normal", true, "zone-b")
    );
    let old = s.members.iter().find(|m| m.node_id == "old-node").unwrap();
    assert_eq!(old.state, "left");
    assert_eq!(
        cond(&s, DEGRADED).status,
        "False",
        "left members are not down"
    );
}

#[test]
fn a_removed_zone_stays_refused() {
    let mut w = World::new(&[1, 1, 1]);
    w.status = status_of(&w, &w.plan());
    w.spec.zones.pop();
    w.zones.pop();
    w.hashes.pop();
    let p = w.plan();
    assert!(matches!(&p.activity, Activity::Invalid(m) if m.contains("zone-c")));
    let s = status_of(&w, &p);
    assert!(s.zones.iter().any(|z| z.name == "zone-c"));
    w.status = s;
    assert!(
        matches!(w.plan().activity, Activity::Invalid(_)),
        "still refused next time"
    );
}

#[test]
fn repair_completion_stamps_the_zone() {
    let mut w = World::new(&[1, 1, 1]);
    let mut p = w.plan();
    p.repaired_zone = Some("zone-b".into());
    w.now = 123_456;
    let s = status_of(&w, &p);
    assert_eq!(
        s.zones[1].last_repair_time,
        Some(crate::time::from_unix_ms(123_456))
    );
    assert_eq!(s.zones[0].last_repair_time, None);
}

#[test]
fn repair_request_outcome_is_recorded() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    let p = w.plan();
    assert!(matches!(p.admin, Some(AdminCall::Repair { .. })));
    let (s, _) = outcome_of(
        &w,
        &p,
        Some(AdminResult::Repair(Ok(RepairStarted {
            started: false,
            repair_id: 42,
        }))),
    );
    assert_eq!(s.repair.as_ref().unwrap().repair_id, 42);
    let (_, events) = outcome_of(
        &w,
        &p,
        Some(AdminResult::Repair(Err(AdminError::Timeout {
            node: "x".into(),
            timeout: std::time::Duration::from_secs(1),
        }))),
    );
    assert_eq!(events.last().unwrap().reason, "RepairRequestFailed");
}

#[test]
fn a_failed_write_is_degraded_with_the_api_error_and_warned_once() {
    let mut w = World::new(&[1, 1, 1]);
    let p = w.plan();
    let mut o = Outcome::new(p.clone(), "ringkv:test".into());
    o.apply_error = Some("StatefulSet kv-zone-a: 422 Invalid: spec: Forbidden".into());
    let (s, events) = report(&w.spec, &w.status, &w.observed(), &o);
    let c = cond(&s, DEGRADED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ApplyFailed")
    );
    assert!(c.message.contains("422 Invalid"));
    assert_eq!(s.reason, "ApplyFailed");
    assert!(
        events
            .iter()
            .any(|e| e.reason == "ApplyFailed" && e.warning)
    );
    w.status = s;
    let (_, events) = report(&w.spec, &w.status, &w.observed(), &o);
    assert!(!events.iter().any(|e| e.reason == "ApplyFailed"), "once");
    let _ = KubeAction::DeletePod {
        name: String::new(),
    };
}

#[test]
fn wide_columns_and_recorded_values_are_filled() {
    let mut w = World::new(&[2, 1, 1]);
    w.status.zones = ["zone-a", "zone-b", "zone-c"]
        .iter()
        .enumerate()
        .map(|(i, z)| ZoneStatus {
            name: (*z).into(),
            last_repair_time: Some(crate::time::from_unix_ms(1000 * (i as i64 + 1))),
            ..Default::default()
        })
        .collect();
    let s = status_of(&w, &w.plan());
    assert_eq!(s.zone_summary, "zone-a=2/2 zone-b=1/1 zone-c=1/1");
    assert_eq!(
        s.last_repair_time,
        Some(crate::time::from_unix_ms(1000)),
        "the oldest"
    );
    assert_eq!(s.image.as_deref(), Some("ringkv:test"));
    assert_eq!(s.replication_factor, Some(3));
    assert_eq!(s.reason, "");
    // A zone never repaired: no cluster-wide time.
    w.status.zones[1].last_repair_time = None;
    assert_eq!(status_of(&w, &w.plan()).last_repair_time, None);
    // Waiting shows its reason in the Reason column.
    w.set_state("kv-zone-a-1", crate::observe::NodeState::Joining);
    w.status.phase = Phase::Scaling;
    assert_eq!(status_of(&w, &w.plan()).reason, "NodesNotNormal");
}

#[test]
fn removal_and_cleanup_answers_are_recorded() {
    use crate::crd::{CleanupProgress, ReplaceProgress};
    use crate::observe::{RemovalPhase, RemovalReport};
    let mut w = World::new(&[2, 1, 1]);
    let dead = "kv-zone-a-1";
    w.nodes
        .insert(dead.into(), NodeObservation::Unreachable("refused".into()));
    let mut p = w.plan();
    p.replace = Some(ReplaceProgress {
        node: dead.into(),
        zone: "zone-a".into(),
        phase: "Removing".into(),
        reason: "annotation".into(),
        coordinator: "kv-zone-a-0".into(),
        old_pod_uid: String::new(),
        old_volume_uid: String::new(),
        ranges_done: 0,
        ranges_total: 0,
        keys_streamed: 0,
        started_at: None,
        message: None,
    });
    p.activity = Activity::ReplacingNode {
        node: dead.into(),
        message: "removing".into(),
    };
    let progress = RemovalReport {
        node_id: dead.into(),
        phase: RemovalPhase::Streaming,
        ranges_total: 10,
        ranges_done: 4,
        keys_streamed: 400,
        error: String::new(),
    };
    let (s, _) = outcome_of(&w, &p, Some(AdminResult::RemoveNode(Ok(progress))));
    let r = s.replace.clone().unwrap();
    assert_eq!(
        (r.ranges_done, r.ranges_total, r.keys_streamed),
        (4, 10, 400)
    );
    assert_eq!(s.phase, Phase::Scaling);
    assert_eq!(cond(&s, PROGRESSING).reason, "ReplacingNode");
    // The node being replaced being down is not a separate problem.
    assert_eq!(
        cond(&s, DEGRADED).status,
        "False",
        "{:?}",
        cond(&s, DEGRADED)
    );

    // Refused (alive after all): said in Progressing, asked again later.
    let refused = AdminError::FailedPrecondition {
        node: "kv-zone-a-0".into(),
        message: format!("{dead} is alive"),
    };
    let mut o = Outcome::new(p.clone(), "ringkv:test".into());
    o.admin = Some(AdminResult::RemoveNode(Err(refused)));
    let (s, _) = report(&w.spec, &w.status, &w.observed(), &o);
    assert_eq!(cond(&s, PROGRESSING).reason, "RemoveNodeRefused");
    assert!(cond(&s, PROGRESSING).message.contains("alive"));
    assert_eq!(requeue(&o), REQUEUE_IDLE);

    // A cleanup started: its id is kept to tell its outcome later.
    let mut p = World::new(&[1, 1, 1]).plan();
    p.cleanup = Some(CleanupProgress {
        reason: "ScaleUp of kv-zone-c-0".into(),
        node: "kv-zone-a-0".into(),
        cleanup_id: 0,
        baseline_completed_unix_ms: Some(0),
        nodes_done: Vec::new(),
        keys_dropped: 0,
        started_at: None,
        failures: 0,
        retry_after_unix_ms: None,
        message: None,
    });
    p.activity = Activity::CleaningUp {
        node: "kv-zone-a-0".into(),
        message: "kv-zone-a-0 is dropping".into(),
    };
    let w = World::new(&[1, 1, 1]);
    let started = crate::admin::CleanupStarted {
        started: true,
        cleanup_id: 42,
    };
    let (s, _) = outcome_of(&w, &p, Some(AdminResult::Cleanup(Ok(started))));
    assert_eq!(s.cleanup.as_ref().unwrap().cleanup_id, 42);
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(cond(&s, PROGRESSING).reason, "CleaningUp");
}
