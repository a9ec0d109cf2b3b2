//! kind end-to-end suite: installs the Helm chart and a 3-zone KVCluster, writes
//! through the client Service while it scales 3 -> 6 -> 3 and a pod is deleted,
//! then checks that every acknowledged write is still readable.
//!
//! It runs only against a kind cluster (current kube context `kind-*`, see
//! `kind-config.yaml`) with the image loaded (`RINGKV_E2E_IMAGE`, default
//! `ringkv:e2e`) and `helm` on the PATH; otherwise it prints why and passes.
//! `.github/workflows/kind-e2e.yml` sets all of that up:
//!
//! ```sh
//! kind create cluster --name ringkv --config kind-config.yaml
//! docker build -t ringkv:e2e . && kind load docker-image ringkv:e2e --name ringkv
//! cargo test -p ringkv-e2e --test kind -- --nocapture
//! ```
//!
//! Environment: `RINGKV_E2E_GRPC` (client gRPC address, default the NodePort
//! mapping `http://127.0.0.1:30070`), `RINGKV_E2E_KEEP=1` keeps the namespace
//! for debugging, `RINGKV_E2E_ANY_CLUSTER=1` allows a non-kind context.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use ringkv_operator::crd::KVCluster;
use ringkv_proto::v1::key_value_client::KeyValueClient;
use ringkv_proto::v1::{GetRequest, PutRequest};
use tokio::sync::Mutex;
use tonic::transport::Channel;

