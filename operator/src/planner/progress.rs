//! Steps and their progress deadlines.
//!
//! The step the operator waits on (a node joining, a decommission, a rollout,
//! a pod restart) is recorded in `status.step` with its start time. A step that
//! is still not done after `spec.progressDeadline` makes the cluster `Degraded`
//! with the step's reason (`ScaleUpStuck`, `DecommissionStuck`, `ReplaceStuck`,
//! `RolloutStuck`)
//! and what it waits on, and one warning event says so. Nothing is abandoned:
//! the deadline tells a human to look (and the README's escape hatches say what
//! to do), it does not guess.

use super::{Activity, Blocker, Plan, PlannedEvent};
use crate::crd::{KVClusterSpec, KVClusterStatus};
use crate::observe::Observed;

/// Whether `prev` has condition `type_` with `reason` (and `message`, if given).
pub(super) fn condition_is(
    prev: &KVClusterStatus,
    type_: &str,
    reason: &str,
    message: Option<&str>,
) -> bool {
    prev.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason && message.is_none_or(|m| c.message == m))
}

fn stuck_reason(action: &str) -> &'static str {
    match action {
        "ScaleUp" => "ScaleUpStuck",
        "Decommission" => "DecommissionStuck",
        "Replace" => "ReplaceStuck",
        _ => "RolloutStuck",
    }
}

/// Clears the step once nothing is in flight, and flags a step past its deadline.
pub(super) fn track(spec: &KVClusterSpec, prev: &KVClusterStatus, obs: &Observed, p: &mut Plan) {
    let waiting_on = match &p.activity {
        Activity::Stable
        | Activity::Repairing { .. }
        | Activity::CleaningUp { .. }
        | Activity::Invalid(_) => {
            p.step = None;
            return;
        }
        Activity::Waiting { message, .. }
        | Activity::RollingOut { message, .. }
        | Activity::ExpandingVolumes { message }
        | Activity::ReplacingNode { message, .. } => message.clone(),
        Activity::Creating => return,
        Activity::ScalingUp { node }
        | Activity::Decommissioning { node }
        | Activity::RemovingNode { node } => format!("{node} in progress"),
    };
    let Some(step) = &p.step else {
        return;
    };
    let Ok(deadline) = spec.progress_deadline() else {
        return;
    };
    let age_ms = obs.now_unix_ms - crate::time::to_unix_ms(&step.started_at);
    if age_ms <= i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX) {
        return;
    }
    let reason = stuck_reason(&step.action);
    let message = format!(
        "{} of {} has not finished after {} (progressDeadline {}): {waiting_on}",
        step.action,
        step.node,
        humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from(age_ms / 1000).unwrap_or(0)
        )),
        spec.progress_deadline,
    );
    if !condition_is(prev, "Degraded", reason, None) {
        p.events.push(PlannedEvent::warning(
            "ProgressDeadlineExceeded",
            message.clone(),
        ));
    }
    if p.problem.is_none() {
        p.problem = Some(Blocker { reason, message });
    }
}
