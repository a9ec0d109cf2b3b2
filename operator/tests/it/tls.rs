//! Automatic TLS end to end against the fake API: the reconcile generates the
//! CA, per-pod certificates, the operator's client certificate, the gossip
//! secret and tokens; pods mount them; and the operator's Admin calls pass a
//! node that demands a client certificate signed by the cluster CA and the
//! admin token — while a caller without them is refused.

use std::sync::Arc;

use kube::api::Api;
use ringkv_operator::act::observe_security;
use ringkv_operator::admin::{AdminPool, NodeAddr};
use ringkv_operator::crd::KVCluster;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::fake_nodes::lone_node_admin;
use crate::reconcile::{Harness, NS, spec};

fn data(secret: &Value, key: &str) -> Vec<u8> {
    use base64::Engine;
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no {key}", secret["metadata"]["name"]));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Refuses every call without `token` as its bearer token, as a node does.
fn bearer_only(token: String) -> impl tonic::service::Interceptor + Clone {
    move |req: Request<()>| {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth == Some(&format!("Bearer {token}")) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("no admin token"))
        }
    }
}

#[tokio::test]
async fn automatic_tls_secures_the_pods_and_the_operators_admin_calls() {
    let h = Harness::new(spec(3, json!({"tls": {"issuer": "Operator"}, "auth": {}}))).await;
    // Real time: rustls checks validity against the wall clock.
    h.clock.store(
        ringkv_operator::time::now_unix_ms(),
        std::sync::atomic::Ordering::SeqCst,
    );
    h.tick().await;

    // The generated material.
    let secret = |name: &str| {
        h.api
            .get("secrets", NS, name)
            .unwrap_or_else(|| panic!("no Secret {name}"))
    };
    let ca = secret("kv-ca");
    let zone_a = secret("kv-zone-a-tls");
    let op = secret("kv-operator-tls");
    let auth = secret("kv-auth");
    let gossip = secret("kv-gossip");
    assert_eq!(data(&zone_a, "ca.crt"), data(&ca, "ca.crt"));
    assert_eq!(
        gossip["metadata"]["ownerReferences"][0]["kind"],
        "KVCluster"
    );
    let tokens = String::from_utf8(data(&auth, "tokens")).unwrap();
    let admin_token = ringkv_operator::security::admin_token(&tokens).unwrap();

    // The pods mount them, and the node config names them.
    let sts = h.api.get("statefulsets", NS, "kv-zone-a").unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let vols: Vec<(String, String)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_string(),
                v["secret"]["secretName"].as_str()?.to_string(),
            ))
        })
        .collect();
    for want in [
        ("tls", "kv-zone-a-tls"),
        ("gossip", "kv-gossip"),
        ("auth", "kv-auth"),
    ] {
        assert!(
            vols.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {vols:?}"
        );
    }
    let env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "RINGKV_TLS_CERT"
                && e["value"] == "/etc/ringkv/tls/$(POD_NAME).crt")
    );
    let cm_name = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()["configMap"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cm = h.api.get("configmaps", NS, &cm_name).unwrap();
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["ringkv.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["tls_mode"], "enabled");
    assert_eq!(cfg["gossip_secret_file"], "/etc/ringkv/gossip/secret");
    assert_eq!(cfg["auth_tokens_file"], "/etc/ringkv/auth/tokens");

    // A node serving with its own per-pod certificate and demanding a client
    // certificate from the cluster CA.
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            data(&zone_a, "kv-zone-a-0.crt"),
            data(&zone_a, "kv-zone-a-0.key"),
        ))
        .client_ca_root(Certificate::from_pem(data(&ca, "ca.crt")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(server_tls)
            .unwrap()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                lone_node_admin("kv-zone-a-0", "zone-a"),
                bearer_only(admin_token.clone()),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // The operator's own view: what observe_security hands the Admin pool.
    let kvcs: Api<KVCluster> = Api::namespaced(h.api.client(), NS);
    let kvc = kvcs.get("kv").await.unwrap();
    let sec = observe_security(&h.ctx, &kvc, NS).await.unwrap();
    assert_eq!(sec.admin_token.as_deref(), Some(&admin_token));
    let pool = AdminPool::with_resolver(
        Arc::new(move |_| format!("127.0.0.1:{port}")),
        std::time::Duration::from_secs(5),
    );
    let addr = NodeAddr {
        namespace: NS.into(),
        cluster: "kv".into(),
        pod: "kv-zone-a-0".into(),
        tls: sec.admin_tls.clone(),
        token: sec.admin_token.clone(),
    };
    let report = pool
        .status(&addr)
        .await
        .expect("mutual TLS + token must pass");
    assert_eq!(report.node_id, "kv-zone-a-0");

    // Without the token: refused by the node.
    let no_token = NodeAddr {
        token: None,
        ..addr.clone()
    };
    assert!(pool.status(&no_token).await.is_err());
    // Without a client certificate: the handshake fails.
    let no_identity = NodeAddr {
        tls: Some(Arc::new(ringkv_operator::admin::AdminTls {
            ca: data(&ca, "ca.crt"),
            identity: None,
        })),
        ..addr.clone()
    };
    assert!(pool.status(&no_identity).await.is_err());

    // The node certificate carries the pod's stable DNS name.
    let ch = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(data(&ca, "ca.crt")))
                .identity(Identity::from_pem(
                    data(&op, "tls.crt"),
                    data(&op, "tls.key"),
                ))
                .domain_name("kv-zone-a-0.kv-peers.db.svc.cluster.local"),
        )
        .unwrap()
        .connect()
        .await
        .expect("verified by the pod DNS name");
    let mut req = Request::new(pb::StatusRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin_token}").parse().unwrap(),
    );
    AdminClient::new(ch).status(req).await.unwrap();
    // ... and not another pod's.
    let wrong = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(data(&ca, "ca.crt")))
                .identity(Identity::from_pem(
                    data(&op, "tls.crt"),
                    data(&op, "tls.key"),
                ))
                .domain_name("kv-zone-b-0.kv-peers.db.svc.cluster.local"),
        )
        .unwrap()
        .connect()
        .await;
    assert!(
        wrong.is_err(),
        "a pod's certificate must not be valid for another pod"
    );
    server.abort();

    // A second reconcile rewrites nothing: the material is stable.
    let before: Vec<Value> = [
        "kv-ca",
        "kv-zone-a-tls",
        "kv-operator-tls",
        "kv-gossip",
        "kv-auth",
    ]
    .iter()
    .map(|n| secret(n)["data"].clone())
    .collect();
    h.tick().await;
    let after: Vec<Value> = [
        "kv-ca",
        "kv-zone-a-tls",
        "kv-operator-tls",
        "kv-gossip",
        "kv-auth",
    ]
    .iter()
    .map(|n| secret(n)["data"].clone())
    .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_missing_user_tls_secret_fails_the_reconcile_with_its_name() {
    let h = Harness::new(spec(3, json!({"tls": {"secretName": "kv-certs"}}))).await;
    let kvcs: Api<KVCluster> = Api::namespaced(h.api.client(), NS);
    let kvc = kvcs.get("kv").await.unwrap();
    let err = ringkv_operator::controller::reconcile(Arc::new(kvc), h.ctx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ringkv_operator::controller::Error::TlsSecret { secret, .. } if secret == "kv-certs"),
        "{err}"
    );
}

