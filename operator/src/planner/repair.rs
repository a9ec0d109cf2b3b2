//! Scheduled anti-entropy: every `repair.interval`, zone by zone (the most
//! overdue first), one node at a time. A node is done once its last completed
//! repair is newer than when it was asked; a run that did not complete every
//! range is retried with back-off (30 s, 1 m, 2 m, ... at most 10 m).

use std::time::Duration;

use super::{
    Activity, AdminCall, Plan, PlannedEvent, Planner, REQUEUE_BUSY, REQUEUE_IDLE, REQUEUE_SOON,
};
use crate::crd::RepairProgress;
use crate::names;
use crate::observe::NodeObservation;

impl Planner<'_> {
    pub(super) fn repair(&mut self) -> Plan {
        let Ok(Some(interval)) = self.spec.repair_interval() else {
            let mut p = self.finish(Activity::Stable, REQUEUE_IDLE);
            p.repair = None;
            return p;
        };
        let now = self.now();
        if let Some(progress) = self.prev.repair.clone() {
            return self.continue_repair(progress);
        }
        // The most overdue zone, counting from creation for never-repaired zones.
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let due = (0..self.zones.len())
            .filter(|&z| self.current(z) > 0)
            .map(|z| {
                let last = self
                    .prev
                    .zones
                    .iter()
                    .find(|s| s.name == self.zone_name(z))
                    .and_then(|s| s.last_repair_time.as_ref())
                    .map_or(self.obs.created_unix_ms, crate::time::to_unix_ms);
                (last.saturating_add(interval_ms), z)
            })
            .min();
        let Some((due_at, z)) = due else {
            return self.finish(Activity::Stable, REQUEUE_IDLE);
        };
        if due_at > now {
            let wait = Duration::from_millis(u64::try_from(due_at - now).unwrap_or(0));
            return self.finish(Activity::Stable, wait.min(REQUEUE_IDLE));
        }
        if self.unhealthy().is_some() {
            // Repair streams between replicas: wait for a healthy ring.
            return self.finish(Activity::Stable, REQUEUE_BUSY);
        }
        let zone = self.zone_name(z).to_string();
        let node = self.pod(z, 0);
        self.events.push(
            PlannedEvent::normal(
                "RepairStarted",
                format!("anti-entropy for zone {zone}, one node at a time, starting with {node}"),
            )
            .statefulset(&names::statefulset(self.name(), &zone)),
        );
        let mut progress = RepairProgress {
            zone: zone.clone(),
            node: node.clone(),
            repair_id: 0,
            node_started_unix_ms: now,
            baseline_completed_unix_ms: None,
            nodes_done: Vec::new(),
            started_at: Some(crate::time::from_unix_ms(now)),
            failures: 0,
            retry_after_unix_ms: None,
            message: None,
        };
        let call = self.ask_repair(&mut progress);
        let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
        p.admin = call;
        p.repair = Some(progress);
        p
    }

    /// Asks `progress.node` to repair when it is reachable and idle, recording its
    /// last completion time first: the node is done once that time advances, which
    /// needs no clock agreement between operator and node and ignores failed runs.
    fn ask_repair(&self, progress: &mut RepairProgress) -> Option<AdminCall> {
        let r = self.obs.nodes.get(&progress.node)?.report()?;
        if r.repair.running {
            return None;
        }
        let last = i64::try_from(r.repair.last_completed_unix_ms).unwrap_or(i64::MAX);
        progress.baseline_completed_unix_ms.get_or_insert(last);
        Some(AdminCall::Repair {
            node: progress.node.clone(),
            zone: progress.zone.clone(),
        })
    }

    fn continue_repair(&mut self, mut progress: RepairProgress) -> Plan {
        let Some(z) = self.spec.zones.iter().position(|s| s.name == progress.zone) else {
            let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
            p.repair = None;
            return p;
        };
        let zone = progress.zone.clone();
        let zone_pods: Vec<String> = (0..self.current(z)).map(|o| self.pod(z, o)).collect();
        let node_gone = !zone_pods.contains(&progress.node);
        let report = self
            .obs
            .nodes
            .get(&progress.node)
            .and_then(NodeObservation::report);
        let node_done = node_gone
            || match (report, progress.baseline_completed_unix_ms) {
                (Some(r), Some(baseline)) => {
                    !r.repair.running
                        && i64::try_from(r.repair.last_completed_unix_ms).unwrap_or(i64::MAX)
                            > baseline
                }
                _ => false,
            };
        if !node_done {
            let node = progress.node.clone();
            let now = self.now();
            // The run we asked for ended without completing every range (a
            // replica was down, say): wait before the next attempt instead of
            // re-running a full repair on every reconcile.
            if let Some(r) = report
                && !r.repair.running
                && progress.repair_id != 0
                && i64::try_from(r.repair.repair_id).ok() == Some(progress.repair_id)
                && !r.repair.last_error.is_empty()
            {
                progress.failures += 1;
                progress.repair_id = 0;
                let backoff = repair_backoff(progress.failures);
                progress.retry_after_unix_ms =
                    Some(now.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(0)));
                progress.message = Some(r.repair.last_error.clone());
                self.events.push(
                    PlannedEvent::warning(
                        "RepairFailed",
                        format!(
                            "anti-entropy on {node} did not complete ({}); retrying in {}s",
                            r.repair.last_error,
                            backoff.as_secs()
                        ),
                    )
                    .pod(&node),
                );
                let mut p = self.finish(Activity::Repairing { zone, node }, backoff);
                p.repair = Some(progress);
                return p;
            }
            if let Some(t) = progress.retry_after_unix_ms
                && now < t
            {
                let wait = Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                let mut p = self.finish(Activity::Repairing { zone, node }, wait);
                p.repair = Some(progress);
                return p;
            }
            // Not asked yet, or idle without having completed since we asked (the
            // request was lost, the node restarted, the backoff is over): ask (again).
            let call = self.ask_repair(&mut progress);
            if call.is_some() {
                progress.retry_after_unix_ms = None;
            }
            let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
            p.admin = call;
            p.repair = Some(progress);
            return p;
        }
        if !node_gone {
            progress.nodes_done.push(progress.node.clone());
        }
        let next = zone_pods
            .iter()
            .find(|p| !progress.nodes_done.contains(p))
            .cloned();
        match next {
            Some(node) => {
                self.events.push(
                    PlannedEvent::normal(
                        "RepairingNode",
                        format!("{} finished anti-entropy; starting {node}", progress.node),
                    )
                    .pod(&node),
                );
                progress.node = node.clone();
                progress.repair_id = 0;
                progress.node_started_unix_ms = self.now();
                progress.baseline_completed_unix_ms = None;
                progress.failures = 0;
                progress.retry_after_unix_ms = None;
                progress.message = None;
                let call = self.ask_repair(&mut progress);
                let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
                p.admin = call;
                p.repair = Some(progress);
                p
            }
            None => {
                self.events.push(
                    PlannedEvent::normal(
                        "ZoneRepaired",
                        format!("every node of zone {zone} completed anti-entropy"),
                    )
                    .statefulset(&names::statefulset(self.name(), &zone)),
                );
                let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
                p.repair = None;
                p.repaired_zone = Some(zone);
                p
            }
        }
    }
}

/// Wait after the `failures`-th failed repair run of a node in a row.
pub(super) fn repair_backoff(failures: i32) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(0)
        .min(5);
    (Duration::from_secs(30) * 2u32.pow(doublings)).min(Duration::from_secs(600))
}
