//! Day-2 operations: storage changes, drift, stuck pods and rollouts, deadlines,
//! N changes, name collisions, the node image.

use super::*;
use crate::crd::StepStatus;

fn pvc(requested: &str) -> PvcObservation {
    PvcObservation {
        requested: Some(requested.into()),
        capacity: Some(requested.into()),
        class: Some("standard".into()),
        deleting: false,
        decommissioned: false,
        ..PvcObservation::default()
    }
}

fn running_pod(revision: &str) -> PodObservation {
    PodObservation {
        uid: "u".into(),
        phase: "Running".into(),
        ready: true,
        revision: Some(revision.into()),
        deleting: false,
        unschedulable: None,
        waiting: None,
        started: true,
        replace_requested: false,
    }
}

fn kube(p: &Plan) -> &[KubeAction] {
    &p.kube
}

fn world_with_volumes(per_zone: &[i32]) -> World {
    let mut w = World::new(per_zone);
    for (z, &n) in per_zone.iter().enumerate() {
        for o in 0..n {
            let pod = w.pod(z, o);
            w.pvcs.insert(format!("data-{pod}"), pvc("10Gi"));
            w.pods.insert(pod, running_pod("r1"));
        }
    }
    w
}

// Bug 1: a storage change must never wedge the reconcile.

#[test]
fn a_larger_size_resizes_every_volume_then_recreates_the_statefulsets_one_by_one() {
    let mut w = world_with_volumes(&[1, 1, 1]);
    w.spec.storage.size = "20Gi".into();
    w.volume_expansion = Some(true);
    let p = w.plan();
    let resized: Vec<_> = kube(&p)
        .iter()
        .filter_map(|k| match k {
            KubeAction::ResizeVolume { pvc, size } if size == "20Gi" => Some(pvc.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        resized,
        vec!["data-kv-zone-a-0", "data-kv-zone-b-0", "data-kv-zone-c-0"]
    );
    assert!(matches!(p.activity, Activity::ExpandingVolumes { .. }));
    // The immutable template is not touched while the volumes grow.
    for s in p.scales.as_ref().unwrap() {
        assert_eq!(s.as_ref().unwrap().volume_size.as_deref(), Some("10Gi"));
    }

    // Every volume asks for 20Gi: the first zone's StatefulSet is re-created.
    for v in w.pvcs.values_mut() {
        v.requested = Some("20Gi".into());
    }
    let p = w.plan();
    assert_eq!(
        kube(&p),
        &[KubeAction::OrphanStatefulSet {
            name: "kv-zone-a".into()
        }]
    );
    assert!(
        p.scales.as_ref().unwrap()[0].is_none(),
        "not applied while deleted"
    );
    assert!(reasons(&p).contains(&"StatefulSetRecreating"));

    // Being deleted (the pods are orphaned, not stopped): wait.
    w.sts_mut(0).deleting = true;
    let p = w.plan();
    assert!(
        matches!(
            p.activity,
            Activity::Waiting {
                reason: "StatefulSetRecreating",
                ..
            }
        ),
        "{:?}",
        p.activity
    );
    assert!(p.kube.is_empty());

    // Gone: re-created at the size its pods show, every pod held at its revision,
    // with the new volume template.
    w.zones[0] = None;
    let p = w.plan();
    let a = p.scales.as_ref().unwrap()[0].clone().unwrap();
    assert_eq!((a.replicas, a.partition, a.volume_size), (1, 1, None));
    assert!(reasons(&p).contains(&"StatefulSetRecreated"));
    assert_eq!(
        kube(&p),
        &[KubeAction::OrphanStatefulSet {
            name: "kv-zone-b".into()
        }],
        "zone a is done (its live template will say 20Gi); zone b next"
    );
}

#[test]
fn storage_that_cannot_grow_is_degraded_and_scaling_goes_on() {
    let mut w = world_with_volumes(&[1, 1, 1]);
    w.spec.storage.size = "20Gi".into();
    w.spec.replicas = 4;
    w.volume_expansion = Some(false);
    let p = w.plan();
    let problem = p.problem.as_ref().unwrap();
    assert_eq!(problem.reason, "StorageExpansionUnsupported");
    assert!(problem.message.contains("standard"), "{}", problem.message);
    assert!(
        !p.kube
            .iter()
            .any(|k| matches!(k, KubeAction::ResizeVolume { .. }))
    );
    assert_eq!(
        p.activity,
        Activity::ScalingUp {
            node: "kv-zone-a-1".into()
        }
    );
    for s in p.scales.as_ref().unwrap() {
        assert_eq!(s.as_ref().unwrap().volume_size.as_deref(), Some("10Gi"));
    }
}

#[test]
fn shrinking_storage_or_changing_its_class_is_refused() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.storage.size = "5Gi".into();
    let p = w.plan();
    assert_eq!(p.scales, None);
    assert!(matches!(&p.activity, Activity::Invalid(m) if m.contains("cannot shrink")));
    let mut w = World::new(&[1, 1, 1]);
    w.spec.storage.storage_class_name = Some("fast".into());
    assert!(
        matches!(&w.plan().activity, Activity::Invalid(m) if m.contains("storageClassName cannot change"))
    );
}

// Bug 2: a StatefulSet changed behind the operator's back is drift.

#[test]
fn a_statefulset_scaled_down_by_hand_is_restored_not_adopted() {
    let mut w = world_with_volumes(&[2, 2, 2]);
    for z in 0..3 {
        w.sts_mut(z).operator_replicas = Some(2);
    }
    // `kubectl scale sts kv-zone-c --replicas=1`: its pod 1 is gone, not decommissioned.
    let s = w.sts_mut(2);
    s.replicas = 1;
    s.status_replicas = 1;
    s.ready_replicas = 1;
    w.nodes.insert(
        "kv-zone-c-1".into(),
        NodeObservation::Unreachable("pod deleted".into()),
    );
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 2], "restored at once");
    assert!(reasons(&p).contains(&"DriftReverted"), "{:?}", reasons(&p));
    assert!(
        !matches!(p.activity, Activity::ScalingUp { .. }),
        "not a new node: the old one comes back on its volume"
    );
    assert!(p.admin.is_none());
    assert!(
        !p.kube
            .iter()
            .any(|k| matches!(k, KubeAction::DeleteVolume { .. })),
        "its volume is kept for it"
    );
}

