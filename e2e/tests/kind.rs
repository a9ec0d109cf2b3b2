//! kind end-to-end suite: what only a real cluster shows. It installs the Helm
//! chart (two operator replicas) and a 3-zone KVCluster, writes through the
//! client Service the whole time, and then:
//! scales 3 -> 6; deletes a pod (and waits for its replacement's UID to be
//! Ready); grows the volumes (an expandable StorageClass: PVCs resized, the
//! StatefulSets re-created, no pod restarted); rolls out a bad image, then a
//! fixed one (the broken pod is replaced first); drains a node through the
//! Eviction API (the PDB allows one pod, blocks a second); scales 6 -> 3 while
//! the leading operator pod is deleted mid-decommission (the other replica
//! finishes it); checks every acknowledged write; deletes the cluster (no
//! finalizer: it goes at once).
//!
//! TLS has its own scenario in `kind_tls.rs`.
//!
//! It runs against a kind cluster (current kube context `kind-*`, see
//! `kind-config.yaml`) with the images loaded and `helm` on the PATH. With
//! `RINGKV_KIND=1` (set by `.github/workflows/kind-e2e.yml`) a missing cluster
//! fails the test; otherwise it prints why it skips:
//!
//! ```sh
//! kind create cluster --name ringkv --config kind-config.yaml
//! docker build -t ringkv:e2e . && docker tag ringkv:e2e ringkv:e2e-v2
//! kind load docker-image ringkv:e2e ringkv:e2e-v2 --name ringkv
//! RINGKV_KIND=1 cargo test -p ringkv-e2e --test kind -- --nocapture
//! ```
//!
//! Environment: `RINGKV_E2E_IMAGE` (default `ringkv:e2e`), `RINGKV_E2E_IMAGE_V2`
//! (the "fixed" image, default `ringkv:e2e-v2`), `RINGKV_E2E_GRPC` (client gRPC
//! address, default the NodePort mapping `http://127.0.0.1:30070`),
//! `RINGKV_E2E_KEEP=1` keeps the namespace, `RINGKV_E2E_ANY_CLUSTER=1` allows a
//! non-kind context.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use ringkv_operator::crd::{KVCluster, Phase};
use ringkv_proto::v1::key_value_client::KeyValueClient;
use ringkv_proto::v1::{GetRequest, PutRequest};
use tokio::sync::Mutex;
use tonic::transport::Channel;

mod kind_common;
use kind_common::{cluster_or_skip, root, run};

const NS: &str = "ringkv-e2e";
const CLUSTER: &str = "e2e";
const RELEASE: &str = "ringkv-operator";
const EXPANDABLE: &str = "ringkv-e2e-expandable";
const NODE_SELECTOR: &str = "app.kubernetes.io/name=ringkv,app.kubernetes.io/instance=e2e";

/// Polls `probe` every 2 s until it returns `Some`, at most `timeout`.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match probe().await {
            Ok(v) => {
                eprintln!("[{:>4}s] {what}", start.elapsed().as_secs());
                return v;
            }
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("timed out waiting for {what}; last: {last}");
}

async fn wait_for(
    kvcs: &Api<KVCluster>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&KVCluster) -> bool,
) -> KVCluster {
    until(what, timeout, || async {
        match kvcs.get_opt(CLUSTER).await {
            Ok(Some(k)) if done(&k) => Ok(k),
            Ok(Some(k)) => Err(format!("{:#?}", k.status)),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn running_with(n: i32) -> impl Fn(&KVCluster) -> bool {
    move |k| {
        k.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Running
                && s.observed_generation == k.metadata.generation
                && s.replicas == n
                && s.ready_replicas == n
                && s.members.iter().filter(|m| m.state == "normal").count() == n as usize
        })
    }
}

fn progressing_reason(k: &KVCluster, reason: &str) -> bool {
    k.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == reason)
    })
}

