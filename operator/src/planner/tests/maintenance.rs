//! Cleanup after a scale-up, and replacing a node gone for good.

use super::*;
use crate::observe::CleanupReport;

fn cleanup_call(node: &str) -> Option<AdminCall> {
    Some(AdminCall::Cleanup { node: node.into() })
}

/// Node `pod` finished a cleanup at `at` (Unix ms).
fn cleaned(w: &mut World, pod: &str, id: u64, at: u64) {
    w.node_mut(pod).cleanup = CleanupReport {
        running: false,
        cleanup_id: id,
        last_completed_unix_ms: at,
        last_error: String::new(),
        keys_dropped: 5,
    };
}

#[test]
fn a_scale_up_is_followed_by_a_cleanup_of_every_node_one_at_a_time() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replicas = 4;
    let p = w.plan();
    assert!(matches!(p.activity, Activity::ScalingUp { .. }));
    let pending = p
        .cleanup
        .clone()
        .expect("cleanup recorded with the scale-up");
    assert_eq!(pending.reason, "ScaleUp of kv-zone-a-1");
    assert_eq!(pending.node, "");
    assert_eq!(p.admin, None);

    // The new node joins: nothing is cleaned while the ring changes.
    w.status.phase = Phase::Scaling;
    w.status.cleanup = p.cleanup;
    w.status.step = p.step;
    *w.sts_mut(0) = sts(2);
    w.set_state("kv-zone-a-1", NodeState::Joining);
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(p.cleanup, Some(pending.clone()), "kept while waiting");

    // Joined: the scale-up is over, the first node is asked.
    w.set_state("kv-zone-a-1", NodeState::Normal);
    let p = w.plan();
    assert_eq!(reasons(&p), vec!["ScalingComplete", "CleanupStarted"]);
    assert_eq!(p.admin, cleanup_call("kv-zone-a-0"));
    assert!(matches!(&p.activity, Activity::CleaningUp { node, .. } if node == "kv-zone-a-0"));
    let mut progress = p.cleanup.unwrap();
    assert_eq!(progress.baseline_completed_unix_ms, Some(0));
    progress.cleanup_id = 1;
    w.status.phase = Phase::Running;
    w.status.cleanup = Some(progress);

    // Running: wait. Done: the next node, in ordinal order per zone.
    w.node_mut("kv-zone-a-0").cleanup.running = true;
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert!(matches!(p.activity, Activity::CleaningUp { .. }));
    let order = ["kv-zone-a-0", "kv-zone-a-1", "kv-zone-b-0", "kv-zone-c-0"];
    for (i, pod) in order.iter().enumerate() {
        cleaned(&mut w, pod, 1, 1000);
        let p = w.plan();
        let c = p.cleanup.clone();
        if let Some(next) = order.get(i + 1) {
            assert_eq!(p.admin, cleanup_call(next), "after {pod}");
            let c = c.unwrap();
            assert_eq!(c.nodes_done.len(), i + 1);
            assert_eq!(c.keys_dropped, 5 * (i as i64 + 1));
            let mut c = c;
            c.cleanup_id = 1;
            w.status.cleanup = Some(c);
        } else {
            assert_eq!(c, None, "every node cleaned up");
            assert!(reasons(&p).contains(&"CleanupComplete"));
            assert!(matches!(p.activity, Activity::Stable));
        }
    }
}

#[test]
fn a_cleanup_that_kept_ranges_is_retried_with_back_off() {
    let mut w = World::new(&[1, 1, 1]);
    w.status.cleanup = Some(CleanupProgress {
        reason: "ScaleUp of kv-zone-c-0".into(),
        node: "kv-zone-a-0".into(),
        cleanup_id: 3,
        baseline_completed_unix_ms: Some(0),
        nodes_done: Vec::new(),
        keys_dropped: 0,
        started_at: None,
        failures: 0,
        retry_after_unix_ms: None,
        message: None,
    });
    w.node_mut("kv-zone-a-0").cleanup = CleanupReport {
        running: false,
        cleanup_id: 3,
        last_completed_unix_ms: 0,
        last_error: "2 range(s) kept: kv-zone-b-0 is down".into(),
        keys_dropped: 7,
    };
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(reasons(&p), vec!["CleanupFailed"]);
    assert_eq!(p.requeue, Duration::from_secs(30));
    let c = p.cleanup.unwrap();
    assert_eq!(c.failures, 1);
    assert!(c.message.as_ref().unwrap().contains("kept"));
    w.status.cleanup = Some(CleanupProgress {
        message: None,
        ..c.clone()
    });
    w.now += 10_000;
    assert_eq!(w.plan().admin, None, "not before the back-off");
    w.now += 21_000;
    let p = w.plan();
    assert_eq!(p.admin, cleanup_call("kv-zone-a-0"));
    assert_eq!(p.cleanup.unwrap().retry_after_unix_ms, None);
}

