//! Builds `KVCluster.status` (conditions in the metav1.Condition shape, phase,
//! per-zone counts, ring members) from the plan and what was observed. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::admin::AdminError;
use crate::crd::{
    DecommissionProgress, KVClusterSpec, KVClusterStatus, MemberStatus, Phase, ZoneStatus,
};
use crate::names;
use crate::planner::{Activity, Blocker, Plan, PlannedEvent, StsObservation};
use crate::ring::{DecommissionPhase, DecommissionReport, NodeObservation, NodeState};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// A condition stamped `now_ms`; [`merge_conditions`] keeps the old transition
/// time when the status did not change.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now_ms: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: crate::time::from_unix_ms(now_ms),
    }
}

fn merge_conditions(prev: &[Condition], next: Vec<Condition>) -> Vec<Condition> {
    next.into_iter()
        .map(|mut c| {
            if let Some(old) = prev.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Inputs of [`build_status`].
pub struct StatusInput<'a> {
    pub name: &'a str,
    pub spec: &'a KVClusterSpec,
    pub prev: &'a KVClusterStatus,
    pub generation: i64,
    pub now_ms: i64,
    pub zones: &'a [Option<StsObservation>],
    pub nodes: &'a BTreeMap<String, NodeObservation>,
    pub plan: &'a Plan,
}

pub fn build_status(i: &StatusInput) -> KVClusterStatus {
    let spec = i.spec;
    let plan = i.plan;
    let targets = spec.zone_targets();
    let zones: Vec<ZoneStatus> = spec
        .zones
        .iter()
        .enumerate()
        .map(|(z, zs)| {
            let obs = i.zones.get(z).and_then(Option::as_ref);
            let prev = i.prev.zones.iter().find(|p| p.name == zs.name);
            let last_repair_time = if plan.repaired_zone.as_deref() == Some(zs.name.as_str()) {
                Some(crate::time::from_unix_ms(i.now_ms))
            } else {
                prev.and_then(|p| p.last_repair_time.clone())
            };
            ZoneStatus {
                name: zs.name.clone(),
                desired_replicas: targets.get(z).copied().unwrap_or(0),
                replicas: obs.map_or(0, |s| s.status_replicas),
                ready_replicas: obs.map_or(0, |s| s.ready_replicas),
                last_repair_time,
            }
        })
        .collect();
    // A zone missing from the spec (removed behind the CEL rule's back) stays in
    // status so the removal keeps being refused instead of being forgotten.
    let mut zones = zones;
    zones.extend(
        i.prev
            .zones
            .iter()
            .filter(|p| !spec.zones.iter().any(|z| z.name == p.name))
            .cloned(),
    );
    let replicas: i32 = zones.iter().map(|z| z.replicas).sum();
    let ready: i32 = zones.iter().map(|z| z.ready_replicas).sum();
    let expected: i32 = i.zones.iter().flatten().map(|s| s.replicas).sum();

    let members = ring_members(i.nodes, &i.prev.members);
    let progressing = !matches!(
        plan.activity,
        Activity::Stable | Activity::Repairing { .. } | Activity::Invalid(_)
    );

    let degraded = degraded(i, ready, expected, progressing, &members);
    let available = ready >= spec.replication.n;
    let (prog_status, prog_reason, prog_msg) =
        progressing_condition(&plan.activity, plan.blocker.as_ref());
    let phase = match &plan.activity {
        Activity::Invalid(_) => Phase::Invalid,
        Activity::Terminating { .. } => Phase::Terminating,
        Activity::Creating => Phase::Creating,
        Activity::Waiting { during, .. } => *during,
        Activity::ScalingUp { .. }
        | Activity::Decommissioning { .. }
        | Activity::RemovingNode { .. } => Phase::Scaling,
        Activity::RollingOut { .. } => Phase::Upgrading,
        _ if degraded.is_some() => Phase::Degraded,
        Activity::Repairing { .. } => Phase::Repairing,
        Activity::Stable => Phase::Running,
    };
    let (deg_status, deg_reason, deg_msg) = match &degraded {
        Some((reason, msg)) => (true, *reason, msg.clone()),
        None => (
            false,
            "AsExpected",
            format!("{ready}/{expected} nodes ready"),
        ),
    };
    let conditions = vec![
        condition(
            AVAILABLE,
            available,
            if available {
                "QuorumReachable"
            } else {
                "TooFewNodesReady"
            },
            &format!(
                "{ready} nodes ready, replication factor {}",
                spec.replication.n
            ),
            i.generation,
            i.now_ms,
        ),
        condition(
            PROGRESSING,
            prog_status,
            prog_reason,
            &prog_msg,
            i.generation,
            i.now_ms,
        ),
        condition(
            DEGRADED,
            deg_status,
            deg_reason,
            &deg_msg,
            i.generation,
            i.now_ms,
        ),
    ];
    let created = plan.scales.is_some() && !matches!(plan.activity, Activity::Terminating { .. });
    KVClusterStatus {
        observed_generation: Some(i.generation),
        phase,
        replicas,
        ready_replicas: ready,
        selector: names::selector_string(i.name),
        replication: spec.replication_summary(),
        vnodes: i.prev.vnodes.or(created.then_some(spec.vnodes)),
        zones,
        members,
        decommission: plan.decommission.clone(),
        repair: plan.repair.clone(),
        conditions: merge_conditions(&i.prev.conditions, conditions),
    }
}

/// Ring members: each node's own report of itself wins over others' views.
/// When no node answered, the last known list is kept (marked as such by the conditions).
fn ring_members(
    nodes: &BTreeMap<String, NodeObservation>,
    prev: &[MemberStatus],
) -> Vec<MemberStatus> {
    let reports: Vec<_> = nodes.values().filter_map(NodeObservation::report).collect();
    if reports.is_empty() {
        return prev.to_vec();
    }
    let mut out: BTreeMap<String, MemberStatus> = BTreeMap::new();
    for r in &reports {
        for m in &r.members {
            out.entry(m.node_id.clone())
                .or_insert_with(|| MemberStatus {
                    node_id: m.node_id.clone(),
                    zone: m.zone.clone(),
                    state: m.state.as_str().into(),
                    alive: m.alive,
                });
        }
    }
    for r in &reports {
        let e = out
            .entry(r.node_id.clone())
            .or_insert_with(|| MemberStatus {
                node_id: r.node_id.clone(),
                zone: String::new(),
                state: String::new(),
                alive: true,
            });
        e.state = r.state.as_str().into();
        e.alive = true;
    }
    out.into_values().collect()
}

fn degraded(
    i: &StatusInput,
    ready: i32,
    expected: i32,
    progressing: bool,
    members: &[MemberStatus],
) -> Option<(&'static str, String)> {
    if let Activity::Invalid(msg) = &i.plan.activity {
        return Some(("InvalidSpec", msg.clone()));
    }
    if let Some(d) = &i.plan.decommission
        && d.phase == DecommissionPhase::Failed.as_str()
    {
        return Some((
            "DecommissionFailed",
            format!(
                "decommission of {} failed: {}",
                d.node,
                d.message.clone().unwrap_or_default()
            ),
        ));
    }
    // The one pod the operator is adding or restarting is expected to be down.
    let allowed = i32::from(progressing);
    if expected - ready > allowed {
        return Some(("NodesNotReady", format!("{ready}/{expected} nodes ready")));
    }
    let down: Vec<_> = members
        .iter()
        .filter(|m| !m.alive && m.state != NodeState::Left.as_str())
        .map(|m| m.node_id.as_str())
        .collect();
    if down.len() > usize::try_from(allowed).unwrap_or(0) {
        return Some((
            "MembersDown",
            format!("ring members down: {}", down.join(", ")),
        ));
    }
    None
}

fn progressing_condition(
    activity: &Activity,
    blocker: Option<&Blocker>,
) -> (bool, &'static str, String) {
    if let Some(b) = blocker
        && !matches!(
            activity,
            Activity::Invalid(_) | Activity::Terminating { .. }
        )
    {
        return (false, b.reason, b.message.clone());
    }
    match activity {
        Activity::Invalid(msg) => (false, "InvalidSpec", msg.clone()),
        Activity::Terminating { remaining } => (
            true,
            "Terminating",
            format!("{remaining} nodes still running"),
        ),
        Activity::Creating => (true, "Creating", "creating the StatefulSets".into()),
        Activity::ScalingUp { node } => (true, "ScalingUp", format!("{node} is joining the ring")),
        Activity::Decommissioning { node } => (
            true,
            "Decommissioning",
            format!("{node} is streaming its ranges away"),
        ),
        Activity::RemovingNode { node } => (
            true,
            "RemovingNode",
            format!("{node} left the ring; removing its pod"),
        ),
        Activity::RollingOut { message, .. } => (true, "RollingOut", message.clone()),
        Activity::Waiting {
            reason, message, ..
        } => (true, reason, message.clone()),
        Activity::Repairing { .. } | Activity::Stable => {
            (false, "Reconciled", "the cluster matches the spec".into())
        }
    }
}

/// Folds the answer to a `Decommission` call into the plan: progress in status,
/// events for failures, and a blocker when the node refuses.
pub fn record_decommission(plan: &mut Plan, result: Result<DecommissionReport, AdminError>) {
    let Some(progress) = plan.decommission.as_mut() else {
        return;
    };
    match result {
        Ok(r) => {
            let was = progress.phase.clone();
            apply_report(progress, &r);
            if r.phase == DecommissionPhase::Failed && was != DecommissionPhase::Failed.as_str() {
                plan.events.push(
                    PlannedEvent::warning(
                        "DecommissionFailed",
                        format!(
                            "decommission of {} failed ({}); retrying",
                            progress.node, r.error
                        ),
                    )
                    .pod(&progress.node),
                );
            } else if r.phase == DecommissionPhase::Streaming && progress.ranges_total > 0 {
                progress.message = Some(format!(
                    "{}/{} ranges streamed, {} keys",
                    progress.ranges_done, progress.ranges_total, progress.keys_streamed
                ));
            }
        }
        Err(AdminError::FailedPrecondition { message, .. }) => {
            progress.message = Some(message.clone());
            let msg = format!("node {} refused to decommission: {message}", progress.node);
            plan.events.push(
                PlannedEvent::warning("DecommissionRefused", msg.clone()).pod(&progress.node),
            );
            plan.blocker = Some(Blocker {
                reason: "DecommissionRefused",
                message: msg,
            });
            plan.requeue = crate::planner::REQUEUE_IDLE;
        }
        Err(e) => {
            progress.message = Some(e.to_string());
        }
    }
}

fn apply_report(progress: &mut DecommissionProgress, r: &DecommissionReport) {
    progress.phase = r.phase.as_str().into();
    progress.ranges_done = i64::from(r.ranges_done);
    progress.ranges_total = i64::from(r.ranges_total);
    progress.keys_streamed = i64::try_from(r.keys_streamed).unwrap_or(i64::MAX);
    progress.message = (!r.error.is_empty()).then(|| r.error.clone());
}

/// Folds the answer to a `Repair` call into the plan.
pub fn record_repair(plan: &mut Plan, result: Result<crate::admin::RepairStarted, AdminError>) {
    let Some(progress) = plan.repair.as_mut() else {
        return;
    };
    match result {
        Ok(r) => progress.repair_id = i64::try_from(r.repair_id).unwrap_or(i64::MAX),
        Err(e) => plan.events.push(
            PlannedEvent::warning(
                "RepairRequestFailed",
                format!("could not start anti-entropy on {}: {e}", progress.node),
            )
            .pod(&progress.node),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::tests::World;
    use crate::planner::{AdminCall, plan};
    use crate::ring::Member;

    fn status_of(w: &World, p: &Plan) -> KVClusterStatus {
        let input = StatusInput {
            name: "kv",
            spec: &w.spec,
            prev: &w.status,
            generation: 7,
            now_ms: w.now,
            zones: &w.zones,
            nodes: &w.nodes,
            plan: p,
        };
        build_status(&input)
    }

    fn cond<'a>(s: &'a KVClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_healthy_cluster_is_available_not_progressing_not_degraded() {
        let w = World::new(&[2, 2, 2]);
        let p = plan(&w.input_for_tests());
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
        let s1 = status_of(&w, &plan(&w.input_for_tests()));
        w.status = s1.clone();
        w.now += 60_000;
        let s2 = status_of(&w, &plan(&w.input_for_tests()));
        assert_eq!(
            cond(&s1, AVAILABLE).last_transition_time,
            cond(&s2, AVAILABLE).last_transition_time
        );
        // Flip availability: the time moves.
        w.status = s2.clone();
        for z in 0..3 {
            w.zones[z].as_mut().unwrap().ready_replicas = 0;
        }
        let s3 = status_of(&w, &plan(&w.input_for_tests()));
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
        let mut p = plan(&w.input_for_tests());
        assert!(matches!(p.admin, Some(AdminCall::Decommission { .. })));
        record_decommission(
            &mut p,
            Ok(DecommissionReport {
                phase: DecommissionPhase::Streaming,
                ranges_total: 8,
                ranges_done: 2,
                keys_streamed: 40,
                error: String::new(),
            }),
        );
        let s = status_of(&w, &p);
        assert_eq!(s.phase, Phase::Scaling);
        assert_eq!(cond(&s, PROGRESSING).reason, "Decommissioning");
        let d = s.decommission.unwrap();
        assert_eq!((d.ranges_done, d.ranges_total, d.keys_streamed), (2, 8, 40));
        assert_eq!(d.message.as_deref(), Some("2/8 ranges streamed, 40 keys"));

        let mut p = plan(&w.input_for_tests());
        record_decommission(
            &mut p,
            Err(AdminError::FailedPrecondition {
                node: "kv-zone-c-1".into(),
                message: "would leave 2 < N=3 nodes".into(),
            }),
        );
        assert_eq!(p.events.last().unwrap().reason, "DecommissionRefused");
        assert!(p.events.last().unwrap().warning);
        let s = status_of(&w, &p);
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, PROGRESSING).reason, "DecommissionRefused");
        assert!(cond(&s, PROGRESSING).message.contains("N=3"));
    }

    #[test]
    fn a_failed_decommission_degrades_and_warns_once() {
        let mut w = World::new(&[2, 2, 2]);
        w.spec.replicas = 3;
        let mut p = plan(&w.input_for_tests());
        let failed = DecommissionReport {
            phase: DecommissionPhase::Failed,
            ranges_total: 8,
            ranges_done: 3,
            keys_streamed: 1,
            error: "peer unreachable".into(),
        };
        record_decommission(&mut p, Ok(failed.clone()));
        assert_eq!(
            p.events
                .iter()
                .filter(|e| e.reason == "DecommissionFailed")
                .count(),
            1
        );
        let s = status_of(&w, &p);
        assert_eq!(cond(&s, DEGRADED).reason, "DecommissionFailed");
        assert!(cond(&s, DEGRADED).message.contains("peer unreachable"));
        // Still failing on the next retry: no new warning.
        w.status = s;
        let mut p = plan(&w.input_for_tests());
        record_decommission(&mut p, Ok(failed));
        assert!(p.events.iter().all(|e| e.reason != "DecommissionFailed"));
    }

    #[test]
    fn below_n_shows_scale_down_refused() {
        let mut w = World::new(&[1, 1, 1]);
        w.spec.replicas = 2;
        let s = status_of(&w, &plan(&w.input_for_tests()));
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
        let s = status_of(&w, &plan(&w.input_for_tests()));
        assert_eq!(s.phase, Phase::Invalid);
        assert_eq!(cond(&s, DEGRADED).reason, "InvalidSpec");
        assert_eq!(cond(&s, PROGRESSING).reason, "InvalidSpec");
        assert_eq!(s.vnodes, None);
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
        let s = status_of(&w, &plan(&w.input_for_tests()));
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
        w.status = status_of(&w, &plan(&w.input_for_tests()));
        w.spec.zones.pop();
        w.zones.pop();
        w.hashes.pop();
        let p = plan(&w.input_for_tests());
        assert!(matches!(&p.activity, Activity::Invalid(m) if m.contains("zone-c")));
        let s = status_of(&w, &p);
        assert!(s.zones.iter().any(|z| z.name == "zone-c"));
        w.status = s;
        assert!(
            matches!(plan(&w.input_for_tests()).activity, Activity::Invalid(_)),
            "still refused next time"
        );
    }

    #[test]
    fn repair_completion_stamps_the_zone() {
        let mut w = World::new(&[1, 1, 1]);
        let mut p = plan(&w.input_for_tests());
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
        let mut p = plan(&w.input_for_tests());
        assert!(matches!(p.admin, Some(AdminCall::Repair { .. })));
        record_repair(
            &mut p,
            Ok(crate::admin::RepairStarted {
                started: false,
                repair_id: 42,
            }),
        );
        assert_eq!(p.repair.as_ref().unwrap().repair_id, 42);
        record_repair(
            &mut p,
            Err(AdminError::Timeout {
                node: "x".into(),
                timeout: std::time::Duration::from_secs(1),
            }),
        );
        assert_eq!(p.events.last().unwrap().reason, "RepairRequestFailed");
    }
}