#[test]
fn a_statefulset_scaled_up_by_hand_has_its_extra_node_decommissioned() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 5;
    for z in 0..2 {
        w.sts_mut(z).operator_replicas = Some(2);
    }
    w.sts_mut(2).operator_replicas = Some(1);
    let p = w.plan();
    assert!(reasons(&p).contains(&"DriftReverted"));
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-c-1".into(),
            zone: "zone-c".into()
        }),
        "the extra node joined the ring: it leaves through a decommission"
    );
    assert_eq!(replicas(&p), vec![2, 2, 2]);
}

#[test]
fn a_departed_nodes_volume_is_retired_and_never_reused() {
    let mut w = world_with_volumes(&[2, 2, 2]);
    w.spec.replicas = 5;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Done, 10);
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 1]);
    assert_eq!(
        kube(&p),
        &[KubeAction::MarkVolumeDecommissioned {
            pvc: "data-kv-zone-c-1".into()
        }],
        "Retain: kept until the ordinal is reused"
    );
    // Delete: gone with its pod.
    w.spec.storage.reclaim_policy = crate::crd::ReclaimPolicy::Delete;
    let p = w.plan();
    assert!(kube(&p).contains(&KubeAction::DeleteVolume {
        pvc: "data-kv-zone-c-1".into()
    }));

    // Later the cluster grows into that ordinal again: the old volume goes first.
    let mut w = world_with_volumes(&[2, 2, 1]);
    w.pvcs.insert(
        "data-kv-zone-c-1".into(),
        PvcObservation {
            decommissioned: true,
            ..pvc("10Gi")
        },
    );
    w.spec.replicas = 6;
    let p = w.plan();
    assert_eq!(
        kube(&p),
        &[KubeAction::DeleteVolume {
            pvc: "data-kv-zone-c-1".into()
        }]
    );
    assert_eq!(replicas(&p), vec![2, 2, 1], "not before it is gone");
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            reason: "VolumeCleanup",
            ..
        }
    ));
    w.pvcs.remove("data-kv-zone-c-1");
    assert_eq!(replicas(&w.plan()), vec![2, 2, 2]);
}

// Bug 3: ways out of stuck pods, and deadlines.

fn pending(msg: &str) -> PodObservation {
    PodObservation {
        uid: "u".into(),
        phase: "Pending".into(),
        unschedulable: Some(msg.into()),
        ..PodObservation::default()
    }
}

#[test]
fn a_scale_up_pod_stuck_pending_is_removed_without_decommission_when_the_spec_shrinks() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 3;
    w.pods.insert(
        "kv-zone-a-1".into(),
        pending("0/3 nodes are available: 3 Insufficient memory."),
    );
    w.nodes.insert(
        "kv-zone-a-1".into(),
        NodeObservation::Unreachable("no address".into()),
    );
    let p = w.plan();
    assert_eq!(replicas(&p), vec![1, 1, 1]);
    assert_eq!(p.admin, None, "no node could run a decommission for it");
    assert_eq!(
        p.activity,
        Activity::RemovingNode {
            node: "kv-zone-a-1".into()
        }
    );
    assert!(p.events[0].message.contains("never joined"));
}

