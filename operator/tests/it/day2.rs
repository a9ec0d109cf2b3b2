//! Day-2 reconcile tests against the in-memory API and fake nodes: each one
//! reproduces a way the operator used to wedge, lose data or surprise, and
//! fails without its fix.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use ringkv_operator::controller::reconcile;
use ringkv_operator::crd::{KVCluster, Phase};
use ringkv_operator::metrics::ResultLabels;
use serde_json::{Value, json};

use crate::fake_api::Step;
use crate::reconcile::{Harness, NS, condition, settled, spec};

fn vct_size(h: &Harness, zone: &str) -> String {
    h.api
        .get("statefulsets", NS, &format!("kv-{zone}"))
        .and_then(|s| {
            s.pointer("/spec/volumeClaimTemplates/0/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn reasons(h: &Harness) -> Vec<String> {
    h.events().into_iter().map(|e| e.1).collect()
}

fn degraded_reason(k: Option<&KVCluster>) -> Option<String> {
    let k = k?;
    let c = condition(k, "Degraded");
    (c.status == "True").then(|| c.reason.clone())
}

/// Bug 1: a bigger `storage.size` used to fail every apply (the volume claim
/// template is immutable) and stall everything with a stale status.
#[tokio::test]
async fn a_storage_expansion_grows_every_volume_without_restarting_a_pod() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    let volumes = h.nodes.ring.lock().unwrap().volumes.clone();
    assert_eq!(volumes.len(), 3);
    h.set_spec(json!({"storage": {"size": "20Gi"}})).await;
    h.run_until(30, |k| {
        settled(3)(k)
            && ["zone-a", "zone-b", "zone-c"]
                .iter()
                .all(|z| vct_size(&h, z) == "20Gi")
    })
    .await;
    for pvc in volumes.keys() {
        let obj = h.api.get("persistentvolumeclaims", NS, pvc).unwrap();
        assert_eq!(
            obj.pointer("/spec/resources/requests/storage"),
            Some(&json!("20Gi")),
            "{pvc}"
        );
    }
    let ring = h.nodes.ring.lock().unwrap();
    assert_eq!(ring.volumes, volumes, "the same volumes, grown");
    assert!(
        ring.nodes.values().all(|n| n.restarts == 0),
        "no pod restarted"
    );
    drop(ring);
    let r = reasons(&h);
    for want in [
        "VolumeExpanding",
        "StatefulSetRecreating",
        "StatefulSetRecreated",
    ] {
        assert!(r.iter().any(|x| x == want), "no {want}: {r:?}");
    }
    assert_eq!(h.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn storage_that_cannot_grow_is_degraded_and_the_cluster_still_scales() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.api.insert(
        "apis/storage.k8s.io/v1",
        "storageclasses",
        "",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "standard"}, "provisioner": "fake",
               "allowVolumeExpansion": false}),
    );
    h.run_until(15, settled(3)).await;
    h.set_spec(json!({"storage": {"size": "20Gi"}, "replicas": 4}))
        .await;
    let kvc = h
        .run_until(30, |k| {
            k.and_then(|k| k.status.as_ref())
                .is_some_and(|s| s.ready_replicas == 4 && s.step.is_none())
                && degraded_reason(k).as_deref() == Some("StorageExpansionUnsupported")
        })
        .await
        .unwrap();
    assert!(
        condition(&kvc, "Degraded")
            .message
            .contains("allowVolumeExpansion")
    );
    assert_eq!(
        vct_size(&h, "zone-a"),
        "10Gi",
        "the template keeps the size"
    );
    assert_eq!(h.sts_replicas(), vec![2, 1, 1]);
}

