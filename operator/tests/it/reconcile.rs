//! Reconcile-loop tests: the real `reconcile` against the in-memory API server
//! and fake nodes, asserting the objects that end up in the API and the order
//! of Admin calls relative to StatefulSet writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use ringkv_operator::admin::AdminPool;
use ringkv_operator::controller::{Context, Settings, reconcile};
use ringkv_operator::crd::{KVCluster, KVClusterSpec, Phase};
use ringkv_operator::metrics::Metrics;
use ringkv_proto::v1 as pb;
use serde_json::{Value, json};

use crate::fake_api::{FakeApi, Step, Timeline};
use crate::fake_nodes::FakeCluster;

pub const NS: &str = "db";

pub struct Harness {
    pub api: FakeApi,
    pub nodes: FakeCluster,
    pub ctx: Arc<Context>,
    pub clock: Arc<AtomicI64>,
    pub timeline: Timeline,
    pub kvcs: Api<KVCluster>,
}

pub fn spec(replicas: i32, extra: Value) -> KVClusterSpec {
    let mut v = json!({
        "replicas": replicas,
        "zones": [
            {"name": "zone-a", "nodeLabelValue": "zone-a"},
            {"name": "zone-b", "nodeLabelValue": "zone-b"},
            {"name": "zone-c", "nodeLabelValue": "zone-c"}
        ],
        "repair": {"interval": "off"}
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

impl Harness {
    pub async fn new(spec: KVClusterSpec) -> Self {
        let timeline = Timeline::default();
        let api = FakeApi::new(timeline.clone());
        // The class the fake volumes are bound with.
        api.insert(
            "apis/storage.k8s.io/v1",
            "storageclasses",
            "",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "standard"}, "provisioner": "fake",
                   "allowVolumeExpansion": true}),
        );
        let pods: Vec<String> = ["zone-a", "zone-b", "zone-c"]
            .iter()
            .flat_map(|z| (0..3).map(move |o| format!("kv-{z}-{o}")))
            .collect();
        let n = spec.replication.n as usize;
        let nodes = FakeCluster::start(&pods, n, timeline.clone()).await;
        let clock = Arc::new(AtomicI64::new(1_704_067_200_000)); // 2024-01-01, the fake creation time
        let ctx = Self::context(&api, &nodes, &clock);
        let kvcs: Api<KVCluster> = Api::namespaced(api.client(), NS);
        kvcs.create(&PostParams::default(), &KVCluster::new("kv", spec))
            .await
            .unwrap();
        Self {
            api,
            nodes,
            ctx,
            clock,
            timeline,
            kvcs,
        }
    }

    fn context(api: &FakeApi, nodes: &FakeCluster, clock: &Arc<AtomicI64>) -> Arc<Context> {
        Self::context_with_image(api, nodes, clock, "ringkv:test")
    }

    pub fn context_with_image(
        api: &FakeApi,
        nodes: &FakeCluster,
        clock: &Arc<AtomicI64>,
        default_image: &str,
    ) -> Arc<Context> {
        let admin = AdminPool::with_resolver(nodes.resolver(), Duration::from_secs(2));
        let settings = Settings {
            default_image: default_image.into(),
            ..Settings::default()
        };
        let mut ctx = Context::new(api.client(), admin, settings, Arc::new(Metrics::default()));
        let c = clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        Arc::new(ctx)
    }

    /// A new operator process: fresh clients, caches and metrics.
    pub fn restart_operator(&mut self) {
        self.ctx = Self::context(&self.api, &self.nodes, &self.clock);
    }

    pub async fn get(&self) -> Option<KVCluster> {
        self.kvcs.get_opt("kv").await.unwrap()
    }

    /// One reconcile of the current object, then one tick of the world.
    pub async fn tick(&self) {
        if let Some(kvc) = self.get().await {
            reconcile(Arc::new(kvc), self.ctx.clone())
                .await
                .expect("reconcile failed");
        }
        self.nodes.step(&self.api, NS);
        self.clock.fetch_add(5_000, Ordering::SeqCst);
    }

    /// Ticks until `done` holds for the cluster (or it is gone, if `done(None)`).
    pub async fn run_until(
        &self,
        max: usize,
        done: impl Fn(Option<&KVCluster>) -> bool,
    ) -> Option<KVCluster> {
        for _ in 0..max {
            self.tick().await;
            let kvc = self.get().await;
            if done(kvc.as_ref()) {
                return kvc;
            }
        }
        let kvc = self.get().await;
        panic!(
            "not done after {max} ticks; status: {:#?}\nviolations: {:?}",
            kvc.and_then(|k| k.status),
            self.nodes.ring.lock().unwrap().violations
        );
    }

    pub async fn set_spec(&self, patch: Value) {
        self.kvcs
            .patch(
                "kv",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": patch })),
            )
            .await
            .unwrap();
    }

    pub fn sts_replicas(&self) -> Vec<i64> {
        ["zone-a", "zone-b", "zone-c"]
            .iter()
            .map(|z| {
                self.api
                    .get("statefulsets", NS, &format!("kv-{z}"))
                    .and_then(|s| s.pointer("/spec/replicas").and_then(Value::as_i64))
                    .unwrap_or(-1)
            })
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.nodes.ring.lock().unwrap().violations.clone()
    }

    /// (type, reason, note, related object name) of every Event, one entry per
    /// occurrence (repeats of the same event are a series on one object).
    pub fn events(&self) -> Vec<(String, String, String, String)> {
        self.api
            .list("events", NS)
            .iter()
            .flat_map(|e| {
                let s = |p: &str| {
                    e.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let count = e
                    .pointer("/series/count")
                    .and_then(Value::as_u64)
                    .unwrap_or(1) as usize;
                std::iter::repeat_n(
                    (s("/type"), s("/reason"), s("/note"), s("/related/name")),
                    count,
                )
            })
            .collect()
    }
}

pub fn settled(target: i32) -> impl Fn(Option<&KVCluster>) -> bool {
    move |k| {
        k.and_then(|k| k.status.as_ref()).is_some_and(|s| {
            s.phase == Phase::Running
                && s.replicas == target
                && s.ready_replicas == target
                && s.decommission.is_none()
        })
    }
}

pub fn condition<'a>(
    k: &'a KVCluster,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
}

