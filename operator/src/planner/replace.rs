//! Replacing a node gone for good: its pod is annotated `ringkv.io/replace`
//! (by a human who knows its volume is lost), or its volume claim reports
//! `Lost` (its PersistentVolume is gone).
//!
//! 1. `Removing`: once every node that answers sees it down, another NORMAL
//!    node runs `RemoveNode` for it (idempotent: asked again every reconcile,
//!    from another node if the first one stops answering): its ranges stream
//!    from the surviving replicas to their new owners, then it is LEFT. A node
//!    still alive is never removed: the request waits, `Degraded/ReplaceRefused`
//!    says why, and everything else goes on.
//! 2. `Recreating`: once every answering node lists it as left, its volume
//!    claim and pod are deleted; the StatefulSet re-creates both, and the
//!    node, finding its old incarnation removed, joins as a new node with new
//!    tokens and streams its ranges in.
//! 3. Done once the new pod's node is NORMAL and seen by all: the others then
//!    clean up what it took over from them.
//!
//! A node no member ever knew (it never joined) skips straight to step 2.

use super::{Activity, AdminCall, Blocker, KubeAction, Plan, PlannedEvent, Planner, REQUEUE_BUSY};
use crate::crd::ReplaceProgress;
use crate::names;
use crate::observe::{NodeObservation, NodeState};