/// Bug 1: any failed write shows up in status with the API server's message.
#[tokio::test]
async fn a_failed_apply_is_degraded_with_the_api_error() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    h.set_spec(json!({"replication": {"n": 3, "w": 3, "r": 2}}))
        .await;
    h.api.fail("poddisruptionbudgets", 422);
    let kvc = h.get().await.unwrap();
    let err = reconcile(Arc::new(kvc), h.ctx.clone()).await.unwrap_err();
    assert_eq!(err.kind(), "kube");
    let kvc = h.get().await.unwrap();
    let c = condition(&kvc, "Degraded");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ApplyFailed")
    );
    assert!(c.message.contains("injected failure"), "{}", c.message);
    assert_eq!(
        kvc.status.as_ref().unwrap().observed_generation,
        kvc.metadata.generation,
        "the status is current, not stale"
    );
    assert!(h.events().iter().any(|e| e.1 == "ApplyFailed"));
    h.api.fail("poddisruptionbudgets", 0);
    h.run_until(60, |k| settled(3)(k) && degraded_reason(k).is_none())
        .await;
}

/// Bug 2: `kubectl scale sts` used to drop the node's volume and the operator
/// grew the zone back with an empty one.
#[tokio::test]
async fn a_statefulset_scaled_by_hand_is_restored_and_keeps_its_volume() {
    let h = Harness::new(spec(6, json!({}))).await;
    h.run_until(25, settled(6)).await;
    let before = h.nodes.ring.lock().unwrap().volumes["data-kv-zone-c-1"];
    // Someone scales a StatefulSet behind the operator's back.
    h.nodes.ring.lock().unwrap().allow_removal = true;
    let sts: Api<StatefulSet> = Api::namespaced(h.api.client(), NS);
    sts.patch(
        "kv-zone-c",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    h.nodes.step(&h.api, NS);
    assert!(h.nodes.state("kv-zone-c-1").is_none(), "its pod is gone");
    h.nodes.ring.lock().unwrap().allow_removal = false;
    h.run_until(20, settled(6)).await;
    assert_eq!(h.sts_replicas(), vec![2, 2, 2]);
    assert_eq!(
        h.nodes.ring.lock().unwrap().volumes["data-kv-zone-c-1"],
        before,
        "the pod came back on its own volume"
    );
    assert!(reasons(&h).iter().any(|r| r == "DriftReverted"));
    let decommissions = h
        .timeline
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::Admin {
                    call: "Decommission",
                    ..
                }
            )
        })
        .count();
    assert_eq!(decommissions, 0);
}

/// Bug 2: a decommissioned node's volume is never handed to a later node.
#[tokio::test]
async fn a_departed_nodes_volume_is_not_reused_by_a_new_node() {
    let h = Harness::new(spec(4, json!({}))).await;
    h.run_until(20, settled(4)).await;
    let old = h.nodes.ring.lock().unwrap().volumes["data-kv-zone-a-1"];
    h.set_spec(json!({"replicas": 3})).await;
    h.run_until(30, settled(3)).await;
    let pvc = h
        .api
        .get("persistentvolumeclaims", NS, "data-kv-zone-a-1")
        .unwrap();
    assert!(
        pvc.pointer("/metadata/annotations/ringkv.io~1decommissioned-at")
            .is_some(),
        "Retain keeps it, marked"
    );
    h.set_spec(json!({"replicas": 4})).await;
    h.run_until(20, settled(4)).await;
    let new = h.nodes.ring.lock().unwrap().volumes["data-kv-zone-a-1"];
    assert_ne!(old, new, "the new node got a fresh volume");
    assert_eq!(h.violations(), Vec::<String>::new());
}

/// Bug 3: a scale-up pod that cannot be scheduled used to block everything.
#[tokio::test]
async fn a_scale_up_that_cannot_schedule_is_reported_and_can_be_undone() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    h.nodes
        .ring
        .lock()
        .unwrap()
        .unschedulable
        .push("kv-zone-a-1".into());
    h.set_spec(json!({"replicas": 4})).await;
    let kvc = h
        .run_until(10, |k| {
            k.is_some_and(|k| condition(k, "Progressing").reason == "PodPending")
        })
        .await
        .unwrap();
    assert!(
        condition(&kvc, "Progressing")
            .message
            .contains("Insufficient memory")
    );
    h.clock.fetch_add(11 * 60_000, Ordering::SeqCst);
    h.run_until(3, |k| degraded_reason(k).as_deref() == Some("ScaleUpStuck"))
        .await;
    // The way out: scale back. The pod never joined, so no decommission.
    h.set_spec(json!({"replicas": 3})).await;
    h.run_until(15, settled(3)).await;
    assert_eq!(h.sts_replicas(), vec![1, 1, 1]);
    assert!(!h.timeline.lock().unwrap().iter().any(|s| matches!(
        s,
        Step::Admin {
            call: "Decommission",
            ..
        }
    )));
    assert!(h.api.get("pods", NS, "kv-zone-a-1").is_none());
    assert_eq!(h.violations(), Vec::<String>::new());
}

