//! Node reliability with real node processes (issue 10): hints of large
//! values always drain (item 1), and a bridge partition — gossip keeps
//! everyone alive while requests between the halves vanish — is routed
//! around by the per-peer circuit breakers (item 15).

use std::time::{Duration, Instant};

use ringkv_client::PutOptions;
use ringkv_e2e::cluster::{Options, ProcessCluster, live_values};
use ringkv_e2e::netns::Network;
use ringkv_e2e::skip_if;

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");

/// Item 1: hints are handed off in batches bounded by bytes. Six values of
/// 900 KB (5.4 MB of hints for one replica, twice the internode message
/// limit) written while a replica is down all reach it once it is back;
/// before, the one 512-hint batch was refused every tick for 3 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hints_of_large_values_drain_to_a_replica_that_comes_back() {
    let mut c = ProcessCluster::start(BIN, Options::default())
        .await
        .unwrap();
    let gone = c.node_id(2).to_string();
    c.kill(2);
    for i in 0..2 {
        c.wait_status(i, 60, "node 2 to be seen down", |s| {
            s.members.iter().any(|m| m.node_id == gone && !m.alive)
        })
        .await
        .unwrap();
    }
    let mut cl = c.client(0).await.unwrap();
    let value = |k: usize| vec![b'a' + k as u8; 900_000];
    for k in 0..6 {
        cl.put_with(format!("big-{k}"), value(k), PutOptions::default())
            .await
            .unwrap();
    }
    let held: u64 = {
        let mut n = 0;
        for i in 0..2 {
            n += c.status(i).await.unwrap().pending_hints;
        }
        n
    };
    assert!(held >= 6, "{held} hints held for node 2");
    c.restart(2).unwrap();
    c.wait_all_alive(3).await.unwrap();
    for i in 0..3 {
        c.wait_status(i, 90, "every hint handed off", |s| s.pending_hints == 0)
            .await
            .unwrap();
    }
    for k in 0..6 {
        let r = c
            .replica_record(2, format!("big-{k}").as_bytes())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("big-{k} never reached node 2"));
        assert_eq!(live_values(&r), vec![value(k)], "big-{k} on node 2");
    }
    let failures: u64 = {
        let mut n = 0;
        for i in 0..2 {
            n += c.metric(i, "ringkv_hint_delivery_failures_total").await;
        }
        n
    };
    assert_eq!(failures, 0, "hand-off batches failed");
}

/// Item 15: nodes {0,1} and {3,4} cannot reach each other; node 2 reaches
/// everyone, so gossip (relayed through it) keeps all five alive. Once a
/// side's breakers have tripped on the other side's nodes, writes through
/// either side wait for no timeout: they go to substitutes as hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bridge_partition_is_routed_around_by_the_circuit_breakers() {
    let why = Network::available().err();
    skip_if!(
        why.is_some(),
        "real network partitions unavailable: {}",
        why.unwrap_or_default()
    );
    let c = ProcessCluster::start(
        BIN,
        Options {
            nodes: 5,
            namespaces: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let net = c.network().unwrap();
    net.partition(&[&[0, 1], &[3, 4]]).unwrap();
    let (mut left, mut right) = (c.client(0).await.unwrap(), c.client(4).await.unwrap());
    // Write until every node of each side has given up on both nodes of
    // the other side (a breaker trips after 3 failed calls in a row; writes
    // through node 0 are coordinated by node 1 too, and so on).
    let until = Instant::now() + Duration::from_secs(90);
    let mut k = 0usize;
    loop {
        let mut tripped = Vec::new();
        for i in [0usize, 1, 3, 4] {
            tripped.push(c.metric(i, "ringkv_peers_suspected_total").await);
        }
        if tripped.iter().all(|&t| t >= 2) {
            break;
        }
        assert!(
            Instant::now() < until,
            "breakers tripped on nodes 0, 1, 3, 4: {tripped:?}"
        );
        // Failures here are the timeouts that trip the breakers.
        let _ = left.put(format!("warm-{k}"), "v").await;
        let _ = right.put(format!("warm-{k}"), "v").await;
        k += 1;
    }
    // Gossip still calls everyone alive: the breaker, not the failure
    // detector, is what routes around the cut.
    for i in [0usize, 4] {
        let s = c.status(i).await.unwrap();
        assert!(
            s.members.iter().all(|m| m.alive),
            "node {i} sees a member down: the cut is not a bridge partition"
        );
    }
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for k in 0..120 {
        for (side, cl) in [("left", &mut left), ("right", &mut right)] {
            let w = Instant::now();
            cl.put(format!("bridge-{k}"), side)
                .await
                .unwrap_or_else(|e| panic!("{side} write bridge-{k}: {e}"));
            slowest = slowest.max(w.elapsed());
        }
    }
    let took = t.elapsed();
    println!(
        "240 writes across a bridge partition in {took:?} ({:.0}/s), slowest {slowest:?}",
        240.0 / took.as_secs_f64()
    );
    // A forward or replica write to the other side waits half the request
    // timeout (1 s) before giving up; none of these may.
    assert!(
        slowest < Duration::from_secs(1),
        "a write waited {slowest:?}: it called a node behind the cut"
    );
    net.heal().unwrap();
    c.wait_all_alive(5).await.unwrap();
    for i in 0..5 {
        c.wait_status(i, 90, "hints to drain after the heal", |s| {
            s.pending_hints == 0
        })
        .await
        .unwrap();
    }
}
