//! Volumes: expansion, the volumes of departed nodes, and StatefulSets being
//! re-created.
//!
//! A StatefulSet's volume claim template is immutable, so `storage.size`
//! grows the way peers do it: when the StorageClass allows expansion, every
//! node volume's request is raised first, then the StatefulSet is deleted with
//! its pods left running (`--cascade=orphan`) and re-created with the new
//! template, adopting them. No pod restarts. When the class does not allow it,
//! the cluster is `Degraded` (`StorageExpansionUnsupported`) and everything
//! else goes on with the old size.
//!
//! The volume of a node that left the ring is marked; it is deleted when its
//! pod is gone (`reclaimPolicy: Delete`) or right before a new node would
//! reuse its ordinal (`Retain`).

use super::{Activity, Blocker, KubeAction, Plan, PlannedEvent, Planner, REQUEUE_SOON};
use crate::crd::{Phase, ReclaimPolicy, quantity_bytes};
use crate::names;

impl Planner<'_> {
    /// A zone whose StatefulSet is being deleted (to be re-created): wait.
    pub(super) fn recreating(&mut self) -> Option<Plan> {
        let z = (0..self.zones.len()).find(|&z| self.live(z).is_some_and(|s| s.deleting))?;
        let sts = self.sts_name(z);
        let mut p = self.wait(
            Phase::Scaling,
            (
                "StatefulSetRecreating",
                format!("waiting for StatefulSet {sts} to be deleted (its pods keep running) before re-creating it"),
            ),
        );
        p.requeue = REQUEUE_SOON;
        Some(p)
    }

    /// Marks the volume of the node at `ordinal` of zone `z` as departed
    /// (its pod is being removed), and deletes it under `reclaimPolicy: Delete`.
    pub(super) fn retire_volume(&mut self, z: usize, ordinal: i32) {
        let pvc = names::pvc(self.name(), self.zone_name(z), ordinal);
        if !self.obs.pvcs.contains_key(&pvc) {
            return;
        }
        self.kube
            .push(KubeAction::MarkVolumeDecommissioned { pvc: pvc.clone() });
        if self.spec.storage.reclaim_policy == ReclaimPolicy::Delete {
            self.kube
                .push(KubeAction::DeleteVolume { pvc: pvc.clone() });
            self.events.push(
                PlannedEvent::normal(
                    "VolumeDeleted",
                    format!("deleting {pvc}: its node left the ring (reclaimPolicy Delete)"),
                )
                .pvc(&pvc),
            );
        }
    }

    /// Before ordinal `o` of zone `z` is added: a departed node's volume must go first.
    pub(super) fn clear_departed_volume(&mut self, z: usize, o: i32) -> Option<Plan> {
        let pvc = names::pvc(self.name(), self.zone_name(z), o);
        let v = self.obs.pvcs.get(&pvc).filter(|v| v.decommissioned)?;
        if !v.deleting {
            self.kube
                .push(KubeAction::DeleteVolume { pvc: pvc.clone() });
            self.events.push(
                PlannedEvent::normal(
                    "VolumeDeleted",
                    format!(
                        "deleting {pvc} of a decommissioned node before a new node takes ordinal {o}"
                    ),
                )
                .pvc(&pvc),
            );
        }
        let mut p = self.wait(
            Phase::Scaling,
            (
                "VolumeCleanup",
                format!("waiting for {pvc} (a departed node's volume) to be deleted"),
            ),
        );
        p.requeue = REQUEUE_SOON;
        Some(p)
    }

    /// Under `reclaimPolicy: Delete`, departed volumes left over (an
    /// interrupted step) are deleted once their ordinal is unused.
    pub(super) fn volumes(&mut self) {
        if self.spec.storage.reclaim_policy != ReclaimPolicy::Delete {
            return;
        }
        for z in 0..self.zones.len() {
            let cur = self.current(z);
            let prefix = format!("{}-{}-", names::VOLUME, self.sts_name(z));
            let stale: Vec<String> = self
                .obs
                .pvcs
                .iter()
                .filter(|(name, v)| {
                    v.decommissioned
                        && !v.deleting
                        && name
                            .strip_prefix(&prefix)
                            .and_then(|o| o.parse::<i32>().ok())
                            .is_some_and(|o| o >= cur)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for pvc in stale {
                self.kube.push(KubeAction::DeleteVolume { pvc });
            }
        }
    }

    /// Grows the volumes to `storage.size` (see the module docs).
    pub(super) fn expand(&mut self) -> Option<Plan> {
        let size = self.spec.storage.size.clone();
        let want = quantity_bytes(&size)?;
        let smaller = |live: &Option<String>| {
            live.as_deref()
                .and_then(quantity_bytes)
                .is_some_and(|b| b < want)
        };
        let zones: Vec<usize> = (0..self.zones.len())
            .filter(|&z| self.live(z).is_some_and(|s| smaller(&s.volume_size)))
            .collect();
        if zones.is_empty() {
            return None;
        }
        let pvcs: Vec<(usize, String)> = zones
            .iter()
            .flat_map(|&z| {
                (0..self.current(z))
                    .map(move |o| (z, o))
                    .collect::<Vec<_>>()
            })
            .map(|(z, o)| (z, names::pvc(self.name(), self.zone_name(z), o)))
            .filter(|(_, pvc)| self.obs.pvcs.contains_key(pvc))
            .collect();
        if !pvcs.is_empty() && self.obs.volume_expansion != Some(true) {
            let class = self
                .obs
                .pvcs
                .get(&pvcs[0].1)
                .and_then(|v| v.class.clone())
                .unwrap_or_else(|| "(default)".into());
            let live = self.live(zones[0]).and_then(|s| s.volume_size.clone());
            self.problem = Some(Blocker {
                reason: "StorageExpansionUnsupported",
                message: format!(
                    "storage.size is {size} but the volumes have {}: StorageClass {class} does not allow volume expansion (allowVolumeExpansion), so they keep their size",
                    live.unwrap_or_default()
                ),
            });
            return None;
        }
        let mut resized = 0;
        for (_, pvc) in &pvcs {
            if smaller(&self.obs.pvcs[pvc].requested) {
                self.kube.push(KubeAction::ResizeVolume {
                    pvc: pvc.clone(),
                    size: size.clone(),
                });
                self.events.push(
                    PlannedEvent::normal("VolumeExpanding", format!("resizing {pvc} to {size}"))
                        .pvc(pvc),
                );
                resized += 1;
            }
        }
        if resized > 0 {
            let message = format!("resizing {resized} volumes to {size}");
            return Some(self.finish(Activity::ExpandingVolumes { message }, REQUEUE_SOON));
        }
        // Every volume asks for the new size: swap the StatefulSet's template,
        // one settled zone at a time, outside any decommission of that zone.
        let busy = self.prev.decommission.as_ref().map(|d| d.zone.clone());
        let z = zones.into_iter().find(|&z| {
            self.live(z).is_some_and(|s| s.settled()) && busy.as_deref() != Some(self.zone_name(z))
        })?;
        let sts = self.sts_name(z);
        self.scales[z] = None;
        self.kube
            .push(KubeAction::OrphanStatefulSet { name: sts.clone() });
        self.events.push(
            PlannedEvent::normal(
                "StatefulSetRecreating",
                format!(
                    "volumes of zone {} resized to {size}; re-creating StatefulSet {sts} with the new volume template (its pods keep running)",
                    self.zone_name(z)
                ),
            )
            .statefulset(&sts),
        );
        let message = format!("re-creating StatefulSet {sts} with {size} volumes");
        Some(self.finish(Activity::ExpandingVolumes { message }, REQUEUE_SOON))
    }

    /// Deletes ConfigMap versions no StatefulSet revision can use any more:
    /// only when no rollout is pending anywhere (a pod below a rollout
    /// partition restarts on the old version).
    pub(super) fn collect_config_maps(&mut self) {
        let quiet = self.zones.iter().all(|v| {
            !v.changed
                && match &v.live {
                    Some(s) => s.settled() && !s.rollout_pending() && !s.deleting,
                    None => v.current == 0,
                }
        });
        if !quiet {
            return;
        }
        for name in &self.obs.config_maps {
            if *name != self.desired.config_map {
                self.kube
                    .push(KubeAction::DeleteConfigMap { name: name.clone() });
            }
        }
    }
}