impl Planner<'_> {
    /// The replacement in progress, or a newly requested one.
    pub(super) fn replace(&mut self) -> Option<Plan> {
        if let Some(progress) = self.replace.clone() {
            return Some(self.continue_replace(progress));
        }
        let (z, pod, reason) = self.replace_requested()?;
        if let Some(by) = self.seen_alive_by(&pod) {
            self.problem = Some(Blocker {
                reason: "ReplaceRefused",
                message: format!(
                    "{pod} is asked to be replaced ({reason}) but is alive (seen by {by}): a node is replaced only once it is down for good; remove the ringkv.io/replace annotation to cancel"
                ),
            });
            return None;
        }
        let zone = self.zone_name(z).to_string();
        let known = self.known_member(&pod);
        let pvc = self.obs.pvcs.get(&self.pvc_of(&pod));
        let mut progress = ReplaceProgress {
            node: pod.clone(),
            zone,
            phase: "Removing".into(),
            reason: reason.into(),
            coordinator: String::new(),
            old_pod_uid: self
                .obs
                .pods
                .get(&pod)
                .map(|p| p.uid.clone())
                .unwrap_or_default(),
            old_volume_uid: pvc.map(|v| v.uid.clone()).unwrap_or_default(),
            ranges_done: 0,
            ranges_total: 0,
            keys_streamed: 0,
            started_at: Some(crate::time::from_unix_ms(self.now())),
            message: None,
        };
        self.start_step("Replace", &pod);
        if !known {
            progress.phase = "Recreating".into();
            self.events.push(
                PlannedEvent::normal(
                    "NodeReplacing",
                    format!(
                        "{pod} is replaced ({reason}); no ring member knows it, so its volume and pod are re-created at once"
                    ),
                )
                .pod(&pod),
            );
            return Some(self.recreate(progress));
        }
        self.events.push(
            PlannedEvent::normal(
                "NodeReplacing",
                format!(
                    "{pod} is gone for good ({reason}): removing it from the ring (its ranges stream from the surviving replicas), then re-creating it on an empty volume"
                ),
            )
            .pod(&pod),
        );
        Some(self.removing(progress))
    }

    /// The node being replaced, or asked to be.
    pub(super) fn replacing_node(&self) -> Option<String> {
        match &self.replace {
            Some(r) => Some(r.node.clone()),
            None => self.replace_requested().map(|(_, pod, _)| pod),
        }
    }

    /// The first expected pod asked to be replaced: (zone, pod, why).
    fn replace_requested(&self) -> Option<(usize, String, &'static str)> {
        self.expected_pods().into_iter().find_map(|(z, pod)| {
            if self.obs.pods.get(&pod).is_some_and(|p| p.replace_requested) {
                return Some((z, pod, "annotation"));
            }
            let lost = self
                .obs
                .pvcs
                .get(&self.pvc_of(&pod))
                .is_some_and(|v| v.lost);
            lost.then_some((z, pod, "volume lost"))
        })
    }

    fn pvc_of(&self, pod: &str) -> String {
        format!("{}-{pod}", names::VOLUME)
    }

    /// A node that answers and sees `pod` alive (or `pod` answering itself).
    fn seen_alive_by(&self, pod: &str) -> Option<String> {
        if let Some(r) = self.obs.nodes.get(pod).and_then(NodeObservation::report)
            && r.state != NodeState::Left
        {
            return Some(pod.to_string());
        }
        self.obs.nodes.iter().find_map(|(id, o)| {
            let r = o.report()?;
            (id != pod
                && r.members
                    .iter()
                    .any(|m| m.node_id == pod && m.alive && m.state != NodeState::Left))
            .then(|| id.clone())
        })
    }

    /// Whether any answering node lists `pod` as a ring member.
    fn known_member(&self, pod: &str) -> bool {
        self.obs
            .nodes
            .values()
            .filter_map(NodeObservation::report)
            .any(|r| r.node_id == pod || r.members.iter().any(|m| m.node_id == pod))
    }

    /// A NORMAL node (other than `pod`) to run RemoveNode, preferring `current`.
    fn coordinator(&self, pod: &str, current: &str) -> Option<String> {
        let normal = |id: &str| {
            id != pod
                && self
                    .obs
                    .nodes
                    .get(id)
                    .and_then(NodeObservation::report)
                    .is_some_and(|r| r.state == NodeState::Normal)
        };
        if !current.is_empty() && normal(current) {
            return Some(current.to_string());
        }
        self.expected_pods()
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| normal(p))
    }

    fn continue_replace(&mut self, progress: ReplaceProgress) -> Plan {
        if self
            .prev
            .step
            .as_ref()
            .is_none_or(|s| s.node != progress.node)
        {
            self.start_step("Replace", &progress.node);
        }
        match progress.phase.as_str() {
            "Recreating" => self.recreate(progress),
            _ => self.removing(progress),
        }
    }

    /// Step 1: ask a coordinator until every answering node sees the node LEFT.
    fn removing(&mut self, mut progress: ReplaceProgress) -> Plan {
        let pod = progress.node.clone();
        let reports: Vec<_> = self
            .obs
            .nodes
            .iter()
            .filter(|(id, _)| **id != pod)
            .filter_map(|(_, o)| o.report())
            .collect();
        let left_everywhere = !reports.is_empty()
            && reports.iter().all(|r| {
                r.members
                    .iter()
                    .any(|m| m.node_id == pod && m.state == NodeState::Left)
            });
        if left_everywhere {
            self.events.push(
                PlannedEvent::normal(
                    "NodeRemoved",
                    format!(
                        "{pod} was removed from the ring (every node sees it left); re-creating it on an empty volume"
                    ),
                )
                .pod(&pod),
            );
            progress.phase = "Recreating".into();
            progress.message = None;
            return self.recreate(progress);
        }
        let Some(via) = self.coordinator(&pod, &progress.coordinator) else {
            let message = format!("no NORMAL node answers to remove {pod}");
            progress.message = Some(message.clone());
            return self.replacing(progress, None, message);
        };
        progress.coordinator = via.clone();
        let message = format!(
            "removing {pod} through {via}: {}/{} ranges streamed from the surviving replicas",
            progress.ranges_done, progress.ranges_total
        );
        let call = AdminCall::RemoveNode {
            via,
            node: pod.clone(),
        };
        self.replacing(progress, Some(call), message)
    }

    /// Step 2: delete the dead node's volume and pod, then wait for the new one.
    fn recreate(&mut self, progress: ReplaceProgress) -> Plan {
        let pod = progress.node.clone();
        let pvc = self.pvc_of(&pod);
        let live_pod = self.obs.pods.get(&pod);
        let fresh = live_pod.is_some_and(|p| p.uid != progress.old_pod_uid);
        if !fresh {
            // The old volume goes first (it is deleted once no pod uses it),
            // then the old pod: the StatefulSet re-creates both.
            if let Some(v) = self.obs.pvcs.get(&pvc)
                && !v.deleting
                && (progress.old_volume_uid.is_empty() || v.uid == progress.old_volume_uid)
            {
                self.kube
                    .push(KubeAction::DeleteVolume { pvc: pvc.clone() });
                self.events.push(
                    PlannedEvent::normal(
                        "VolumeDeleted",
                        format!("deleting {pvc}: its node {pod} was removed from the ring"),
                    )
                    .pvc(&pvc),
                );
            }
            if live_pod.is_some_and(|p| !p.deleting) {
                self.kube.push(KubeAction::DeletePod { name: pod.clone() });
            }
            let message = format!("re-creating {pod} and its volume");
            return self.replacing(progress, None, message);
        }
        let normal = self
            .obs
            .nodes
            .get(&pod)
            .and_then(NodeObservation::report)
            .is_some_and(|r| r.state == NodeState::Normal);
        if !normal || self.unhealthy().is_some() {
            let message = format!("{pod} is back on an empty volume and joins as a new node");
            return self.replacing(progress, None, message);
        }
        self.events.push(
            PlannedEvent::normal(
                "NodeReplaced",
                format!(
                    "{pod} was replaced: it joined as a new node on an empty volume ({})",
                    progress.reason
                ),
            )
            .pod(&pod),
        );
        self.replace = None;
        self.new_step = None;
        self.need_cleanup(format!("replacement of {pod}"));
        self.finish(Activity::Stable, super::REQUEUE_SOON)
    }

    fn replacing(
        &mut self,
        progress: ReplaceProgress,
        call: Option<AdminCall>,
        message: String,
    ) -> Plan {
        let node = progress.node.clone();
        self.replace = Some(progress);
        let mut p = self.finish(Activity::ReplacingNode { node, message }, REQUEUE_BUSY);
        p.admin = call;
        p
    }
}