async fn node_pods(pods: &Api<Pod>) -> BTreeMap<String, Pod> {
    pods.list(&ListParams::default().labels(NODE_SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until pod `name` is a new pod (another UID than `old_uid`) and Ready:
/// a stale "Running" of the deleted pod does not count.
async fn wait_replaced(pods: &Api<Pod>, name: &str, old_uid: &str) {
    until(
        &format!("{name} replaced and ready"),
        Duration::from_secs(600),
        || async {
            match pods.get_opt(name).await {
                Ok(Some(p)) if p.uid().as_deref() != Some(old_uid) && ready(&p) => Ok(()),
                Ok(Some(p)) => Err(format!("uid {:?}, ready {}", p.uid(), ready(&p))),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
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

fn helm_install(image: &str, replicas: u32) {
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
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
        &format!("replicaCount={replicas}"),
        "--set",
        "logging.level=info\\,ringkv_operator=debug",
        "--wait",
        "--timeout",
        "5m",
    ]));
}

async fn setup(client: &Client, image: &str) -> Api<KVCluster> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace: {e}"),
    }
    // Two operator replicas: one leads, the other takes over when it goes.
    helm_install(image, 2);
    eprintln!("operator installed (2 replicas)");
    // kind's local-path provisioner with expansion allowed: the API accepts
    // a bigger request (the volume itself is a host directory).
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": EXPANDABLE},
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true
    }))
    .unwrap();
    classes
        .patch(
            EXPANDABLE,
            &PatchParams::apply("ringkv-e2e").force(),
            &Patch::Apply(&class),
        )
        .await
        .expect("the expandable StorageClass");

    let text = std::fs::read_to_string(root().join("crds/examples/kvcluster-kind.yaml")).unwrap();
    let mut kvc: KVCluster = serde_yaml::from_str(&text).unwrap();
    kvc.metadata.namespace = Some(NS.into());
    kvc.spec.image = Some(image.to_string());
    kvc.spec.storage.storage_class_name = Some(EXPANDABLE.into());
    kvc.spec.progress_deadline = "3m".into();
    let kvcs: Api<KVCluster> = Api::namespaced(client.clone(), NS);
    kvcs.patch(
        CLUSTER,
        &PatchParams::apply("ringkv-e2e").force(),
        &Patch::Apply(&kvc),
    )
    .await
    .expect("applying the KVCluster");
    kvcs
}

async fn patch_spec(kvcs: &Api<KVCluster>, spec: serde_json::Value) {
    kvcs.patch(
        CLUSTER,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "spec": spec })),
    )
    .await
    .expect("patching the KVCluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_day_two_keeps_every_acknowledged_write() {
    let Some(client) = cluster_or_skip("kind e2e suite").await else {
        return;
    };
    let image = std::env::var("RINGKV_E2E_IMAGE").unwrap_or_else(|_| "ringkv:e2e".into());
    let fixed = std::env::var("RINGKV_E2E_IMAGE_V2").unwrap_or_else(|_| "ringkv:e2e-v2".into());
    let grpc = std::env::var("RINGKV_E2E_GRPC").unwrap_or_else(|_| "http://127.0.0.1:30070".into());
    let kvcs = setup(&client, &image).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
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
    until(
        "a first acknowledged write",
        Duration::from_secs(60),
        || async {
            if writer.acked.lock().await.is_empty() {
                Err(format!("nothing acknowledged through {grpc}"))
            } else {
                Ok(())
            }
        },
    )
    .await;

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
    let victim = format!("{CLUSTER}-zone-b-0");
    let uid = pods.get(&victim).await.unwrap().uid().unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("deleting a pod");
    wait_replaced(&pods, &victim, &uid).await;
    wait_for(
        &kvcs,
        "6 nodes running after the pod deletion",
        Duration::from_secs(600),
        running_with(6),
    )
    .await;

    storage_expansion(&client, &kvcs, &pods).await;
    bad_then_fixed_rollout(&kvcs, &pods, &fixed).await;
    drain_against_the_pdb(&client, &kvcs, &pods).await;
    scale_down_across_an_operator_restart(&client, &kvcs, &pods).await;

    writer.stop.store(true, Ordering::SeqCst);
    writing.await.unwrap();
    verify(&writer, channel).await;

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
    for r in [
        "ScalingUp",
        "DecommissionStarted",
        "NodeRemoved",
        "VolumeExpanding",
        "StatefulSetRecreating",
        "RestartingNode",
        "RolloutReplaced",
    ] {
        assert!(reasons.iter().any(|x| x == r), "no {r} event: {reasons:?}");
    }

    if std::env::var("RINGKV_E2E_KEEP").as_deref() == Ok("1") {
        eprintln!("RINGKV_E2E_KEEP=1: leaving namespace {NS} in place");
        return;
    }
    // No finalizer: deleting the cluster never waits for the operator.
    kvcs.delete(CLUSTER, &DeleteParams::default())
        .await
        .expect("deleting the KVCluster");
    until("the KVCluster gone", Duration::from_secs(30), || async {
        match kvcs.get_opt(CLUSTER).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    run(Command::new("helm").args(["uninstall", RELEASE, "--namespace", NS, "--wait"]));
    let _ = Api::<StorageClass>::all(client.clone())
        .delete(EXPANDABLE, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(client)
        .delete(NS, &DeleteParams::default())
        .await;
}

/// 1Gi -> 2Gi: every PVC asks for 2Gi, every StatefulSet's template says 2Gi,
/// and no pod was restarted for it.
async fn storage_expansion(client: &Client, kvcs: &Api<KVCluster>, pods: &Api<Pod>) {
    let before: BTreeMap<String, Option<String>> = node_pods(pods)
        .await
        .into_iter()
        .map(|(n, p)| (n, p.uid()))
        .collect();
    patch_spec(kvcs, serde_json::json!({"storage": {"size": "2Gi"}})).await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    until(
        "volumes and StatefulSets at 2Gi",
        Duration::from_secs(600),
        || async {
            let size = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                q.map(|q| q.0.clone()).unwrap_or_default()
            };
            for s in sts
                .list(&ListParams::default().labels(NODE_SELECTOR))
                .await
                .map_err(|e| e.to_string())?
            {
                let vct = s.spec.volume_claim_templates.as_ref();
                let want = vct
                    .and_then(|v| v[0].spec.as_ref())
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .map(|r| size(r.get("storage")));
                if want.as_deref() != Some("2Gi") {
                    return Err(format!("{} template asks {want:?}", s.name_any()));
                }
            }
            for c in pvcs
                .list(&ListParams::default().labels(NODE_SELECTOR))
                .await
                .map_err(|e| e.to_string())?
            {
                let req = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .map(|r| size(r.get("storage")));
                if req.as_deref() != Some("2Gi")
                    && c.annotations().get("ringkv.io/decommissioned-at").is_none()
                {
                    return Err(format!("{} asks {req:?}", c.name_any()));
                }
            }
            Ok(())
        },
    )
    .await;
    wait_for(
        kvcs,
        "6 nodes running after the expansion",
        Duration::from_secs(300),
        running_with(6),
    )
    .await;
    let after: BTreeMap<String, Option<String>> = node_pods(pods)
        .await
        .into_iter()
        .map(|(n, p)| (n, p.uid()))
        .collect();
    assert_eq!(before, after, "no pod was restarted by the expansion");
}

/// A bad image (never pullable) stops at its first pod; the fixed image
/// replaces that pod first and rolls the rest.
async fn bad_then_fixed_rollout(kvcs: &Api<KVCluster>, pods: &Api<Pod>, fixed: &str) {
    patch_spec(
        kvcs,
        serde_json::json!({"image": "ringkv:e2e-does-not-exist"}),
    )
    .await;
    wait_for(
        kvcs,
        "the bad rollout reported",
        Duration::from_secs(600),
        |k| progressing_reason(k, "PodFailing"),
    )
    .await;
    let bad = node_pods(pods)
        .await
        .values()
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers[0].image.as_deref() == Some("ringkv:e2e-does-not-exist")
            })
        })
        .count();
    assert_eq!(bad, 1, "the rollout stops at its first broken pod");
    patch_spec(kvcs, serde_json::json!({"image": fixed})).await;
    wait_for(
        kvcs,
        "the fixed image rolled out",
        Duration::from_secs(1200),
        |k| running_with(6)(k) && k.status.as_ref().and_then(|s| s.image.as_deref()) == Some(fixed),
    )
    .await;
    for (name, p) in node_pods(pods).await {
        let img = p.spec.as_ref().and_then(|s| s.containers[0].image.clone());
        assert_eq!(img.as_deref(), Some(fixed), "{name}");
    }
}

