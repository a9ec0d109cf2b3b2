//! Cleanup after the ring gained a node (a scale-up, a replaced node): the
//! new node took ranges from the others, which keep their old copies until
//! they drop them (`Admin.Cleanup`); kept forever, such copies can bring
//! deleted data back after a later ring change.
//!
//! A scale-up records `status.cleanup` when it adds a node; once every step
//! of the scale-up is over and the ring is healthy (a node refuses cleanup
//! while any node joins or leaves), every node runs it, one at a time in
//! ordinal order (the node that joined last has nothing to drop; one that
//! joined earlier in the same scale-up may). A node is done once its last
//! completed cleanup is newer than when it was asked; a run that kept ranges
//! (a replica was down) is retried with back-off, as repair is.

use std::time::Duration;

use super::repair::repair_backoff;
use super::{Activity, AdminCall, Plan, PlannedEvent, Planner, REQUEUE_BUSY};
use crate::crd::CleanupProgress;
use crate::observe::NodeObservation;

impl Planner<'_> {
    /// Every node must clean up once the ring settles (kept if already due).
    pub(super) fn need_cleanup(&mut self, reason: String) {
        if self.cleanup.is_none() {
            self.cleanup = Some(CleanupProgress {
                reason,
                node: String::new(),
                cleanup_id: 0,
                baseline_completed_unix_ms: None,
                nodes_done: Vec::new(),
                keys_dropped: 0,
                started_at: None,
                failures: 0,
                retry_after_unix_ms: None,
                message: None,
            });
        }
    }

    /// Runs the pending cleanup on the next node; `None` when there is none,
    /// or the ring is not healthy (it waits in `status.cleanup` meanwhile
    /// without holding up repair).
    pub(super) fn cleanup(&mut self) -> Option<Plan> {
        let mut progress = self.cleanup.clone()?;
        if self.unhealthy().is_some() {
            return None;
        }
        let pods: Vec<String> = self.expected_pods().into_iter().map(|(_, p)| p).collect();
        let now = self.now();
        if !progress.node.is_empty() {
            let node = progress.node.clone();
            let gone = !pods.contains(&node);
            let report = self.obs.nodes.get(&node).and_then(NodeObservation::report);
            let done = gone
                || match (report, progress.baseline_completed_unix_ms) {
                    (Some(r), Some(baseline)) => {
                        !r.cleanup.running
                            && i64::try_from(r.cleanup.last_completed_unix_ms).unwrap_or(i64::MAX)
                                > baseline
                    }
                    _ => false,
                };
            if !done {
                if let Some(r) = report
                    && !r.cleanup.running
                    && progress.cleanup_id != 0
                    && i64::try_from(r.cleanup.cleanup_id).ok() == Some(progress.cleanup_id)
                    && !r.cleanup.last_error.is_empty()
                {
                    // The run we asked for kept ranges: retry after a while.
                    progress.failures += 1;
                    progress.cleanup_id = 0;
                    let backoff = repair_backoff(progress.failures);
                    progress.retry_after_unix_ms =
                        Some(now.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(0)));
                    progress.message = Some(r.cleanup.last_error.clone());
                    self.events.push(
                        PlannedEvent::warning(
                            "CleanupFailed",
                            format!(
                                "cleanup on {node} did not finish ({}); retrying in {}s",
                                r.cleanup.last_error,
                                backoff.as_secs()
                            ),
                        )
                        .pod(&node),
                    );
                    return Some(self.cleaning(progress, None, backoff));
                }
                if let Some(t) = progress.retry_after_unix_ms
                    && now < t
                {
                    let wait = Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                    return Some(self.cleaning(progress, None, wait));
                }
                let call = self.ask_cleanup(&mut progress);
                if call.is_some() {
                    progress.retry_after_unix_ms = None;
                }
                return Some(self.cleaning(progress, call, REQUEUE_BUSY));
            }
            if !gone {
                progress.nodes_done.push(node);
                progress.keys_dropped = progress.keys_dropped.saturating_add(
                    report.map_or(0, |r| i64::try_from(r.cleanup.keys_dropped).unwrap_or(0)),
                );
            }
        }
        let Some(next) = pods
            .iter()
            .find(|p| !progress.nodes_done.contains(p))
            .cloned()
        else {
            self.events.push(PlannedEvent::normal(
                "CleanupComplete",
                format!(
                    "every node dropped the data it no longer replicates after the {} ({} records)",
                    progress.reason, progress.keys_dropped
                ),
            ));
            self.cleanup = None;
            return None;
        };
        if progress.started_at.is_none() {
            progress.started_at = Some(crate::time::from_unix_ms(now));
            self.events.push(PlannedEvent::normal(
                "CleanupStarted",
                format!(
                    "after the {}: every node drops the data it no longer replicates, one at a time, starting with {next}",
                    progress.reason
                ),
            ));
        }
        progress.node = next;
        progress.cleanup_id = 0;
        progress.baseline_completed_unix_ms = None;
        progress.failures = 0;
        progress.retry_after_unix_ms = None;
        progress.message = None;
        let call = self.ask_cleanup(&mut progress);
        Some(self.cleaning(progress, call, REQUEUE_BUSY))
    }

    /// Asks `progress.node` to clean up when it is reachable and idle,
    /// recording its last completion first (see the module docs).
    fn ask_cleanup(&self, progress: &mut CleanupProgress) -> Option<AdminCall> {
        let r = self.obs.nodes.get(&progress.node)?.report()?;
        if r.cleanup.running {
            return None;
        }
        let last = i64::try_from(r.cleanup.last_completed_unix_ms).unwrap_or(i64::MAX);
        progress.baseline_completed_unix_ms.get_or_insert(last);
        Some(AdminCall::Cleanup {
            node: progress.node.clone(),
        })
    }

    fn cleaning(
        &mut self,
        progress: CleanupProgress,
        call: Option<AdminCall>,
        requeue: Duration,
    ) -> Plan {
        let total = self.expected_pods().len();
        let node = progress.node.clone();
        let message = format!(
            "{node} is dropping the data it no longer replicates ({}/{total} nodes done)",
            progress.nodes_done.len()
        );
        self.cleanup = Some(progress);
        let mut p = self.finish(Activity::CleaningUp { node, message }, requeue);
        p.admin = call;
        p
    }
}
