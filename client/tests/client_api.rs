//! The Rust client against an in-process 3-node cluster.

use std::time::Duration;

use ringkv_client::{Admin, Client, ClientError, PutOptions};
use ringkv_node::{Config, NodeOptions, RunningNode};

async fn cluster(dir: &std::path::Path) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..3 {
        let mut c = Config::loopback(&format!("n{i}"), dir.join(format!("n{i}")));
        c.gossip_interval = Duration::from_millis(100);
        c.request_timeout = Duration::from_secs(5);
        if let Some(first) = nodes.first() {
            c.seeds = vec![first.addrs.gossip.to_string()];
        }
        nodes.push(RunningNode::start(c, NodeOptions::default()).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !nodes
        .iter()
        .all(|n| n.coordinator.topology().ring.nodes().len() == 3)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_writes_resolves_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let mut a = Client::connect(&nodes[0].addrs.grpc.to_string())
        .await
        .unwrap();
    let mut b = Client::connect(&format!("http://{}", nodes[1].addrs.grpc))
        .await
        .unwrap();

    assert!(!a.get("k").await.unwrap().found());
    a.put("k", "v1").await.unwrap();
    let got = b.get("k").await.unwrap();
    assert_eq!(got.value().unwrap().as_ref(), b"v1");
    // Two writers from one read: siblings.
    a.put_with("k", "left", PutOptions::after(&got))
        .await
        .unwrap();
    b.put_with("k", "right", PutOptions::after(&got).w("all"))
        .await
        .unwrap();
    let both = a.get_with("k", "all").await.unwrap();
    assert!(both.has_conflict());
    assert_eq!(both.siblings.len(), 2);
    // The resolve helper merges and writes back: one value remains.
    let merged = b
        .resolve("k", |sibs| {
            let mut parts: Vec<String> = sibs
                .iter()
                .map(|s| String::from_utf8_lossy(&s.value).to_string())
                .collect();
            parts.sort();
            parts.join("+").into()
        })
        .await
        .unwrap();
    assert_eq!(merged.unwrap().as_ref(), b"left+right");
    let one = a.get("k").await.unwrap();
    assert_eq!(one.value().unwrap().as_ref(), b"left+right");
    // TTL and delete.
    a.put_with("t", "x", PutOptions::default().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(a.get("t").await.unwrap().siblings[0].expires_at_unix_ms > 0);
    let acks = a.delete("k", &one.context, "").await.unwrap();
    assert!(acks >= 2);
    assert!(!b.get("k").await.unwrap().found());
    // Typed errors.
    assert!(matches!(
        a.put_with("k", "v", PutOptions::default().w("7")).await,
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.get("").await,
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        Client::connect("http://127.0.0.1:1").await,
        Err(ClientError::Connect { .. })
    ));
    // Admin.
    let mut admin = Admin::connect(&nodes[2].addrs.internode.to_string())
        .await
        .unwrap();
    let s = admin.status().await.unwrap();
    assert_eq!(s.members.len(), 3);
    admin.drain().await.unwrap();
    let mut c = Client::connect(&nodes[2].addrs.grpc.to_string())
        .await
        .unwrap();
    assert!(matches!(c.get("k").await, Err(ClientError::Unavailable(m)) if m.contains("draining")));
    for n in nodes {
        n.shutdown().await;
    }
}