#[tokio::test]
async fn cert_manager_is_used_when_installed_and_stays_once_it_issued() {
    let h = Harness::new(spec(3, json!({"tls": {}}))).await;
    h.api
        .serve_group("cert-manager.io/v1", Some(&["certificates", "issuers"]));
    h.tick().await;
    let certs: Vec<String> = h
        .api
        .list("certificates", NS)
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "kv-ca",
        "kv-zone-a-tls",
        "kv-zone-b-tls",
        "kv-zone-c-tls",
        "kv-operator-tls",
    ] {
        assert!(
            certs.iter().any(|c| c == want),
            "no Certificate {want} in {certs:?}"
        );
    }
    let issuers: Vec<String> = h
        .api
        .list("issuers", NS)
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(issuers.len(), 2, "{issuers:?}");
    assert!(
        h.api.get("secrets", NS, "kv-ca").is_none(),
        "cert-manager writes it, not the operator"
    );
    let sts = h.api.get("statefulsets", NS, "kv-zone-a").unwrap();
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        env.iter().all(|e| e["name"] != "RINGKV_TLS_CERT"),
        "one certificate per zone: tls.crt"
    );

    // cert-manager issued; then its CRDs vanish (an upgrade): the cluster keeps it.
    h.api.insert(
        "api/v1",
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "kv-zone-a-tls", "annotations": {"cert-manager.io/certificate-name": "kv-zone-a-tls"}},
               "data": {}}),
    );
    h.api.serve_group("cert-manager.io/v1", None);
    h.tick().await;
    assert!(
        h.api.get("secrets", NS, "kv-ca").is_none(),
        "no switch to the operator's CA"
    );
    let sts = h.api.get("statefulsets", NS, "kv-zone-a").unwrap();
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(env.iter().all(|e| e["name"] != "RINGKV_TLS_CERT"));
}
