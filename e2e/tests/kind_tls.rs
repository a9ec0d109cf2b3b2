//! kind end-to-end: a KVCluster with automatic TLS and tokens. The operator
//! (chart with `watchNamespaces`, so its Secrets access is namespaced)
//! generates the CA, per-pod certificates, the gossip secret and tokens; the
//! nodes start with mutual TLS on 7001 and authenticated gossip; the cluster
//! reaches Running — which needs every node's Admin status, so the operator's
//! client certificate and admin token were accepted — and a plaintext
//! connection to a node's Admin port is refused.
//!
//! Runs like `kind.rs` (same images, `RINGKV_KIND=1` makes a missing cluster
//! a failure, otherwise it prints why it skips):
//!
//! ```sh
//! RINGKV_KIND=1 cargo test -p ringkv-e2e --test kind_tls -- --nocapture
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use ringkv_operator::crd::{KVCluster, Phase};

mod kind_common;
use kind_common::{cluster_or_skip, root, run};

const NS: &str = "ringkv-e2e-tls";
const CLUSTER: &str = "sec";
const RELEASE: &str = "ringkv-operator-tls";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_automatic_tls_cluster_runs_and_refuses_plaintext() {
    let Some(client) = cluster_or_skip("kind TLS e2e suite").await else {
        return;
    };
    let image = std::env::var("RINGKV_E2E_IMAGE").unwrap_or_else(|_| "ringkv:e2e".into());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace: {e}"),
    }
    let (repo, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
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
        &format!("watchNamespaces={{{NS}}}"),
        "--set",
        "leaderElection.enabled=false",
        "--skip-crds",
        "--wait",
        "--timeout",
        "5m",
    ]));
    let text = std::fs::read_to_string(root().join("crds/examples/kvcluster-kind.yaml")).unwrap();
    let mut kvc: KVCluster = serde_yaml::from_str(&text).unwrap();
    kvc.metadata.name = Some(CLUSTER.into());
    kvc.metadata.namespace = Some(NS.into());
    kvc.spec.image = Some(image.clone());
    kvc.spec.tls = Some(serde_json::from_value(serde_json::json!({"issuer": "Operator"})).unwrap());
    kvc.spec.auth = Some(Default::default());
    kvc.spec.client_service = Default::default();
    let kvcs: Api<KVCluster> = Api::namespaced(client.clone(), NS);
    kvcs.patch(
        CLUSTER,
        &PatchParams::apply("ringkv-e2e").force(),
        &Patch::Apply(&kvc),
    )
    .await
    .expect("applying the KVCluster");

    let start = Instant::now();
    loop {
        let k = kvcs.get(CLUSTER).await.unwrap();
        let s = k.status.unwrap_or_default();
        if s.phase == Phase::Running && s.ready_replicas == k.spec.replicas {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not Running with TLS after 10 min: {:?} {}",
            s.phase,
            s.reason
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for name in ["sec-ca", "sec-operator-tls", "sec-gossip", "sec-auth"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_some(),
            "no Secret {name}"
        );
    }
    // Plain gRPC to the Admin port of a node: the TLS listener refuses it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let out = Command::new("kubectl")
        .args([
            "-n",
            NS,
            "exec",
            "sec-zone-a-0",
            "--",
            "ringkv",
            "status",
            "--admin",
            "http://127.0.0.1:7001",
        ])
        .output();
    if let Ok(out) = out {
        assert!(
            !out.status.success(),
            "plaintext Admin call succeeded on a TLS cluster"
        );
    }
    assert!(pods.get_opt("sec-zone-a-0").await.unwrap().is_some());
    if std::env::var("RINGKV_E2E_KEEP").as_deref() != Ok("1") {
        let _ = kvcs.delete(CLUSTER, &Default::default()).await;
        run(Command::new("helm").args(["uninstall", RELEASE, "--namespace", NS]));
    }
}