#[test]
fn a_node_that_others_know_is_not_removed_without_decommission() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 3;
    // Unreachable, but the others list it: it joined, so it holds data.
    w.nodes.insert(
        "kv-zone-a-1".into(),
        NodeObservation::Unreachable("timeout".into()),
    );
    for pod in ["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"] {
        w.node_mut(pod).members = ["kv-zone-a-0", "kv-zone-a-1", "kv-zone-b-0", "kv-zone-c-0"]
            .iter()
            .map(|id| Member {
                node_id: (*id).into(),
                zone: String::new(),
                state: NodeState::Normal,
                alive: *id != "kv-zone-a-1",
            })
            .collect();
    }
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 1, 1]);
    assert!(matches!(p.activity, Activity::Waiting { .. }));
}

#[test]
fn a_pending_pod_is_named_and_degrades_the_cluster_after_the_deadline() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 4;
    w.status.phase = Phase::Scaling;
    w.pods.insert(
        "kv-zone-a-1".into(),
        pending("0/3 nodes are available: 3 Insufficient memory."),
    );
    w.nodes.insert(
        "kv-zone-a-1".into(),
        NodeObservation::Unreachable("no address".into()),
    );
    w.status.step = Some(StepStatus {
        action: "ScaleUp".into(),
        node: "kv-zone-a-1".into(),
        started_at: crate::time::from_unix_ms(w.now - 60_000),
    });
    let p = w.plan();
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "PodPending", message, .. } if message.contains("Insufficient memory")),
        "{:?}",
        p.activity
    );
    assert_eq!(p.problem, None, "within the deadline");
    assert_eq!(p.step.as_ref().unwrap().node, "kv-zone-a-1");
    w.now += 10 * 60_000;
    let p = w.plan();
    let problem = p.problem.as_ref().unwrap();
    assert_eq!(problem.reason, "ScaleUpStuck");
    assert!(problem.message.contains("Insufficient memory"));
    assert!(reasons(&p).contains(&"ProgressDeadlineExceeded"));
    // Reported once.
    w.status.conditions.push(crate::status::condition(
        "Degraded",
        true,
        "ScaleUpStuck",
        &problem.message,
        1,
        0,
    ));
    assert!(!reasons(&w.plan()).contains(&"ProgressDeadlineExceeded"));
}

/// Zone a mid-rollout to template h2: pod `broken` was restarted on it and
/// never became ready.
fn broken_rollout(per_zone_a: i32, broken: i32) -> World {
    let mut w = World::new(&[per_zone_a, 1, 1]);
    w.hashes = vec!["h2".into(), "h".into(), "h".into()];
    let s = w.sts_mut(0);
    s.template_hash = Some("h2".into());
    s.partition = broken;
    s.update_revision = Some("r2".into());
    s.updated_replicas = per_zone_a - broken;
    s.ready_replicas = per_zone_a - 1;
    w.status.phase = Phase::Upgrading;
    for o in 0..per_zone_a {
        let rev = if o >= broken { "r2" } else { "r1" };
        w.pods.insert(w.pod(0, o), running_pod(rev));
    }
    let pod = w.pod(0, broken);
    w.pods.insert(
        pod.clone(),
        PodObservation {
            ready: false,
            waiting: Some(("ImagePullBackOff".into(), "image not found".into())),
            ..running_pod("r2")
        },
    );
    w.nodes
        .insert(pod, NodeObservation::Unreachable("refused".into()));
    w
}

#[test]
fn a_broken_rollout_waits_and_says_why() {
    let w = broken_rollout(2, 1);
    let p = w.plan();
    assert_eq!(partitions(&p)[0], 1);
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "PodFailing", message, .. } if message.contains("ImagePullBackOff")),
        "{:?}",
        p.activity
    );
}

#[test]
fn a_newer_spec_replaces_the_broken_top_pod_first() {
    let mut w = broken_rollout(2, 1);
    w.hashes[0] = "h3".into();
    let p = w.plan();
    // Held at the broken pod, not raised to 2: the StatefulSet controller
    // replaces it with the fixed template right away.
    assert_eq!(partitions(&p)[0], 1);
    assert!(reasons(&p).contains(&"RolloutReplaced"));
    assert!(p.kube.is_empty());
    assert_eq!(
        p.step.as_ref().unwrap().action,
        "Rollout",
        "the clock restarts"
    );
}

#[test]
fn a_newer_spec_sends_a_broken_lower_pod_back_to_the_last_good_template() {
    let mut w = broken_rollout(3, 1);
    w.hashes[0] = "h3".into();
    let p = w.plan();
    assert_eq!(partitions(&p)[0], 3, "the new rollout starts from the top");
    assert_eq!(
        kube(&p),
        &[KubeAction::DeletePod {
            name: "kv-zone-a-1".into()
        }]
    );
}