/// For every StatefulSet write that lowered replicas, the pod it removed must
/// have been decommissioned (an Admin Decommission call) before that write.
pub fn assert_decommission_before_scale_down(timeline: &[Step]) -> usize {
    let mut last: std::collections::BTreeMap<String, i64> = Default::default();
    let mut checked = 0;
    for (i, step) in timeline.iter().enumerate() {
        if let Step::Kube {
            verb,
            plural,
            name,
            replicas: Some(r),
        } = step
            && plural == "statefulsets"
            && verb == "PATCH"
        {
            let prev = last.insert(name.clone(), *r);
            if let Some(prev) = prev
                && *r < prev
            {
                let victim = format!("{name}-{r}");
                let decommissioned = timeline[..i].iter().any(
                    |s| matches!(s, Step::Admin { node, call: "Decommission" } if *node == victim),
                );
                assert!(
                    decommissioned,
                    "{name} lowered to {r} at step {i} before {victim} was decommissioned"
                );
                assert_eq!(prev - r, 1, "one node at a time");
                checked += 1;
            }
        }
    }
    checked
}

#[tokio::test]
async fn create_then_scale_3_to_6_to_3_without_losing_a_node() {
    let h = Harness::new(spec(3, json!({}))).await;
    let kvc = h.run_until(15, settled(3)).await.unwrap();

    // The objects in the API (and no finalizer: deletion never waits for the operator).
    assert_eq!(kvc.metadata.finalizers, None);
    let uid = kvc.metadata.uid.clone().unwrap();
    for (plural, name) in [
        ("statefulsets", "kv-zone-a"),
        ("statefulsets", "kv-zone-b"),
        ("statefulsets", "kv-zone-c"),
        ("services", "kv"),
        ("services", "kv-peers"),
        ("serviceaccounts", "kv-node"),
        ("poddisruptionbudgets", "kv"),
    ] {
        let o = h
            .api
            .get(plural, NS, name)
            .unwrap_or_else(|| panic!("{plural}/{name} missing"));
        assert_eq!(
            o.pointer("/metadata/ownerReferences/0/uid")
                .and_then(Value::as_str),
            Some(uid.as_str()),
            "{plural}/{name}"
        );
        assert_eq!(
            o.pointer("/metadata/ownerReferences/0/controller"),
            Some(&json!(true))
        );
    }
    let cms = h.api.list("configmaps", NS);
    assert_eq!(cms.len(), 1, "one configuration version");
    assert!(
        cms[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("kv-config-")
    );
    assert_eq!(h.sts_replicas(), vec![1, 1, 1]);
    let sts = h.api.get("statefulsets", NS, "kv-zone-b").unwrap();
    assert_eq!(
        sts.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("ringkv:test"))
    );
    assert_eq!(
        h.api
            .get("poddisruptionbudgets", NS, "kv")
            .unwrap()
            .pointer("/spec/maxUnavailable"),
        Some(&json!(1))
    );
    let st = kvc.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, kvc.metadata.generation);
    assert_eq!(st.replication, "3/2/2");
    assert_eq!(st.members.len(), 3);
    assert!(st.members.iter().all(|m| m.state == "normal"));
    assert_eq!(condition(&kvc, "Available").status, "True");
    assert_eq!(condition(&kvc, "Progressing").status, "False");
    assert_eq!(condition(&kvc, "Degraded").status, "False");
    let reasons: Vec<_> = h.events().into_iter().map(|e| e.1).collect();
    assert!(
        reasons.contains(&"Creating".to_string()) && reasons.contains(&"Created".to_string()),
        "{reasons:?}"
    );

    // 3 -> 6: one node at a time, zone by zone.
    h.set_spec(json!({"replicas": 6})).await;
    let kvc = h.run_until(40, settled(6)).await.unwrap();
    assert_eq!(h.sts_replicas(), vec![2, 2, 2]);
    assert_eq!(kvc.status.as_ref().unwrap().members.len(), 6);
    let ups: Vec<i64> = h
        .timeline
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Step::Kube {
                verb,
                plural,
                replicas: Some(r),
                ..
            } if verb == "PATCH" && plural == "statefulsets" => Some(*r),
            _ => None,
        })
        .collect();
    assert!(ups.iter().all(|r| *r <= 2));

    // 6 -> 3: decommission strictly before each replica drop.
    h.set_spec(json!({"replicas": 3})).await;
    let kvc = h.run_until(60, settled(3)).await.unwrap();
    assert_eq!(h.sts_replicas(), vec![1, 1, 1]);
    let timeline = h.timeline.lock().unwrap().clone();
    assert_eq!(assert_decommission_before_scale_down(&timeline), 3);
    assert_eq!(h.violations(), Vec::<String>::new());
    let reasons: Vec<_> = h.events().into_iter().map(|e| e.1).collect();
    for r in [
        "ScalingUp",
        "ScalingComplete",
        "DecommissionStarted",
        "NodeRemoved",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "missing event {r}: {reasons:?}"
        );
    }
    assert_eq!(
        kvc.status
            .unwrap()
            .zones
            .iter()
            .map(|z| z.replicas)
            .collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
}

