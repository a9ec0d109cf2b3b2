//! The Rust client against an in-process 3-node cluster.

use std::time::Duration;

use ringkv_client::{Admin, Client, ClientError, PutOptions};
use ringkv_node::{Config, NodeOptions, RunningNode};

async fn cluster(dir: &std::path::Path) -> Vec<RunningNode> {
    cluster_of(dir, 3).await
}

async fn cluster_of(dir: &std::path::Path, count: usize) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..count {
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
        .all(|n| n.coordinator.topology().ring.nodes().len() == count)
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

fn metric(node: &RunningNode, name: &str) -> u64 {
    node.metrics.value(name).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_sends_each_request_to_a_replica_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    // Five nodes, N=3: most nodes are not replicas of a given key.
    let mut nodes = cluster_of(dir.path(), 5).await;
    let seed = nodes[0].addrs.grpc.to_string();
    let forwarded = |nodes: &[RunningNode]| -> u64 {
        nodes
            .iter()
            .map(|n| metric(n, "ringkv_forwarded_writes_total"))
            .sum()
    };

    // One node for everything: it forwards the writes it is no replica of.
    let mut plain = Client::connect(&seed).await.unwrap();
    assert!(!plain.is_token_aware());
    for i in 0..40 {
        plain.put(format!("plain-{i}"), "v").await.unwrap();
    }
    assert!(forwarded(&nodes) > 0, "a lone coordinator must forward");

    // Token-aware: every write lands on a replica of its key, and the
    // replicas take turns coordinating.
    let before = forwarded(&nodes);
    let requests = |n: &RunningNode| {
        metric(
            n,
            "ringkv_requests_total{op=\"put\",consistency=\"default\",outcome=\"ok\"}",
        )
    };
    let served_before: Vec<u64> = nodes.iter().map(requests).collect();
    let mut c = Client::connect_cluster(&["http://127.0.0.1:1", &seed])
        .await
        .unwrap();
    assert!(c.is_token_aware());
    for i in 0..100 {
        c.put(format!("routed-{i}"), format!("v{i}")).await.unwrap();
    }
    assert_eq!(forwarded(&nodes), before, "no routed write was forwarded");
    let coordinators = nodes
        .iter()
        .zip(&served_before)
        .filter(|(n, b)| requests(n) > **b)
        .count();
    assert!(
        coordinators >= 4,
        "writes went to {coordinators} nodes only"
    );
    for i in 0..100 {
        let got = c.get(format!("routed-{i}")).await.unwrap();
        assert_eq!(got.value().unwrap().as_ref(), format!("v{i}").as_bytes());
    }

    // A replica that is gone: requests for its keys fall back to the seed.
    let gone = nodes.pop().unwrap();
    gone.shutdown().await;
    for i in 0..100 {
        c.put(format!("routed-{i}"), "again").await.unwrap();
    }
    for n in nodes {
        n.shutdown().await;
    }
}