/// A node drain evicts pods through the Eviction API: the PDB lets one node
/// pod go, and refuses a second while the first is not back.
async fn drain_against_the_pdb(client: &Client, kvcs: &Api<KVCluster>, pods: &Api<Pod>) {
    let first = format!("{CLUSTER}-zone-a-0");
    let second = format!("{CLUSTER}-zone-c-0");
    let uid = pods.get(&first).await.unwrap().uid().unwrap();
    pods.evict(&first, &EvictParams::default())
        .await
        .expect("the PDB allows one node pod to be evicted");
    match pods.evict(&second, &EvictParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        other => panic!("a second eviction while {first} is away must be refused: {other:?}"),
    }
    wait_replaced(pods, &first, &uid).await;
    wait_for(
        kvcs,
        "6 nodes running after the drain",
        Duration::from_secs(600),
        running_with(6),
    )
    .await;
    let _ = client;
}

/// 6 -> 3; mid-decommission the leading operator pod is deleted and the other
/// replica takes over and finishes the same decommission.
async fn scale_down_across_an_operator_restart(
    client: &Client,
    kvcs: &Api<KVCluster>,
    pods: &Api<Pod>,
) {
    kvcs.patch_scale(
        CLUSTER,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scaling to 3");
    let k = wait_for(
        kvcs,
        "a decommission streaming",
        Duration::from_secs(600),
        |k| {
            k.status
                .as_ref()
                .and_then(|s| s.decommission.as_ref())
                .is_some_and(|d| d.phase == "Streaming" || d.phase == "Done")
        },
    )
    .await;
    let victim = k.status.unwrap().decommission.unwrap().node;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let leader = leases
        .get("ringkv-operator")
        .await
        .expect("the operator's Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    operator_pods
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("deleting the leading operator pod");
    eprintln!("deleted the leading operator {leader} while {victim} decommissions");
    until(
        "another operator replica leads",
        Duration::from_secs(120),
        || async {
            let holder = leases
                .get("ringkv-operator")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.holder_identity);
            match holder {
                Some(h) if h != leader => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    wait_for(
        kvcs,
        "3 nodes running",
        Duration::from_secs(1200),
        running_with(3),
    )
    .await;
    assert!(
        pods.get_opt(&victim).await.unwrap().is_none(),
        "{victim} was the one removed"
    );
}

async fn verify(writer: &Writer, channel: Channel) {
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
}
