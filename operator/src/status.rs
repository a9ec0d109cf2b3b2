//! Builds `KVCluster.status` (conditions in the metav1.Condition shape, phase,
//! per-zone counts, ring members) and the events of a reconcile from its
//! [`Outcome`]: what was planned, what the Kubernetes writes and the Admin call
//! answered, and what was observed. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::admin::{AdminError, CleanupStarted, RepairStarted};
use crate::crd::{
    DecommissionProgress, KVClusterSpec, KVClusterStatus, MemberStatus, Phase, ZoneStatus,
};
use crate::names;
use crate::observe::{
    DecommissionPhase, DecommissionReport, NodeObservation, NodeState, Observed, RemovalPhase,
    RemovalReport,
};
use crate::planner::{Activity, Blocker, Plan, PlannedEvent, REQUEUE_IDLE};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What a reconcile did: the plan and how its actions went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    /// The node image the cluster runs (recorded in `status.image`).
    pub image: String,
    /// The Admin call's answer, if one was made.
    pub admin: Option<AdminResult>,
    /// The first Kubernetes write that failed, with the API server's message
    /// (nothing after it was attempted).
    pub apply_error: Option<String>,
}

impl Outcome {
    pub fn new(plan: Plan, image: String) -> Self {
        Self {
            plan,
            image,
            admin: None,
            apply_error: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum AdminResult {
    Decommission(Result<DecommissionReport, AdminError>),
    Repair(Result<RepairStarted, AdminError>),
    Cleanup(Result<CleanupStarted, AdminError>),
    RemoveNode(Result<RemovalReport, AdminError>),
}

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

/// The plan's progress records and events, with the Admin answer folded in.
struct Resolved {
    decommission: Option<DecommissionProgress>,
    repair: Option<crate::crd::RepairProgress>,
    cleanup: Option<crate::crd::CleanupProgress>,
    replace: Option<crate::crd::ReplaceProgress>,
    blocker: Option<Blocker>,
    events: Vec<PlannedEvent>,
}

fn resolve(prev: &KVClusterStatus, o: &Outcome) -> Resolved {
    let plan = &o.plan;
    let mut r = Resolved {
        decommission: plan.decommission.clone(),
        repair: plan.repair.clone(),
        cleanup: plan.cleanup.clone(),
        replace: plan.replace.clone(),
        blocker: plan.blocker.clone(),
        events: plan.events.clone(),
    };
    resolve_maintenance(o, &mut r);
    match (&o.admin, r.decommission.as_mut(), r.repair.as_mut()) {
        (Some(AdminResult::Decommission(res)), Some(progress), _) => match res {
            Ok(report) => {
                let was = progress.phase.clone();
                apply_report(progress, report);
                if report.phase == DecommissionPhase::Failed
                    && was != DecommissionPhase::Failed.as_str()
                {
                    r.events.push(
                        PlannedEvent::warning(
                            "DecommissionFailed",
                            format!(
                                "decommission of {} failed ({}); retrying",
                                progress.node, report.error
                            ),
                        )
                        .pod(&progress.node),
                    );
                } else if report.phase == DecommissionPhase::Streaming && progress.ranges_total > 0
                {
                    progress.message = Some(format!(
                        "{}/{} ranges streamed, {} keys",
                        progress.ranges_done, progress.ranges_total, progress.keys_streamed
                    ));
                }
            }
            Err(AdminError::FailedPrecondition { message, .. }) => {
                progress.message = Some(message.clone());
                let msg = format!("node {} refused to decommission: {message}", progress.node);
                r.events.push(
                    PlannedEvent::warning("DecommissionRefused", msg.clone()).pod(&progress.node),
                );
                r.blocker = Some(Blocker {
                    reason: "DecommissionRefused",
                    message: msg,
                });
            }
            Err(e) => progress.message = Some(e.to_string()),
        },
        (Some(AdminResult::Repair(res)), _, Some(progress)) => match res {
            Ok(started) => {
                progress.repair_id = i64::try_from(started.repair_id).unwrap_or(i64::MAX)
            }
            Err(e) => r.events.push(
                PlannedEvent::warning(
                    "RepairRequestFailed",
                    format!("could not start anti-entropy on {}: {e}", progress.node),
                )
                .pod(&progress.node),
            ),
        },
        _ => {}
    }
    if let Some(err) = &o.apply_error
        && !prev
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == "ApplyFailed" && c.message == *err)
    {
        r.events
            .push(PlannedEvent::warning("ApplyFailed", err.clone()));
    }
    r
}

/// Folds a Cleanup or RemoveNode answer into the progress records.
fn resolve_maintenance(o: &Outcome, r: &mut Resolved) {
    match (&o.admin, r.cleanup.as_mut(), r.replace.as_mut()) {
        (Some(AdminResult::Cleanup(res)), Some(progress), _) => match res {
            Ok(started) => {
                progress.cleanup_id = i64::try_from(started.cleanup_id).unwrap_or(i64::MAX);
            }
            // Refused (a node joined or left meanwhile): asked again later.
            Err(e) => progress.message = Some(e.to_string()),
        },
        (Some(AdminResult::RemoveNode(res)), _, Some(progress)) => match res {
            Ok(report) => {
                progress.ranges_done = i64::from(report.ranges_done);
                progress.ranges_total = i64::from(report.ranges_total);
                progress.keys_streamed = i64::try_from(report.keys_streamed).unwrap_or(i64::MAX);
                progress.message = match report.phase {
                    RemovalPhase::Failed => {
                        Some(format!("removal failed ({}); resuming it", report.error))
                    }
                    p => Some(format!(
                        "removal {}: {}/{} ranges, {} keys streamed",
                        p.as_str(),
                        report.ranges_done,
                        report.ranges_total,
                        report.keys_streamed
                    )),
                };
                if report.phase == RemovalPhase::Failed {
                    r.events.push(
                        PlannedEvent::warning(
                            "RemoveNodeFailed",
                            format!(
                                "removal of {} failed ({}); resuming it",
                                progress.node, report.error
                            ),
                        )
                        .pod(&progress.node),
                    );
                }
            }
            Err(AdminError::FailedPrecondition { message, .. }) => {
                progress.message = Some(message.clone());
                r.blocker = Some(Blocker {
                    reason: "RemoveNodeRefused",
                    message: format!("removing {} was refused: {message}", progress.node),
                });
            }
            Err(e) => progress.message = Some(e.to_string()),
        },
        _ => {}
    }
}

/// How long to wait before the next reconcile, given how the actions went.
pub fn requeue(o: &Outcome) -> std::time::Duration {
    let refused = matches!(
        &o.admin,
        Some(
            AdminResult::Decommission(Err(AdminError::FailedPrecondition { .. }))
                | AdminResult::RemoveNode(Err(AdminError::FailedPrecondition { .. }))
        )
    );
    if refused {
        REQUEUE_IDLE
    } else {
        o.plan.requeue
    }
}

fn apply_report(progress: &mut DecommissionProgress, r: &DecommissionReport) {
    progress.phase = r.phase.as_str().into();
    progress.ranges_done = i64::from(r.ranges_done);
    progress.ranges_total = i64::from(r.ranges_total);
    progress.keys_streamed = i64::try_from(r.keys_streamed).unwrap_or(i64::MAX);
    progress.message = (!r.error.is_empty()).then(|| r.error.clone());
}

/// The new status and the events to publish.
pub fn report(
    spec: &KVClusterSpec,
    prev: &KVClusterStatus,
    obs: &Observed,
    o: &Outcome,
) -> (KVClusterStatus, Vec<PlannedEvent>) {
    let plan = &o.plan;
    let resolved = resolve(prev, o);
    let now = obs.now_unix_ms;
    let targets = spec.zone_targets();
    let mut zones: Vec<ZoneStatus> = spec
        .zones
        .iter()
        .enumerate()
        .map(|(z, zs)| {
            let live = obs.zones.get(z).and_then(Option::as_ref);
            let prev_zone = prev.zones.iter().find(|p| p.name == zs.name);
            let last_repair_time = if plan.repaired_zone.as_deref() == Some(zs.name.as_str()) {
                Some(crate::time::from_unix_ms(now))
            } else {
                prev_zone.and_then(|p| p.last_repair_time.clone())
            };
            ZoneStatus {
                name: zs.name.clone(),
                desired_replicas: targets.get(z).copied().unwrap_or(0),
                // While its StatefulSet is being re-created the zone keeps its
                // last known size (the pods run on).
                replicas: live.map_or_else(
                    || prev_zone.map_or(0, |p| p.replicas),
                    |s| s.status_replicas,
                ),
                ready_replicas: live.map_or_else(
                    || prev_zone.map_or(0, |p| p.ready_replicas),
                    |s| s.ready_replicas,
                ),
                last_repair_time,
            }
        })
        .collect();
    // A zone missing from the spec (removed behind the CEL rule's back) stays in
    // status so the removal keeps being refused instead of being forgotten.
    zones.extend(
        prev.zones
            .iter()
            .filter(|p| !spec.zones.iter().any(|z| z.name == p.name))
            .cloned(),
    );
    let replicas: i32 = zones.iter().map(|z| z.replicas).sum();
    let ready: i32 = zones.iter().map(|z| z.ready_replicas).sum();
    let expected: i32 = obs.zones.iter().flatten().map(|s| s.replicas).sum();

    let members = ring_members(&obs.nodes, &prev.members);
    let progressing = !matches!(
        plan.activity,
        Activity::Stable | Activity::Repairing { .. } | Activity::Invalid(_)
    );
    // The node being replaced is down by definition.
    let replacing = resolved.replace.as_ref().map(|r| r.node.as_str());
    let degraded = degraded(
        o,
        &resolved,
        ready,
        expected,
        progressing,
        &members,
        replacing,
    );
    let available = ready >= spec.replication.n;
    let (prog_status, prog_reason, prog_msg) =
        progressing_condition(&plan.activity, resolved.blocker.as_ref());
    let phase = match &plan.activity {
        Activity::Invalid(_) => Phase::Invalid,
        Activity::Creating => Phase::Creating,
        Activity::Waiting { during, .. } => *during,
        Activity::ScalingUp { .. }
        | Activity::Decommissioning { .. }
        | Activity::RemovingNode { .. }
        | Activity::ReplacingNode { .. } => Phase::Scaling,
        Activity::RollingOut { .. } => Phase::Upgrading,
        Activity::ExpandingVolumes { .. } => Phase::Expanding,
        _ if degraded.is_some() => Phase::Degraded,
        Activity::Repairing { .. } => Phase::Repairing,
        // Maintenance after a scale-up is over (a Scaling phase here would
        // make the next reconcile report the scale-up complete again).
        Activity::CleaningUp { .. } => Phase::Running,
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
    let reason = if deg_status {
        deg_reason.to_string()
    } else if prog_reason != "Reconciled" {
        prog_reason.to_string()
    } else {
        String::new()
    };
    let generation = obs.generation;
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
            generation,
            now,
        ),
        condition(
            PROGRESSING,
            prog_status,
            prog_reason,
            &prog_msg,
            generation,
            now,
        ),
        condition(DEGRADED, deg_status, deg_reason, &deg_msg, generation, now),
    ];
    let created = plan.scales.is_some();
    let last_repair_time = zones
        .iter()
        .take(spec.zones.len())
        .map(|z| z.last_repair_time.clone())
        .collect::<Option<Vec<_>>>()
        .and_then(|t| t.into_iter().min_by_key(crate::time::to_unix_ms));
    let zone_summary = zones
        .iter()
        .take(spec.zones.len())
        .map(|z| format!("{}={}/{}", z.name, z.ready_replicas, z.desired_replicas))
        .collect::<Vec<_>>()
        .join(" ");
    let status = KVClusterStatus {
        observed_generation: Some(generation),
        phase,
        replicas,
        ready_replicas: ready,
        selector: names::selector_string(&obs.name),
        replication: spec.replication_summary(),
        vnodes: prev.vnodes.or(created.then_some(spec.vnodes)),
        replication_factor: prev
            .replication_factor
            .or(created.then_some(spec.replication.n)),
        image: if created {
            Some(o.image.clone())
        } else {
            prev.image.clone()
        },
        reason,
        zone_summary,
        last_repair_time,
        zones,
        members,
        decommission: resolved.decommission,
        repair: resolved.repair,
        cleanup: resolved.cleanup,
        replace: resolved.replace,
        step: plan.step.clone(),
        conditions: merge_conditions(&prev.conditions, conditions),
        // Written by the backup step (see planner::backup), carried here.
        backup: prev.backup.clone(),
        restore: prev.restore.clone(),
    };
    (status, resolved.events)
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
    o: &Outcome,
    resolved: &Resolved,
    ready: i32,
    expected: i32,
    progressing: bool,
    members: &[MemberStatus],
    replacing: Option<&str>,
) -> Option<(&'static str, String)> {
    if let Activity::Invalid(msg) = &o.plan.activity {
        return Some(("InvalidSpec", msg.clone()));
    }
    if let Some(err) = &o.apply_error {
        return Some(("ApplyFailed", err.clone()));
    }
    if let Some(p) = &o.plan.problem {
        return Some((p.reason, p.message.clone()));
    }
    if let Some(d) = &resolved.decommission
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
        .filter(|id| Some(*id) != replacing)
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
        && !matches!(activity, Activity::Invalid(_))
    {
        return (false, b.reason, b.message.clone());
    }
    match activity {
        Activity::Invalid(msg) => (false, "InvalidSpec", msg.clone()),
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
        Activity::CleaningUp { message, .. } => (true, "CleaningUp", message.clone()),
        Activity::ReplacingNode { message, .. } => (true, "ReplacingNode", message.clone()),
        Activity::ExpandingVolumes { message } => (true, "ExpandingVolumes", message.clone()),
        Activity::Waiting {
            reason, message, ..
        } => (true, reason, message.clone()),
        Activity::Repairing { .. } | Activity::Stable => {
            (false, "Reconciled", "the cluster matches the spec".into())
        }
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