#[test]
fn a_pending_cleanup_waits_for_a_healthy_ring_without_holding_up_repair() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.now = 2 * HOUR;
    let pending = CleanupProgress {
        reason: "ScaleUp of kv-zone-c-0".into(),
        node: String::new(),
        cleanup_id: 0,
        baseline_completed_unix_ms: None,
        nodes_done: Vec::new(),
        keys_dropped: 0,
        started_at: None,
        failures: 0,
        retry_after_unix_ms: None,
        message: None,
    };
    w.status.cleanup = Some(pending.clone());
    w.nodes.insert(
        "kv-zone-b-0".into(),
        NodeObservation::Unreachable("refused".into()),
    );
    let p = w.plan();
    assert!(!matches!(p.admin, Some(AdminCall::Cleanup { .. })));
    assert_eq!(p.cleanup, Some(pending));
}

/// Every reporting node lists all of `pods`, `dead` as down (or `state`).
fn ring_view(w: &mut World, pods: &[&str], dead: &str, state: NodeState) {
    let ids: Vec<String> = w.nodes.keys().cloned().collect();
    for id in ids {
        if let NodeObservation::Report(r) = w.nodes.get_mut(&id).unwrap() {
            r.members = pods
                .iter()
                .map(|p| Member {
                    node_id: (*p).into(),
                    zone: String::new(),
                    state: if *p == dead { state } else { NodeState::Normal },
                    alive: *p != dead,
                })
                .collect();
        }
    }
}

fn pod_with_uid(uid: &str, replace: bool) -> PodObservation {
    PodObservation {
        uid: uid.into(),
        phase: "Running".into(),
        started: true,
        replace_requested: replace,
        ..PodObservation::default()
    }
}

fn volume(uid: &str, lost: bool) -> PvcObservation {
    PvcObservation {
        requested: Some("10Gi".into()),
        uid: uid.into(),
        lost,
        ..PvcObservation::default()
    }
}

const PODS: [&str; 4] = ["kv-zone-a-0", "kv-zone-a-1", "kv-zone-b-0", "kv-zone-c-0"];

#[test]
fn a_dead_node_annotated_for_replacement_is_removed_then_recreated_empty() {
    let mut w = World::new(&[2, 1, 1]);
    let dead = "kv-zone-a-1";
    w.pods.insert(dead.into(), pod_with_uid("old", true));
    w.pvcs
        .insert(format!("data-{dead}"), volume("vol-old", false));

    // Alive: never removed; the cluster says why and goes on.
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(p.replace, None);
    let b = p.problem.unwrap();
    assert_eq!(b.reason, "ReplaceRefused");
    assert!(b.message.contains(dead), "{}", b.message);

    // Down for everyone: another node removes it.
    w.nodes
        .insert(dead.into(), NodeObservation::Unreachable("refused".into()));
    ring_view(&mut w, &PODS, dead, NodeState::Normal);
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::RemoveNode {
            via: "kv-zone-a-0".into(),
            node: dead.into()
        })
    );
    assert_eq!(reasons(&p), vec!["NodeReplacing"]);
    assert!(matches!(&p.activity, Activity::ReplacingNode { node, .. } if node == dead));
    assert_eq!(p.step.as_ref().unwrap().action, "Replace");
    let r = p.replace.clone().unwrap();
    assert_eq!(
        (r.phase.as_str(), r.reason.as_str(), r.coordinator.as_str()),
        ("Removing", "annotation", "kv-zone-a-0")
    );
    assert_eq!(
        (r.old_pod_uid.as_str(), r.old_volume_uid.as_str()),
        ("old", "vol-old")
    );
    assert!(p.kube.is_empty(), "nothing deleted before the removal");
    w.status.replace = p.replace;
    w.status.step = p.step;

    // Asked again (idempotent); through another node once the first is gone.
    ring_view(&mut w, &PODS, dead, NodeState::Leaving);
    assert!(
        matches!(w.plan().admin, Some(AdminCall::RemoveNode { ref via, .. }) if via == "kv-zone-a-0")
    );
    w.nodes.insert(
        "kv-zone-a-0".into(),
        NodeObservation::Unreachable("timeout".into()),
    );
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::RemoveNode {
            via: "kv-zone-b-0".into(),
            node: dead.into()
        })
    );
    w.set_state("kv-zone-a-0", NodeState::Normal);
    ring_view(&mut w, &PODS, dead, NodeState::Leaving);

    // Left everywhere: its volume and pod go.
    ring_view(&mut w, &PODS, dead, NodeState::Left);
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(
        p.kube,
        vec![
            KubeAction::DeleteVolume {
                pvc: format!("data-{dead}")
            },
            KubeAction::DeletePod { name: dead.into() }
        ]
    );
    assert!(reasons(&p).contains(&"NodeRemoved"));
    assert_eq!(p.replace.as_ref().unwrap().phase, "Recreating");
    w.status.replace = p.replace;

    // Going: nothing more to delete.
    w.pods.get_mut(dead).unwrap().deleting = true;
    w.pvcs.get_mut(&format!("data-{dead}")).unwrap().deleting = true;
    let p = w.plan();
    assert!(p.kube.is_empty(), "{:?}", p.kube);
    assert!(matches!(p.activity, Activity::ReplacingNode { .. }));

    // Back empty, joining as a new node: wait; normal and seen: done.
    w.pods.insert(dead.into(), pod_with_uid("new", false));
    w.pvcs
        .insert(format!("data-{dead}"), volume("vol-new", false));
    w.set_state(dead, NodeState::Joining);
    for id in PODS {
        if id != dead {
            w.node_mut(id).members.clear();
        }
    }
    let p = w.plan();
    assert!(p.kube.is_empty());
    assert!(matches!(p.activity, Activity::ReplacingNode { .. }));
    assert!(p.replace.is_some());
    w.set_state(dead, NodeState::Normal);
    let p = w.plan();
    assert!(reasons(&p).contains(&"NodeReplaced"), "{:?}", reasons(&p));
    assert_eq!(p.replace, None);
    assert_eq!(
        p.cleanup.unwrap().reason,
        format!("replacement of {dead}"),
        "the others clean up what the new node took"
    );
}