#[tokio::test]
async fn operator_restart_mid_decommission_finishes_the_same_node() {
    let mut h = Harness::new(spec(6, json!({}))).await;
    h.run_until(20, settled(6)).await;
    h.set_spec(json!({"replicas": 5})).await;
    // Run until the victim is streaming.
    h.run_until(10, |k| {
        k.and_then(|k| k.status.as_ref()).is_some_and(|s| {
            s.decommission
                .as_ref()
                .is_some_and(|d| d.phase == "Streaming")
        })
    })
    .await;
    assert_eq!(h.nodes.state("kv-zone-c-1"), Some(pb::NodeState::Leaving));

    // The operator dies, and the status write recording the decommission is lost.
    h.restart_operator();
    h.api.update("kvclusters", NS, "kv", |o| {
        o["status"].as_object_mut().unwrap().remove("decommission");
    });

    h.run_until(20, settled(5)).await;
    assert_eq!(h.sts_replicas(), vec![2, 2, 1]);
    let timeline = h.timeline.lock().unwrap().clone();
    assert_eq!(assert_decommission_before_scale_down(&timeline), 1);
    let victims: std::collections::BTreeSet<_> = timeline
        .iter()
        .filter_map(|s| match s {
            Step::Admin {
                node,
                call: "Decommission",
            } => Some(node.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        victims.into_iter().collect::<Vec<_>>(),
        vec!["kv-zone-c-1".to_string()],
        "no second victim"
    );
    assert_eq!(h.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_decommission_is_retried_and_warned_about() {
    let h = Harness::new(spec(4, json!({}))).await;
    h.run_until(20, settled(4)).await;
    h.nodes.ring.lock().unwrap().fail_decommission_once = Some("stream broke".into());
    h.set_spec(json!({"replicas": 3})).await;
    h.run_until(30, settled(3)).await;
    assert_eq!(h.violations(), Vec::<String>::new());
    let warnings: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| e.0 == "Warning")
        .map(|e| e.1)
        .collect();
    assert!(
        warnings.contains(&"DecommissionFailed".to_string()),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_refused_decommission_keeps_replicas_and_says_why() {
    let h = Harness::new(spec(4, json!({}))).await;
    h.run_until(20, settled(4)).await;
    h.nodes.ring.lock().unwrap().refuse_decommission = Some("ranges have no other replica".into());
    h.set_spec(json!({"replicas": 3})).await;
    let kvc = h
        .run_until(5, |k| {
            k.is_some_and(|k| {
                k.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.reason == "DecommissionRefused")
                })
            })
        })
        .await
        .unwrap();
    let c = condition(&kvc, "Progressing");
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("ranges have no other replica"),
        "{}",
        c.message
    );
    for _ in 0..3 {
        h.tick().await;
    }
    assert_eq!(
        h.sts_replicas(),
        vec![2, 1, 1],
        "never lowered while refused"
    );
    assert!(
        h.events()
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "DecommissionRefused")
    );
    assert_eq!(h.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn image_change_restarts_one_pod_at_a_time() {
    let h = Harness::new(spec(6, json!({}))).await;
    h.run_until(20, settled(6)).await;
    h.set_spec(json!({"image": "ringkv:v2"})).await;
    // Wait for every pod on the new template.
    for _ in 0..80 {
        h.tick().await;
        let done = ["zone-a", "zone-b", "zone-c"].iter().all(|z| {
            let s = h.api.get("statefulsets", NS, &format!("kv-{z}")).unwrap();
            s.pointer("/status/currentRevision") == s.pointer("/status/updateRevision")
                && s.pointer("/status/updatedReplicas") == Some(&json!(2))
        }) && h.get().await.unwrap().status.unwrap().phase == Phase::Running;
        if done {
            break;
        }
    }
    for z in ["zone-a", "zone-b", "zone-c"] {
        let s = h.api.get("statefulsets", NS, &format!("kv-{z}")).unwrap();
        assert_eq!(
            s.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("ringkv:v2"))
        );
        assert_eq!(s.pointer("/status/updatedReplicas"), Some(&json!(2)), "{z}");
        assert_eq!(
            s.pointer("/spec/updateStrategy/rollingUpdate/partition"),
            Some(&json!(0))
        );
    }
    let ring = h.nodes.ring.lock().unwrap();
    assert!(
        ring.nodes.values().all(|n| n.restarts == 1),
        "every pod restarted exactly once"
    );
    assert!(
        ring.max_unready <= 1,
        "at most one pod down at a time, saw {}",
        ring.max_unready
    );
    drop(ring);
    let reasons: Vec<_> = h.events().into_iter().map(|e| e.1).collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "RestartingNode").count(),
        6,
        "{reasons:?}"
    );
    let restarted: std::collections::BTreeSet<_> = h
        .events()
        .into_iter()
        .filter(|e| e.1 == "RestartingNode")
        .map(|e| e.3)
        .collect();
    assert_eq!(
        restarted.len(),
        6,
        "one event per pod, naming it: {restarted:?}"
    );
    assert!(reasons.contains(&"RolloutComplete".to_string()));
    assert_eq!(h.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_invalid_spec_creates_nothing_and_reports_once() {
    // As if the API server had not evaluated the CEL rules.
    let mut s = spec(3, json!({}));
    s.replication.w = 5;
    let h = Harness::new(s).await;
    for _ in 0..4 {
        h.tick().await;
    }
    assert!(h.api.list("statefulsets", NS).is_empty());
    assert!(h.api.list("services", NS).is_empty());
    let kvc = h.get().await.unwrap();
    let st = kvc.status.as_ref().unwrap();
    assert_eq!(st.phase, Phase::Invalid);
    let c = condition(&kvc, "Degraded");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        c.message
            .contains("replication.w (5) must not exceed replication.n (3)")
    );
    let warnings: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| e.1 == "InvalidSpec")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");

    // Fixing the spec recovers.
    h.set_spec(json!({"replication": {"n": 3, "w": 2, "r": 2}}))
        .await;
    h.run_until(15, settled(3)).await;
}