/// Bug 3: a rollout to a bad image used to hold the partition so the fixed
/// image never rolled out.
#[tokio::test]
async fn a_fixed_image_replaces_a_rollout_that_never_became_healthy() {
    let h = Harness::new(spec(6, json!({}))).await;
    h.run_until(25, settled(6)).await;
    h.nodes
        .ring
        .lock()
        .unwrap()
        .bad_images
        .push("ringkv:bad".into());
    h.set_spec(json!({"image": "ringkv:bad"})).await;
    let kvc = h
        .run_until(15, |k| {
            k.is_some_and(|k| condition(k, "Progressing").reason == "PodFailing")
        })
        .await
        .unwrap();
    assert!(
        condition(&kvc, "Progressing")
            .message
            .contains("ImagePullBackOff")
    );
    for _ in 0..5 {
        h.tick().await;
    }
    let bad = |h: &Harness| {
        h.nodes
            .ring
            .lock()
            .unwrap()
            .nodes
            .values()
            .filter(|n| n.image == "ringkv:bad")
            .count()
    };
    assert_eq!(bad(&h), 1, "the rollout stopped at the first broken pod");
    h.set_spec(json!({"image": "ringkv:v3"})).await;
    h.run_until(80, |k| {
        settled(6)(k)
            && h.nodes
                .ring
                .lock()
                .unwrap()
                .nodes
                .values()
                .all(|n| n.image == "ringkv:v3")
    })
    .await;
    assert!(reasons(&h).iter().any(|r| r == "RolloutReplaced"));
    assert!(h.nodes.ring.lock().unwrap().max_unready <= 1);
    assert_eq!(h.violations(), Vec::<String>::new());
}

/// Bug 4: a reconcile of a settled cluster writes nothing (it used to
/// re-apply 7+Z objects every time, each a watch event for the next one).
#[tokio::test]
async fn a_settled_cluster_is_reconciled_without_writes() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    h.tick().await;
    h.timeline.lock().unwrap().clear();
    for _ in 0..3 {
        let kvc = h.get().await.unwrap();
        reconcile(Arc::new(kvc), h.ctx.clone()).await.unwrap();
    }
    let writes: Vec<Step> = h
        .timeline
        .lock()
        .unwrap()
        .iter()
        .filter(|s| matches!(s, Step::Kube { .. }))
        .cloned()
        .collect();
    assert_eq!(writes, Vec::<Step>::new());
}

/// Bug 4: the operator's own status writes do not wake the controller.
#[tokio::test]
async fn status_writes_do_not_trigger_reconciles() {
    let h = Harness::new(spec(3, json!({}))).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(ringkv_operator::controller::run(
        h.ctx.clone(),
        Some(NS.into()),
        async {
            let _ = stopped.await;
        },
    ));
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.nodes.step(&h.api, NS);
        h.clock.fetch_add(5_000, Ordering::SeqCst);
        if settled(3)(h.get().await.as_ref()) {
            break;
        }
    }
    assert!(settled(3)(h.get().await.as_ref()));
    let count = || {
        h.ctx
            .metrics
            .reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .get()
    };
    // Quiet: let requeues still pending from the scaling run out (at most
    // 5 s); the next one is then the idle requeue, 30 s away.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let before = count();
    for i in 0..5 {
        h.api.update("kvclusters", NS, "kv", |o| {
            o["status"]["zoneSummary"] = json!(format!("written elsewhere {i}"));
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(), before, "status-only changes must not reconcile");
    // A spec change does.
    h.set_spec(json!({"replicas": 4})).await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if count() > before {
            break;
        }
    }
    assert!(count() > before, "a spec change reconciles");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
}