#[test]
fn a_rollout_stuck_past_its_deadline_is_degraded() {
    let mut w = broken_rollout(2, 1);
    w.status.step = Some(StepStatus {
        action: "Restart".into(),
        node: "kv-zone-a-1".into(),
        started_at: crate::time::from_unix_ms(w.now - 11 * 60_000),
    });
    let p = w.plan();
    assert_eq!(p.problem.as_ref().unwrap().reason, "RolloutStuck");
}

#[test]
fn a_decommission_the_victim_never_accepted_is_cancelled_when_the_spec_scales_back() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    w.status.decommission.as_mut().unwrap().phase = "Starting".into();
    w.nodes.insert(
        "kv-zone-c-1".into(),
        NodeObservation::Unreachable("node down".into()),
    );
    let p = w.plan();
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "DecommissionNodeUnreachable", message, .. } if message.contains("set spec.replicas back"))
    );
    w.spec.replicas = 6;
    let p = w.plan();
    assert_eq!(p.decommission, None);
    assert!(reasons(&p).contains(&"DecommissionCancelled"));
    assert_eq!(replicas(&p), vec![2, 2, 2]);
}

// Bug 6: N is fixed at creation.

#[test]
fn a_replication_factor_change_is_refused_without_touching_anything() {
    let mut w = World::new(&[2, 2, 2]);
    w.status.replication_factor = Some(3);
    w.spec.replication.n = 5;
    w.spec.replication.w = 3;
    w.hashes = vec!["h2".into(); 3];
    let p = w.plan();
    assert_eq!(p.scales, None, "no rollout of the new N");
    assert!(
        matches!(&p.activity, Activity::Invalid(m) if m.contains("replication.n cannot change"))
    );
    // w and r may change.
    w.spec.replication = crate::crd::Replication { n: 3, w: 3, r: 1 };
    assert!(matches!(w.plan().activity, Activity::RollingOut { .. }));
}

// Bug 8: names another cluster claimed first.

#[test]
fn a_name_collision_is_an_invalid_spec() {
    let mut w = World::new(&[0, 0, 0]);
    w.zones = vec![None, None, None];
    w.collisions = vec![SpecError::NameCollision {
        kind: "StatefulSet",
        name: "kv-zone-a".into(),
        other: "kv-zone".into(),
    }];
    let p = w.plan();
    assert_eq!(p.scales, None, "nothing of the other cluster is touched");
    assert!(
        matches!(&p.activity, Activity::Invalid(m) if m.contains("StatefulSet kv-zone-a would also belong to KVCluster kv-zone"))
    );
}

// Bug 9: the image is recorded, not re-derived from the operator's version.

#[test]
fn the_image_is_the_recorded_one_unless_the_spec_names_one() {
    let mut spec = spec(3);
    let mut prev = KVClusterStatus::default();
    let zones = vec![Some(sts(1)), None];
    // A new cluster takes the operator's default.
    assert_eq!(resolve_image(&spec, &prev, &[None], "op:2"), "op:2");
    // A cluster from before status.image keeps what its pods run.
    assert_eq!(resolve_image(&spec, &prev, &zones, "op:2"), "ringkv:test");
    prev.image = Some("op:1".into());
    assert_eq!(
        resolve_image(&spec, &prev, &zones, "op:2"),
        "op:1",
        "an operator upgrade does not change it"
    );
    spec.image = Some("mine:3".into());
    assert_eq!(resolve_image(&spec, &prev, &zones, "op:2"), "mine:3");
}

#[test]
fn old_config_map_versions_go_once_no_rollout_needs_them() {
    let mut w = World::new(&[1, 1, 1]);
    w.config_maps = vec!["kv-config-0".into(), "kv-config-1".into()];
    let p = w.plan();
    assert_eq!(
        kube(&p),
        &[KubeAction::DeleteConfigMap {
            name: "kv-config-0".into()
        }]
    );
    // Mid-rollout a pod below the partition may restart on the old one: keep it.
    w.hashes = vec!["h2".into(); 3];
    assert!(w.plan().kube.is_empty());
}

#[test]
fn steps_are_recorded_and_cleared() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replicas = 4;
    let p = w.plan();
    let step = p.step.clone().unwrap();
    assert_eq!(
        (step.action.as_str(), step.node.as_str()),
        ("ScaleUp", "kv-zone-a-1")
    );
    assert_eq!(crate::time::to_unix_ms(&step.started_at), w.now);
    w.spec.replicas = 3;
    assert_eq!(w.plan().step, None, "nothing in flight");
    let _ = ZoneStatus::default();
}