#[tokio::test]
async fn scheduled_repair_runs_one_node_at_a_time_and_stamps_zones() {
    let h = Harness::new(spec(3, json!({"repair": {"interval": "1h"}}))).await;
    h.run_until(15, settled(3)).await;
    assert!(
        !h.timeline
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, Step::Admin { call: "Repair", .. }))
    );
    h.clock.fetch_add(3_600_000, Ordering::SeqCst);
    let kvc = h
        .run_until(30, |k| {
            k.and_then(|k| k.status.as_ref())
                .is_some_and(|s| s.zones.iter().all(|z| z.last_repair_time.is_some()))
        })
        .await
        .unwrap();
    let repairs: Vec<String> = h
        .timeline
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Step::Admin {
                node,
                call: "Repair",
            } => Some(node.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(repairs, vec!["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"]);
    assert!(kvc.status.unwrap().repair.is_none());
    let reasons: Vec<_> = h.events().into_iter().map(|e| e.1).collect();
    assert_eq!(reasons.iter().filter(|r| *r == "ZoneRepaired").count(), 3);
}

#[tokio::test]
async fn api_errors_surface_as_reconcile_errors() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.tick().await; // adds the finalizer
    h.api.fail("statefulsets", 500);
    let kvc = h.get().await.unwrap();
    let err = reconcile(Arc::new(kvc), h.ctx.clone()).await.unwrap_err();
    assert_eq!(err.kind(), "kube");
    h.api.fail("statefulsets", 0);
    h.run_until(15, settled(3)).await;
}

