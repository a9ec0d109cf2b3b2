//! How many nodes each zone runs, and growing or shrinking it.
//!
//! The operator's own record of a zone's size is the replicas annotation it
//! writes with `spec.replicas` in one apply. A StatefulSet scaled by someone
//! else (`kubectl scale`, GitOps drift) is never taken as the new truth: scaled
//! down, it is restored at once (the pods come back on their retained volumes);
//! scaled up, the extra nodes joined the ring and leave it through the normal
//! decommission. A StatefulSet that vanished while its pods run (deleted with
//! `--cascade=orphan`, as a volume expansion does) is re-created at the size
//! its pods show.

use super::{Activity, Plan, PlannedEvent, Planner, REQUEUE_BUSY, ZoneView, sum};
use crate::build::ZoneScale;
use crate::crd::{DecommissionProgress, Phase};
use crate::observe::StsObservation;

impl Planner<'_> {
    /// The zone as the planner sees it, and what to apply for it.
    pub(super) fn zone_view(&mut self, i: usize) -> (ZoneView, Option<ZoneScale>) {
        let sts = self.sts_name(i);
        let Some(s) = self.obs.zones[i].clone() else {
            // Lost or new. Lost: its pods still run (or its size is recorded);
            // re-create it at that size with every pod held at its revision.
            let from_pods = self
                .obs
                .zone_pods(self.name(), self.zone_name(i))
                .keys()
                .max()
                .map_or(0, |o| o + 1);
            let recorded = self
                .prev
                .zones
                .iter()
                .find(|z| z.name == self.zone_name(i))
                .map_or(0, |z| z.replicas);
            let current = from_pods.max(recorded);
            if current > 0 {
                self.events.push(
                    PlannedEvent::normal(
                        "StatefulSetRecreated",
                        format!("re-creating StatefulSet {sts} with its {current} running pods"),
                    )
                    .statefulset(&sts),
                );
            }
            let view = ZoneView {
                live: None,
                current,
                changed: false,
            };
            // A zone added after creation starts empty and grows one node at a time.
            return (view, Some(ZoneScale::new(current, current)));
        };
        if s.deleting {
            let current = s.operator_replicas.unwrap_or(s.replicas);
            let view = ZoneView {
                live: Some(s),
                current,
                changed: false,
            };
            return (view, None);
        }
        let current = self.drift(i, &s);
        let (partition, changed) = self.partition(i, &s, current);
        let volume_size = s
            .volume_size
            .clone()
            .filter(|live| *live != self.spec.storage.size);
        let scale = ZoneScale {
            replicas: current,
            partition,
            volume_size,
        };
        let view = ZoneView {
            live: Some(s),
            current,
            changed,
        };
        (view, Some(scale))
    }

    /// The zone's size per the operator, reverting changes made behind its back.
    fn drift(&mut self, i: usize, s: &StsObservation) -> i32 {
        let Some(applied) = s.operator_replicas else {
            return s.replicas;
        };
        let sts = self.sts_name(i);
        if s.replicas < applied {
            self.events.push(
                PlannedEvent::warning(
                    "DriftReverted",
                    format!(
                        "StatefulSet {sts} was scaled to {} outside the operator; restoring {applied} \
                         (its pods come back on their volumes; scale the KVCluster instead)",
                        s.replicas
                    ),
                )
                .statefulset(&sts),
            );
            return applied;
        }
        if s.replicas > applied {
            self.events.push(
                PlannedEvent::warning(
                    "DriftReverted",
                    format!(
                        "StatefulSet {sts} was scaled to {} outside the operator (it had {applied}); \
                         nodes beyond the KVCluster's size are decommissioned before they are removed",
                        s.replicas
                    ),
                )
                .statefulset(&sts),
            );
        }
        s.replicas
    }

    pub(super) fn scale(&mut self) -> Option<Plan> {
        let n = self.zones.len();
        let current: Vec<i32> = (0..n).map(|z| self.current(z)).collect();
        if current == self.targets {
            // The last step is only done when its nodes are in the ring as normal.
            let during = self.prev.phase;
            if matches!(during, Phase::Creating | Phase::Scaling) {
                if let Some(why) = self.unhealthy() {
                    return Some(self.wait(during, why));
                }
                let verb = if during == Phase::Creating {
                    "Created"
                } else {
                    "ScalingComplete"
                };
                self.events.push(PlannedEvent::normal(
                    verb,
                    format!("{} nodes are normal ring members", sum(&current)),
                ));
            }
            return None;
        }
        if let Some(p) = self.remove_never_joined(&current) {
            return Some(p);
        }
        if let Some(why) = self.unhealthy() {
            return Some(self.wait(Phase::Scaling, why));
        }
        // Grow before shrinking, so capacity never dips while zones rebalance.
        let grow = (0..n)
            .filter(|&z| self.targets[z] > current[z])
            .max_by_key(|&z| (self.targets[z] - current[z], std::cmp::Reverse(z)));
        if let Some(z) = grow {
            if let Some(p) = self.clear_departed_volume(z, current[z]) {
                return Some(p);
            }
            let pod = self.pod(z, current[z]);
            if let Some(s) = self.scales[z].as_mut() {
                s.replicas = current[z] + 1;
            }
            self.events.push(
                PlannedEvent::normal(
                    "ScalingUp",
                    format!(
                        "adding {pod} to zone {} ({} -> {} nodes)",
                        self.zone_name(z),
                        sum(&current),
                        sum(&current) + 1
                    ),
                )
                .pod(&pod),
            );
            self.start_step("ScaleUp", &pod);
            // The new node takes ranges from the others: they clean up once
            // the scale-up is over.
            self.need_cleanup(format!("ScaleUp of {pod}"));
            return Some(self.finish(Activity::ScalingUp { node: pod }, REQUEUE_BUSY));
        }
        // Victim: highest ordinal in the largest zone above its target (later zones
        // first on ties, since earlier zones hold the remainder).
        let z = (0..n)
            .filter(|&z| current[z] > self.targets[z])
            .max_by_key(|&z| (current[z], z))?;
        let node = self.pod(z, current[z] - 1);
        let zone = self.zone_name(z).to_string();
        self.events.push(
            PlannedEvent::normal(
                "DecommissionStarted",
                format!(
                    "decommissioning {node} ({} -> {} nodes); its ranges stream to their new owners first",
                    sum(&current),
                    sum(&current) - 1
                ),
            )
            .pod(&node),
        );
        self.start_step("Decommission", &node);
        let mut p = self.finish(
            Activity::Decommissioning { node: node.clone() },
            REQUEUE_BUSY,
        );
        p.admin = Some(super::AdminCall::Decommission {
            node: node.clone(),
            zone: zone.clone(),
        });
        p.decommission = Some(DecommissionProgress {
            node,
            zone,
            phase: "Starting".into(),
            ranges_done: 0,
            ranges_total: 0,
            keys_streamed: 0,
            started_at: Some(crate::time::from_unix_ms(self.now())),
            message: None,
        });
        Some(p)
    }

    /// A zone above its target whose top pod never joined the ring (stuck
    /// Pending, image never pulled): its pod goes at once, without the
    /// decommission no node could run for it. This is the way out of a
    /// scale-up that cannot schedule: lower `spec.replicas`.
    fn remove_never_joined(&mut self, current: &[i32]) -> Option<Plan> {
        let z = (0..current.len()).find(|&z| {
            current[z] > self.targets[z] && self.never_joined(&self.pod(z, current[z] - 1))
        })?;
        let cur = current[z];
        let node = self.pod(z, cur - 1);
        if let Some(s) = self.scales[z].as_mut() {
            s.replicas = cur - 1;
            s.partition = s.partition.min(cur - 1);
        }
        let why = self
            .obs
            .pods
            .get(&node)
            .and_then(|p| {
                p.unschedulable
                    .clone()
                    .or_else(|| p.waiting.as_ref().map(|(r, m)| format!("{r} {m}")))
            })
            .unwrap_or_else(|| "no node lists it as a ring member".into());
        self.events.push(
            PlannedEvent::normal(
                "NodeRemoved",
                format!(
                    "{node} never joined the ring ({}); removing its pod without a decommission",
                    why.trim_end()
                ),
            )
            .pod(&node),
        );
        self.retire_volume(z, cur - 1);
        Some(self.finish(Activity::RemovingNode { node }, REQUEUE_BUSY))
    }
}
