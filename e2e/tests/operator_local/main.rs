//! The operator driving real nodes, without Kubernetes: the kind suite's
//! scenario on this machine.
//!
//! The real controller runtime (`controller::run`: watches, requeues,
//! reconciles) runs against the in-memory API server of the operator's own
//! tests (`operator/tests/it/fake_api.rs`). A small local
//! "kubelet" plays the StatefulSet controller, the kubelet and cluster DNS:
//! for every StatefulSet ordinal below `spec.replicas` it runs a real node
//! process from the pod template, exactly as the container would run —
//! the template's command and env (field refs and `$(VAR)`s expanded), the
//! ConfigMap the operator wrote mounted as the node's config file, the PVC a
//! directory that survives pod restarts. What differs, and why:
//! - pods share loopback, so every node listens on port 0 (env overrides the
//!   config file's fixed ports) and the peer Service's DNS name resolves to
//!   the gossip addresses the running pods published;
//! - readiness is the template's readiness probe path, fetched once per tick;
//! - a pod removed by a scale-down gets its preStop (Drain) and SIGTERM; the
//!   kubelet records it as a violation if the node had not reached LEFT —
//!   that pod's data would be lost in a real cluster.
//!
//! Scenario: a 3-zone KVCluster is created, two writers write through pods
//! that stay, the cluster scales 3 -> 6, a pod is killed mid-traffic (and
//! restarted on its volume), a repair cycle is due, the cluster scales back
//! 6 -> 3, and then every acknowledged write must be readable.
//!
//! It prints the operator's reconcile rate while nodes are decommissioned
//! (reconciles per minute, from the operator's own counter): a status write
//! must not trigger the next reconcile.

#[allow(dead_code)]
#[path = "../../../operator/tests/it/fake_api.rs"]
mod fake_api;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_api::{FakeApi, Timeline};
use kube::api::{Api, Patch, PatchParams, PostParams};
use ringkv_client::{Admin, Client};
use ringkv_e2e::history::History;
use ringkv_e2e::verify;
use ringkv_e2e::workload::Writer;
use ringkv_operator::admin::AdminPool;
use ringkv_operator::controller::{self, Context, Settings};
use ringkv_operator::crd::{KVCluster, Phase};
use ringkv_operator::metrics::{AdminLabels, Metrics, ResultLabels};
use serde_json::{Value, json};

