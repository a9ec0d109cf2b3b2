//! A decommission in flight: keep asking the victim (the call is idempotent
//! and returns progress) until it has streamed its ranges away, reports LEFT,
//! and every other node has heard; only then lower the StatefulSet.
//!
//! The victim comes from status, or after an operator restart that lost the
//! status write, from the node that reports leaving. A decommission the victim
//! never accepted (it was unreachable from the start) is cancelled when the
//! spec no longer asks for the scale-down; one that started streaming cannot
//! be, and waits for the node to come back.

use super::{Activity, Plan, PlannedEvent, Planner, REQUEUE_BUSY, REQUEUE_SOON};
use crate::crd::{DecommissionProgress, Phase};
use crate::observe::{DecommissionPhase, NodeObservation, NodeReport, NodeState};

impl Planner<'_> {
    /// The node being decommissioned: from status, or the highest-ordinal
    /// node reporting leaving/left.
    fn decommission_victim(&self) -> Option<(usize, String)> {
        if let Some(d) = &self.prev.decommission
            && let Some(z) = self.spec.zones.iter().position(|s| s.name == d.zone)
        {
            return Some((z, d.node.clone()));
        }
        for z in 0..self.zones.len() {
            let cur = self.current(z);
            if cur == 0 {
                continue;
            }
            let pod = self.pod(z, cur - 1);
            if let Some(r) = self.obs.nodes.get(&pod).and_then(NodeObservation::report)
                && accepted(r)
            {
                return Some((z, pod));
            }
        }
        None
    }

    pub(super) fn continue_decommission(&mut self) -> Option<Plan> {
        let (z, node) = self.decommission_victim()?;
        let zone = self.zone_name(z).to_string();
        let cur = self.current(z);
        let mut progress = self
            .prev
            .decommission
            .clone()
            .unwrap_or_else(|| DecommissionProgress {
                node: node.clone(),
                zone: zone.clone(),
                phase: "Streaming".into(),
                ranges_done: 0,
                ranges_total: 0,
                keys_streamed: 0,
                started_at: None,
                message: Some("resumed: the node reported it was leaving".into()),
            });
        if cur == 0 || self.pod(z, cur - 1) != node {
            // Replicas already went down (the pod is gone or going): the step is over.
            let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
            p.decommission = None;
            p.activity = Activity::Waiting {
                during: Phase::Scaling,
                reason: "NodeRemoving",
                message: "waiting for the removed node's pod to terminate".into(),
            };
            return Some(p);
        }
        if self.prev.step.as_ref().is_none_or(|s| s.node != node) {
            // Resumed without a recorded step (status lost): the deadline counts from now.
            self.start_step("Decommission", &node);
        }
        let obs = self.obs.nodes.get(&node);
        let report = obs.and_then(NodeObservation::report);
        if !report.is_some_and(accepted) && self.targets[z] >= cur {
            // Never started streaming, and no longer wanted: nothing to undo.
            self.events.push(
                PlannedEvent::normal(
                    "DecommissionCancelled",
                    format!(
                        "{node} never started its decommission and the spec keeps it: cancelled"
                    ),
                )
                .pod(&node),
            );
            let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
            p.decommission = None;
            return Some(p);
        }
        if let Some(r) = report {
            if let Some(d) = &r.decommission {
                if d.phase == DecommissionPhase::Failed
                    && progress.phase != DecommissionPhase::Failed.as_str()
                {
                    self.events.push(
                        PlannedEvent::warning(
                            "DecommissionFailed",
                            format!("decommission of {node} failed ({}); resuming it", d.error),
                        )
                        .pod(&node),
                    );
                    progress.message = Some(d.error.clone());
                }
                progress.phase = d.phase.as_str().into();
                progress.ranges_done = i64::from(d.ranges_done);
                progress.ranges_total = i64::from(d.ranges_total);
                progress.keys_streamed = i64::try_from(d.keys_streamed).unwrap_or(i64::MAX);
            }
            let left = r.state == NodeState::Left
                || r.decommission
                    .as_ref()
                    .is_some_and(|d| d.phase == DecommissionPhase::Done);
            // The others must have heard: a node stopped before its LEFT state
            // spread stays LEAVING (down, still owning ranges) in their rings.
            let unaware = if left {
                self.unaware_of_left(&node)
            } else {
                Vec::new()
            };
            if left && !unaware.is_empty() {
                let message = format!(
                    "{node} has left; waiting until {} see it as left",
                    unaware.join(", ")
                );
                progress.message = Some(message.clone());
                let mut p = self.wait(Phase::Scaling, ("LeftNotGossiped", message));
                p.decommission = Some(progress);
                return Some(p);
            }
            if left {
                // Only now, with every range streamed away, may the pod go.
                if let Some(s) = self.scales[z].as_mut() {
                    s.replicas = cur - 1;
                    s.partition = s.partition.min(cur - 1);
                }
                self.events.push(
                    PlannedEvent::normal(
                        "NodeRemoved",
                        format!("{node} left the ring; removing its pod from zone {zone}"),
                    )
                    .pod(&node),
                );
                self.retire_volume(z, cur - 1);
                let mut p = self.finish(Activity::RemovingNode { node }, REQUEUE_SOON);
                p.decommission = None;
                return Some(p);
            }
        }
        let mut p = match obs {
            Some(NodeObservation::Unreachable(e)) => {
                let hint = if report.is_none() && progress.phase == "Starting" {
                    "it never started: set spec.replicas back to cancel"
                } else {
                    "it resumes once the node is back"
                };
                progress.message = Some(format!("waiting for {node} to come back: {e}"));
                self.wait(
                    Phase::Scaling,
                    (
                        "DecommissionNodeUnreachable",
                        format!("cannot reach {node} to continue its decommission ({hint}): {e}"),
                    ),
                )
            }
            _ => {
                // Decommission is idempotent: calling it again resumes a failed or
                // interrupted one and returns progress.
                let mut p = self.finish(
                    Activity::Decommissioning { node: node.clone() },
                    REQUEUE_BUSY,
                );
                p.admin = Some(super::AdminCall::Decommission {
                    node: node.clone(),
                    zone,
                });
                p
            }
        };
        p.decommission = Some(progress);
        Some(p)
    }

    /// Nodes (other than `victim`) that answered and do not yet list it as
    /// left. A node that did not answer does not block: it learns from
    /// the others' gossip once back.
    fn unaware_of_left(&self, victim: &str) -> Vec<String> {
        self.expected_pods()
            .into_iter()
            .map(|(_, pod)| pod)
            .filter(|pod| pod != victim)
            .filter(|pod| {
                self.obs
                    .nodes
                    .get(pod)
                    .and_then(NodeObservation::report)
                    .is_some_and(|r| {
                        !r.members
                            .iter()
                            .any(|m| m.node_id == victim && m.state == NodeState::Left)
                    })
            })
            .collect()
    }
}

/// The node took the decommission on: it is leaving or left, or streaming.
fn accepted(r: &NodeReport) -> bool {
    matches!(r.state, NodeState::Leaving | NodeState::Left)
        || r.decommission.as_ref().is_some_and(|d| {
            matches!(
                d.phase,
                DecommissionPhase::Streaming | DecommissionPhase::Done | DecommissionPhase::Failed
            )
        })
}
