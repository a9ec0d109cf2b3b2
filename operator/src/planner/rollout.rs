//! Pod template changes (image, resources, configuration): one pod at a time
//! through the StatefulSet partition, the next only when the ring is healthy.
//!
//! A new template is first applied with every pod held back (partition =
//! replicas); the planner then lowers the partition by one per healthy ring.
//! When a newer template arrives while the pod the last rollout restarted never
//! became healthy (a bad image, a crashing configuration), holding everything
//! back would keep that pod broken forever: the broken pod is replaced first.
//! If it is the zone's top ordinal the partition stays at it, so the
//! StatefulSet controller replaces it with the newest template right away;
//! otherwise it is deleted and comes back on the last good template, and the
//! new rollout starts from the top once the ring is healthy again.

use super::{Activity, KubeAction, Plan, PlannedEvent, Planner, REQUEUE_BUSY, REQUEUE_SOON};
use crate::crd::Phase;
use crate::observe::StsObservation;

impl Planner<'_> {
    /// Partition for a live zone of `current` nodes, and whether its template
    /// changed this reconcile.
    pub(super) fn partition(&mut self, i: usize, s: &StsObservation, current: i32) -> (i32, bool) {
        let desired = self.desired.template_hashes.get(i).map(String::as_str);
        let changed = s.template_hash.as_deref() != desired;
        if changed && current > 0 {
            let sts = self.sts_name(i);
            // A newer spec restarts the clock, also for a rollout that was stuck.
            self.start_step("Rollout", &sts);
            self.events.push(
                PlannedEvent::normal(
                    "RolloutStarted",
                    format!(
                        "pod template of zone {} changed (image {}); rolling {current} pods one at a time",
                        self.zone_name(i),
                        self.desired.image
                    ),
                )
                .statefulset(&sts),
            );
            if let Some(b) = self.broken_restart(i, s, current) {
                let pod = self.pod(i, b);
                if b == current - 1 {
                    self.events.push(
                        PlannedEvent::warning(
                            "RolloutReplaced",
                            format!(
                                "{pod} never became healthy on the previous template; it gets the new one first"
                            ),
                        )
                        .pod(&pod),
                    );
                    return (b, true);
                }
                self.events.push(
                    PlannedEvent::warning(
                        "RolloutReplaced",
                        format!(
                            "{pod} never became healthy on the previous template; restarting it on the last good one before the new rollout"
                        ),
                    )
                    .pod(&pod),
                );
                self.kube.push(KubeAction::DeletePod { name: pod });
            }
            // Apply the new template without restarting anything yet.
            return (current, true);
        }
        let partition = if s.observed_generation < s.generation || s.rollout_pending() {
            // Keep it: the StatefulSet controller has not seen our last change
            // (its revisions are stale), or the rollout is under way.
            s.partition.min(current)
        } else {
            0
        };
        (partition, false)
    }

    /// The pod an unfinished rollout restarted last, if it runs the rollout's
    /// template and is not ready.
    fn broken_restart(&self, i: usize, s: &StsObservation, current: i32) -> Option<i32> {
        if !s.rollout_pending() || s.partition >= current {
            return None;
        }
        let b = s.partition;
        let pod = self.obs.pods.get(&self.pod(i, b))?;
        let on_rollout = pod.revision.is_some() && pod.revision == s.update_revision;
        (on_rollout && !pod.ready).then_some(b)
    }

    pub(super) fn rollout(&mut self) -> Option<Plan> {
        let z = (0..self.zones.len()).find(|&i| {
            self.zones[i].changed
                || self.zones[i]
                    .live
                    .as_ref()
                    .is_some_and(StsObservation::rollout_pending)
        })?;
        let zone = self.zone_name(z).to_string();
        if self.zones.iter().any(|v| v.changed) {
            // The new template is applied with every pod held back; start restarting next time.
            let msg = format!("applying the new pod template to zone {zone}");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_SOON));
        }
        let s = self.live(z)?.clone();
        if let Some(why) = self.unhealthy() {
            return Some(self.wait(Phase::Upgrading, why));
        }
        let p = s.partition.min(s.replicas);
        if s.updated_replicas < s.replicas - p {
            let msg = format!("waiting for zone {zone} pods >= {p} to run the new template");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY));
        }
        if p == 0 {
            let msg = format!("waiting for zone {zone} to report the rollout complete");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY));
        }
        let pod = self.pod(z, p - 1);
        if let Some(sc) = self.scales[z].as_mut() {
            sc.partition = p - 1;
        }
        self.events.push(
            PlannedEvent::normal(
                "RestartingNode",
                format!("restarting {pod} with the new template (the ring is healthy)"),
            )
            .pod(&pod),
        );
        let msg = format!("restarting {pod}");
        self.start_step("Restart", &pod);
        Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY))
    }
}