mod kubelet;
use kubelet::{Kubelet, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");
const NS: &str = "db";
const NAME: &str = "kv";
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// `ringkv_*` node metric names (not the operator's) the chart's alert
/// rules and Grafana dashboard use.
fn node_metrics_used_by_the_chart() -> std::collections::BTreeSet<String> {
    let files =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ringkv-operator/files");
    let mut text = String::new();
    for f in ["prometheus-rules.yaml", "ringkv-dashboard.json"] {
        text.push_str(&std::fs::read_to_string(files.join(f)).unwrap());
    }
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("ringkv_") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with("ringkv_operator_") {
            out.insert(name);
        }
    }
    out
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct World {
    api: FakeApi,
    kubelet: Kubelet,
    ctx: Arc<Context>,
    /// Stops the controller runtime.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
    /// Added to the operator's clock, to make a repair cycle due now.
    clock_offset: Arc<AtomicI64>,
    kvcs: Api<KVCluster>,
}

impl World {
    async fn new(spec: Value) -> Self {
        let api = FakeApi::new(Timeline::default());
        let kubelet = Kubelet::new();
        let admin = AdminPool::with_resolver(kubelet.resolver(), Duration::from_secs(5));
        let settings = Settings {
            default_image: "ringkv:local".into(),
            ..Settings::default()
        };
        let mut ctx = Context::new(api.client(), admin, settings, Arc::new(Metrics::default()));
        let clock_offset = Arc::new(AtomicI64::new(0));
        let off = clock_offset.clone();
        ctx.clock = Arc::new(move || unix_ms() + off.load(Ordering::SeqCst));
        let kvcs: Api<KVCluster> = Api::namespaced(api.client(), NS);
        let kvc: KVCluster =
            serde_json::from_value(json!({"metadata": {"name": NAME}, "spec": spec})).unwrap();
        kvcs.create(&PostParams::default(), &kvc).await.unwrap();
        let ctx = Arc::new(ctx);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controller = tokio::spawn(controller::run(ctx.clone(), Some(NS.into()), async {
            let _ = stopped.await;
        }));
        World {
            api,
            kubelet,
            ctx,
            stop: Some(stop),
            controller: Some(controller),
            clock_offset,
            kvcs,
        }
    }

    /// Reconciles so far (ok and failed), from the operator's own counter.
    fn reconciles(&self) -> u64 {
        ["ok", "error"]
            .iter()
            .map(|&result| {
                self.ctx
                    .metrics
                    .reconciles
                    .get_or_create(&ResultLabels { result })
                    .get()
            })
            .sum()
    }

    /// Admin Status calls so far (one per node per reconcile).
    fn status_calls(&self) -> u64 {
        ["ok", "error"]
            .iter()
            .map(|&result| {
                self.ctx
                    .metrics
                    .admin_calls
                    .get_or_create(&AdminLabels {
                        call: "status",
                        result,
                    })
                    .get()
            })
            .sum()
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(c) = self.controller.take() {
            tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("the controller stops on shutdown")
                .unwrap();
        }
    }

    async fn get(&self) -> KVCluster {
        self.kvcs.get(NAME).await.unwrap()
    }

    /// Step the world (the controller reconciles on its own) until `done`
    /// holds, at most `secs`.
    async fn run_until(&mut self, what: &str, secs: u64, done: impl Fn(&KVCluster) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let kvc = self.get().await;
            if done(&kvc) {
                return;
            }
            if Instant::now() > until {
                let logs: Vec<String> = self
                    .kubelet
                    .pods
                    .keys()
                    .map(|p| format!("--- {p}\n{}", self.kubelet.log_tail(p)))
                    .collect();
                panic!(
                    "{what}: not reached in {secs} s; status {:#?}\n{}",
                    kvc.status,
                    logs.join("\n")
                );
            }
            self.kubelet.step(&self.api).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn scale(&self, replicas: i32) {
        self.kvcs
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
    }
}

/// Running with `n` nodes, all ready, every member NORMAL and alive.
fn settled(n: i32) -> impl Fn(&KVCluster) -> bool {
    move |k| {
        k.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Running
                && s.replicas == n
                && s.ready_replicas == n
                && s.decommission.is_none()
                && s.members.iter().filter(|m| m.state != "left").count() == n as usize
                && s.members
                    .iter()
                    .filter(|m| m.state != "left")
                    .all(|m| m.state == "normal" && m.alive)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_scales_real_nodes_3_6_3_without_losing_a_write() {
    let started = Instant::now();
    let mut w = World::new(json!({
        "replicas": 3,
        "zones": ZONES.iter().map(|z| json!({"name": z, "nodeLabelValue": z})).collect::<Vec<_>>(),
        "replication": {"n": 3, "w": 2, "r": 2},
        "vnodes": 32,
        "repair": {"interval": "1h"}
    }))
    .await;
    w.run_until("3 nodes running", 120, settled(3)).await;
    println!("3 nodes settled after {:?}", started.elapsed());

    // The nodes run with the settings the operator wrote into the ConfigMap.
    let mut admin = Admin::connect(&w.kubelet.endpoints("kv-zone-a-0").admin)
        .await
        .unwrap();
    let st = admin.status().await.unwrap();
    let rep = st.replication.unwrap();
    assert_eq!((rep.n, rep.w, rep.r), (3, 2, 2));
    assert_eq!(st.zone, "zone-a");
    assert_eq!(st.node_id, "kv-zone-a-0");

    // Two writers through pods that stay for the whole test.
    let hist = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ["kv-zone-a-0", "kv-zone-c-0"]
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let writer = Writer {
                name: format!("w{i}"),
                endpoint: w.kubelet.endpoints(pod).grpc.clone(),
                keys: 200,
                pause: Duration::from_millis(5),
            };
            tokio::spawn(writer.run(hist.clone(), stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3 -> 6: one more node per zone.
    w.scale(6).await;
    w.run_until("6 nodes running", 240, settled(6)).await;
    println!("6 nodes settled after {:?}", started.elapsed());
    let kvc = w.get().await;
    let zones = &kvc.status.as_ref().unwrap().zones;
    assert!(
        zones.iter().all(|z| z.ready_replicas == 2),
        "balanced: {zones:?}"
    );

    // A pod is deleted mid-traffic; the StatefulSet brings it back on its volume.
    w.kubelet.kill("kv-zone-b-0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.run_until("kv-zone-b-0 back", 120, settled(6)).await;

    // A repair cycle falls due: the operator runs it node by node.
    w.clock_offset.store(
        Duration::from_secs(2 * 3600).as_millis() as i64,
        Ordering::SeqCst,
    );
    w.run_until("repair recorded for every zone", 240, |k| {
        k.status.as_ref().is_some_and(|s| {
            s.repair.is_none()
                && s.zones.len() == 3
                && s.zones.iter().all(|z| z.last_repair_time.is_some())
        })
    })
    .await;
    println!("repair cycle done after {:?}", started.elapsed());

    // 6 -> 3: each removed node is decommissioned first.
    let (reconciles, status_calls, t) = (w.reconciles(), w.status_calls(), Instant::now());
    w.scale(3).await;
    w.run_until("back to 3 nodes", 480, settled(3)).await;
    println!("3 nodes settled again after {:?}", started.elapsed());
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    let reconciles = w.reconciles() - reconciles;
    let status_calls = w.status_calls() - status_calls;
    println!(
        "reconcile rate during the 6 -> 3 decommissions: {:.1} reconciles/min \
         ({reconciles} reconciles, {status_calls} Admin Status calls in {:.0} s)",
        reconciles as f64 / minutes,
        t.elapsed().as_secs_f64()
    );
    let mut removed = w.kubelet.removed.clone();
    removed.sort();
    assert_eq!(removed, ["kv-zone-a-1", "kv-zone-b-1", "kv-zone-c-1"]);
    assert!(
        w.kubelet.violations.is_empty(),
        "{:?}",
        w.kubelet.violations
    );
    let zones: Vec<(String, i32)> = w
        .get()
        .await
        .status
        .unwrap()
        .zones
        .iter()
        .map(|z| (z.name.clone(), z.ready_replicas))
        .collect();
    assert!(zones.iter().all(|(_, r)| *r == 1), "{zones:?}");

    w.shutdown().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in writers {
        t.await.unwrap();
    }
    let (writes, failed) = hist.writes();
    println!("{writes} writes ({failed} failed) across 3 -> 6 -> 3 and a pod deletion");
    assert!(
        writes > 500,
        "too little traffic to mean anything: {writes}"
    );

    // The chart's alerts and dashboard query metrics real nodes export (after
    // all that traffic every family has series; quorum failures may not have
    // happened at all, and a labelled family without series is not exposed).
    let mut exposition = String::new();
    for pod in ["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"] {
        exposition.push_str(
            &http_get(&w.kubelet.endpoints(pod).http, "/metrics")
                .await
                .expect("node /metrics"),
        );
    }
    let used = node_metrics_used_by_the_chart();
    assert!(used.len() >= 5, "{used:?}");
    let missing: Vec<_> = used
        .iter()
        .filter(|m| {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m);
            !exposition.contains(&format!("# TYPE {family} "))
                && *m != "ringkv_quorum_failures_total"
        })
        .collect();
    assert!(missing.is_empty(), "not exported by a node: {missing:?}");

    for pod in ["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"] {
        let client = Client::connect(&w.kubelet.endpoints(pod).grpc)
            .await
            .unwrap();
        let unreadable = verify::acknowledged_writes_readable_with(client, &hist, "quorum").await;
        assert!(
            unreadable.is_empty(),
            "via {pod}: {:#?}",
            &unreadable[..unreadable.len().min(10)]
        );
    }
}

#[allow(dead_code)]
#[path = "../../../node/tests/common/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "../../../node/tests/common/server.rs"]
mod server;

/// Issue 12: the operator runs a scheduled backup of real nodes into a real
/// S3-compatible server on loopback (moto), with credentials from a Secret,
/// one node per zone at a time; the backup it records verifies object by
/// object and names every node. Without moto the same runs against a
/// `file://` target, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_runs_a_scheduled_backup_of_real_nodes() {
    use k8s_openapi::api::core::v1::Secret;
    let dir = tempfile::tempdir().unwrap();
    let moto = match s3::Moto::start() {
        Ok(m) => Some(m),
        Err(why) => {
            println!("S3 server unavailable ({why}): backing up to a file:// target instead");
            None
        }
    };
    let (url, options) = match &moto {
        Some(m) => {
            m.create_bucket("kv-backups");
            (
                format!(
                    "s3://kv-backups/db?endpoint={}&allow_http=true",
                    m.endpoint()
                ),
                m.options(),
            )
        }
        None => (
            format!("file://{}", dir.path().display()),
            Default::default(),
        ),
    };
    let mut w = World::new(json!({
        "replicas": 3,
        "zones": ZONES.iter().map(|z| json!({"name": z, "nodeLabelValue": z})).collect::<Vec<_>>(),
        "replication": {"n": 3, "w": 2, "r": 2},
        "vnodes": 32,
        "backup": {
            "schedule": "@hourly",
            "destination": {"url": url, "credentialsSecret": "backup-creds"},
            "retention": {"keepLast": 3}
        }
    }))
    .await;
    let secrets: Api<Secret> = Api::namespaced(w.api.client(), NS);
    // `data`, as the API server stores it (it folds stringData into data;
    // the in-memory API does not).
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("backup-creds".into()),
            ..Default::default()
        },
        data: Some(
            options
                .iter()
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    w.run_until("3 nodes running", 120, settled(3)).await;
    let mut client = Client::connect(&w.kubelet.endpoints("kv-zone-a-0").grpc)
        .await
        .unwrap();
    for i in 0..200 {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    // The next hourly slot falls due.
    w.clock_offset.store(
        Duration::from_secs(3600).as_millis() as i64,
        Ordering::SeqCst,
    );
    w.run_until("a scheduled backup to succeed", 240, |k| {
        k.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_some_and(|b| b.last_successful.is_some())
    })
    .await;
    let kvc = w.get().await;
    let status = kvc.status.unwrap().backup.unwrap();
    let id = status.last_successful.clone().unwrap();
    let run = status.history.iter().find(|r| r.id == id).unwrap();
    println!("scheduled backup {id}: {run:?}");
    assert_eq!(run.trigger, "schedule");
    // What the operator recorded is really there: every node's manifest,
    // every object present with its checksum.
    let ch =
        tonic::transport::Endpoint::from_shared(w.kubelet.endpoints("kv-zone-b-0").admin.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut admin = ringkv_proto::v1::admin_client::AdminClient::new(ch);
    let opts: std::collections::HashMap<String, String> = options.into_iter().collect();
    let v = admin
        .verify_backup(ringkv_proto::v1::VerifyBackupRequest {
            url: url.clone(),
            backup_id: id.clone(),
            options: opts.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "backup {id} does not verify: {:?}", v.problems);
    let mut nodes = v.node_ids.clone();
    nodes.sort();
    assert_eq!(nodes, vec!["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"]);
    assert!(v.objects_checked > 0 && v.bytes_checked > 0, "{v:?}");
}