const NS: &str = "ringkv-e2e";
const CLUSTER: &str = "e2e";
const RELEASE: &str = "ringkv-operator";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why the suite cannot run here, or a client for the kind cluster.
async fn kind_client() -> Result<Client, String> {
    let kubeconfig = Kubeconfig::read().map_err(|e| format!("no kubeconfig ({e})"))?;
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    if !context.starts_with("kind-")
        && std::env::var("RINGKV_E2E_ANY_CLUSTER").as_deref() != Ok("1")
    {
        return Err(format!(
            "current kube context {context:?} is not a kind cluster (set RINGKV_E2E_ANY_CLUSTER=1 to use it anyway)"
        ));
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig unusable: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("no client: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("API server of {context} unreachable: {e}")),
        Err(_) => Err(format!("API server of {context} did not answer in 5s")),
    }
}

fn helm_available() -> bool {
    Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_for(
    kvcs: &Api<KVCluster>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&KVCluster) -> bool,
) -> KVCluster {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Ok(Some(k)) = kvcs.get_opt(CLUSTER).await {
            if done(&k) {
                eprintln!("[{:>4}s] {what}", start.elapsed().as_secs());
                return k;
            }
            last = k.status;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    panic!("timed out waiting for {what}; last status: {last:#?}");
}

fn running_with(n: i32) -> impl Fn(&KVCluster) -> bool {
    move |k| {
        k.status.as_ref().is_some_and(|s| {
            s.phase == ringkv_operator::crd::Phase::Running
                && s.observed_generation == k.metadata.generation
                && s.replicas == n
                && s.ready_replicas == n
                && s.members.iter().filter(|m| m.state == "normal").count() == n as usize
        })
    }
}

/// Writes unique keys with W=quorum until stopped; remembers what was acknowledged.
struct Writer {
    acked: Mutex<BTreeMap<String, String>>,
    failed: AtomicU64,
    stop: AtomicBool,
}

impl Writer {
    async fn run(self: Arc<Self>, mut client: KeyValueClient<Channel>) {
        let mut i = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let key = format!("k{i:08}");
            let value = format!("v{i}-{}", i.wrapping_mul(0x9e37_79b9));
            let req = PutRequest {
                key: key.clone().into_bytes().into(),
                value: value.clone().into_bytes().into(),
                w: "quorum".into(),
                ..Default::default()
            };
            match tokio::time::timeout(Duration::from_secs(5), client.put(req)).await {
                Ok(Ok(_)) => {
                    self.acked.lock().await.insert(key, value);
                }
                // Unacknowledged (error or timeout): it may or may not exist; not checked.
                _ => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_scale_3_6_3_with_pod_deletion_keeps_every_acknowledged_write() {
    let client = match kind_client().await {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED kind e2e: {why}");
            return;
        }
    };
    if !helm_available() {
        eprintln!("SKIPPED kind e2e: `helm` is not on the PATH");
        return;
    }
    let image = std::env::var("RINGKV_E2E_IMAGE").unwrap_or_else(|_| "ringkv:e2e".into());
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let grpc = std::env::var("RINGKV_E2E_GRPC").unwrap_or_else(|_| "http://127.0.0.1:30070".into());

    // Namespace and operator.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace: {e}"),
    }
    run(Command::new("helm").args([
        "upgrade",
        "--install",
        RELEASE,
        root().join("charts/ringkv-operator").to_str().unwrap(),
        "--namespace",
        NS,
        "--set",
        &format!("image.repository={repo}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "logging.level=info\\,ringkv_operator=debug",
        "--wait",
        "--timeout",
        "5m",
    ]));
    eprintln!("operator installed");

    // The KVCluster from the kind example, with the image under test.
    let text = std::fs::read_to_string(root().join("crds/examples/kvcluster-kind.yaml")).unwrap();
    let mut kvc: KVCluster = serde_yaml::from_str(&text).unwrap();
    kvc.metadata.namespace = Some(NS.into());
    kvc.spec.image = Some(image.clone());
    let kvcs: Api<KVCluster> = Api::namespaced(client.clone(), NS);
    kvcs.patch(
        CLUSTER,
        &PatchParams::apply("ringkv-e2e").force(),
        &Patch::Apply(&kvc),
    )
    .await
    .expect("applying the KVCluster");
    wait_for(
        &kvcs,
        "3 nodes running",
        Duration::from_secs(600),
        running_with(3),
    )
    .await;

    // Traffic through the client Service for the rest of the test.
    let channel = Channel::from_shared(grpc.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let writer = Arc::new(Writer {
        acked: Mutex::default(),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let writing = tokio::spawn(writer.clone().run(KeyValueClient::new(channel.clone())));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !writer.acked.lock().await.is_empty(),
        "no write acknowledged through {grpc}"
    );

    // 3 -> 6 through the scale subresource (what `kubectl scale` and an HPA use).
    let scale = |n: i32| serde_json::json!({"spec": {"replicas": n}});
    kvcs.patch_scale(CLUSTER, &PatchParams::default(), &Patch::Merge(&scale(6)))
        .await
        .expect("scaling to 6");
    wait_for(
        &kvcs,
        "6 nodes running",
        Duration::from_secs(900),
        running_with(6),
    )
    .await;

    // A pod dies mid-traffic; the StatefulSet brings it back with its volume.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.delete(&format!("{CLUSTER}-zone-b-0"), &DeleteParams::default())
        .await
        .expect("deleting a pod");
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_for(
        &kvcs,
        "6 nodes running after the pod deletion",
        Duration::from_secs(600),
        running_with(6),
    )
    .await;

    // 6 -> 3: every removed node is decommissioned first.
    kvcs.patch_scale(CLUSTER, &PatchParams::default(), &Patch::Merge(&scale(3)))
        .await
        .expect("scaling to 3");
    wait_for(
        &kvcs,
        "3 nodes running",
        Duration::from_secs(1200),
        running_with(3),
    )
    .await;

    writer.stop.store(true, Ordering::SeqCst);
    writing.await.unwrap();
    let acked = writer.acked.lock().await.clone();
    eprintln!(
        "{} writes acknowledged, {} failed or timed out",
        acked.len(),
        writer.failed.load(Ordering::Relaxed)
    );
    assert!(
        acked.len() > 100,
        "too few acknowledged writes to mean anything"
    );

    // Every acknowledged write is readable at R=quorum.
    let mut reader = KeyValueClient::new(channel);
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let req = GetRequest {
            key: key.clone().into_bytes().into(),
            r: "quorum".into(),
        };
        let resp = reader
            .get(req)
            .await
            .unwrap_or_else(|e| panic!("reading {key}: {e}"))
            .into_inner();
        if !resp.found
            || !resp
                .siblings
                .iter()
                .any(|s| s.value.as_ref() == value.as_bytes())
        {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // The operator explained what it did.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in ["ScalingUp", "DecommissionStarted", "NodeRemoved"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} event: {reasons:?}");
    }

    if std::env::var("RINGKV_E2E_KEEP").as_deref() == Ok("1") {
        eprintln!("RINGKV_E2E_KEEP=1: leaving namespace {NS} in place");
        return;
    }
    kvcs.delete(CLUSTER, &DeleteParams::default())
        .await
        .expect("deleting the KVCluster");
    let start = Instant::now();
    while kvcs.get_opt(CLUSTER).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the finalizer never released the KVCluster"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    run(Command::new("helm").args(["uninstall", RELEASE, "--namespace", NS, "--wait"]));
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
}