#[test]
fn a_lost_volume_triggers_a_replacement_and_a_never_joined_pod_skips_the_removal() {
    let mut w = World::new(&[2, 1, 1]);
    let dead = "kv-zone-b-0";
    w.pvcs.insert(format!("data-{dead}"), volume("v1", true));
    w.pods.insert(dead.into(), pod_with_uid("p1", false));
    w.nodes
        .insert(dead.into(), NodeObservation::Unreachable("refused".into()));
    ring_view(&mut w, &PODS, dead, NodeState::Normal);
    let p = w.plan();
    assert!(matches!(p.admin, Some(AdminCall::RemoveNode { ref node, .. }) if node == dead));
    assert_eq!(p.replace.unwrap().reason, "volume lost");

    // No member ever knew it: straight to re-creating it.
    let others: Vec<&str> = PODS.iter().copied().filter(|p| *p != dead).collect();
    for id in &others {
        sees_only(
            &mut w,
            id,
            &others
                .iter()
                .copied()
                .filter(|o| o != id)
                .collect::<Vec<_>>(),
        );
    }
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(
        p.kube,
        vec![
            KubeAction::DeleteVolume {
                pvc: format!("data-{dead}")
            },
            KubeAction::DeletePod { name: dead.into() }
        ]
    );
    assert_eq!(p.replace.unwrap().phase, "Recreating");
}

#[test]
fn a_decommission_victim_gone_for_good_is_replaced_then_decommissioned() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 3;
    let victim = "kv-zone-a-1";
    in_flight(&mut w, victim, "zone-a");
    w.nodes.insert(
        victim.into(),
        NodeObservation::Unreachable("refused".into()),
    );
    ring_view(&mut w, &PODS, victim, NodeState::Leaving);
    // Unreachable mid-decommission: it waits for the node.
    let p = w.plan();
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            reason: "DecommissionNodeUnreachable",
            ..
        }
    ));
    // Its volume is lost: replaced first.
    w.pods.insert(victim.into(), pod_with_uid("old", true));
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::RemoveNode {
            via: "kv-zone-a-0".into(),
            node: victim.into()
        })
    );
    assert!(p.decommission.is_some(), "the decommission stays recorded");
    // Another node's replacement waits for the decommission instead.
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 3;
    in_flight(&mut w, victim, "zone-a");
    leaving(&mut w, victim, DecommissionPhase::Streaming, 2);
    w.pods.insert("kv-zone-b-0".into(), pod_with_uid("p", true));
    w.nodes.insert(
        "kv-zone-b-0".into(),
        NodeObservation::Unreachable("refused".into()),
    );
    let p = w.plan();
    assert!(
        matches!(p.admin, Some(AdminCall::Decommission { .. })),
        "{:?}",
        p.admin
    );
    assert_eq!(p.replace, None);
}