/// Bug 5: deletion never waits for the operator; an old finalizer is removed.
#[tokio::test]
async fn deletion_never_waits_for_the_operator() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    h.kvcs.delete("kv", &DeleteParams::default()).await.unwrap();
    assert!(h.get().await.is_none(), "gone at once, operator or not");

    // A cluster an older operator version put its finalizer on.
    let mut kvc = KVCluster::new("old", spec(3, json!({})));
    kvc.metadata.finalizers = Some(vec!["ringkv.io/cleanup".into()]);
    h.kvcs.create(&PostParams::default(), &kvc).await.unwrap();
    let kvc = h.kvcs.get("old").await.unwrap();
    reconcile(Arc::new(kvc), h.ctx.clone()).await.unwrap();
    let kvc = h.kvcs.get("old").await.unwrap();
    assert!(kvc.metadata.finalizers.unwrap_or_default().is_empty());
    h.kvcs
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    assert!(h.kvcs.get_opt("old").await.unwrap().is_none());
}

/// Bug 8: `kv` with zone `zone-a` and `kv-zone` with zone `a` both want
/// StatefulSet `kv-zone-a`; the younger cluster is refused and touches nothing.
#[tokio::test]
async fn a_cluster_whose_names_are_taken_is_refused() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    let mut s = spec(3, json!({}));
    s.zones = vec![serde_json::from_value(json!({"name": "a", "nodeLabelValue": "a"})).unwrap()];
    h.kvcs
        .create(&PostParams::default(), &KVCluster::new("kv-zone", s))
        .await
        .unwrap();
    let before = h.api.get("statefulsets", NS, "kv-zone-a").unwrap();
    let other = h.kvcs.get("kv-zone").await.unwrap();
    reconcile(Arc::new(other), h.ctx.clone()).await.unwrap();
    let other = h.kvcs.get("kv-zone").await.unwrap();
    assert_eq!(other.status.as_ref().unwrap().phase, Phase::Invalid);
    let c = condition(&other, "Degraded");
    assert_eq!(c.reason, "InvalidSpec");
    assert!(
        c.message
            .contains("StatefulSet kv-zone-a would also belong to KVCluster kv"),
        "{}",
        c.message
    );
    assert_eq!(h.api.get("statefulsets", NS, "kv-zone-a").unwrap(), before);
    // The older cluster is not disturbed.
    h.tick().await;
    assert!(settled(3)(h.get().await.as_ref()));
}

/// Bug 9: upgrading the operator used to restart every cluster without `spec.image`.
#[tokio::test]
async fn an_operator_upgrade_does_not_restart_the_cluster() {
    let mut h = Harness::new(spec(3, json!({}))).await;
    let kvc = h.run_until(15, settled(3)).await.unwrap();
    assert_eq!(kvc.status.unwrap().image.as_deref(), Some("ringkv:test"));
    h.ctx = Harness::context_with_image(&h.api, &h.nodes, &h.clock, "ringkv:next");
    for _ in 0..5 {
        h.tick().await;
    }
    let sts = h.api.get("statefulsets", NS, "kv-zone-a").unwrap();
    assert_eq!(
        sts.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("ringkv:test"))
    );
    assert!(
        h.nodes
            .ring
            .lock()
            .unwrap()
            .nodes
            .values()
            .all(|n| n.restarts == 0)
    );
    assert!(!reasons(&h).iter().any(|r| r == "RolloutStarted"));
    // Naming an image is what rolls the cluster.
    h.set_spec(json!({"image": "ringkv:next"})).await;
    h.tick().await;
    assert!(reasons(&h).iter().any(|r| r == "RolloutStarted"));
    h.restart_operator();
}