/// The whole runtime: `controller::run` watching the fake API (KVClusters and
/// owned objects), reconciling on changes, and stopping on the shutdown signal.
#[tokio::test]
async fn the_controller_runtime_reconciles_on_watch_events_and_shuts_down() {
    let h = Harness::new(spec(3, json!({}))).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(ringkv_operator::controller::run(
        h.ctx.clone(),
        Some(NS.into()),
        async {
            let _ = stopped.await;
        },
    ));
    let converge = |target: i32| {
        let h = &h;
        async move {
            for _ in 0..300 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                h.nodes.step(&h.api, NS);
                h.clock.fetch_add(5_000, Ordering::SeqCst);
                if settled(target)(h.get().await.as_ref()) {
                    return;
                }
            }
            panic!(
                "controller did not converge to {target}: {:#?}",
                h.get().await.and_then(|k| k.status)
            );
        }
    };
    converge(3).await;
    h.set_spec(json!({"replicas": 4})).await;
    converge(4).await;
    assert_eq!(h.sts_replicas(), vec![2, 1, 1]);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("graceful shutdown")
        .unwrap();
    let m = h.ctx.metrics.encode();
    assert!(
        m.contains("ringkv_operator_reconciles_total{result=\"ok\"}"),
        "{m}"
    );
}
