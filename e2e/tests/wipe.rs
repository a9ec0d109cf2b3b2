//! A node whose data directory is wiped comes back and anti-entropy restores
//! what it held, moving little more than what was missing.
//!
//! Four real nodes, N=3, keys written at W=all so every replica has them.
//! Node 2's share is measured replica by replica, its directory is deleted,
//! it restarts with the same identity, and `Admin.Repair` runs on it. Then it
//! must hold every key it held before, and the bytes streamed by the repair
//! must be at most twice the bytes that were missing (not a copy of
//! everything).

use std::time::Instant;

use futures::StreamExt;
use ringkv_client::PutOptions;
use ringkv_e2e::cluster::{Options, ProcessCluster, live_values};

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");
const KEYS: usize = 2000;
const VALUE: usize = 512;

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(VALUE, b'a' + (i % 26) as u8);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_is_restored_by_anti_entropy() {
    let mut c = ProcessCluster::start(
        BIN,
        Options {
            nodes: 4,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let client = c.client(0).await.unwrap();
    // Sixteen writes in flight: the point is the data, not the latency.
    futures::stream::iter(0..KEYS)
        .for_each_concurrent(16, |i| {
            let mut client = client.clone();
            async move {
                client
                    .put_with(format!("key-{i}"), value(i), PutOptions::default().w("all"))
                    .await
                    .unwrap();
            }
        })
        .await;
    let mut client = client;
    println!("[{:?}] wrote {KEYS} keys at W=all", t0.elapsed());
    let victim = 2;
    let mut held = Vec::new();
    for i in 0..KEYS {
        let k = format!("key-{i}");
        if let Some(r) = c.replica_record(victim, k.as_bytes()).await.unwrap()
            && live_values(&r) == vec![value(i)]
        {
            held.push(i);
        }
    }
    // With 4 nodes and N=3, a node holds about three quarters of the keys.
    assert!(
        held.len() > KEYS / 2,
        "node {victim} held only {} keys",
        held.len()
    );
    let missing_bytes: u64 = held
        .iter()
        .map(|&i| (format!("key-{i}").len() + VALUE) as u64)
        .sum();

    println!(
        "[{:?}] wrote and measured {} keys",
        t0.elapsed(),
        held.len()
    );
    c.wipe(victim).unwrap();
    let started = Instant::now();
    c.restart(victim).unwrap();
    // It comes back REPAIRING (no reads, not ready) and restores its ranges
    // from the other replicas by itself; everyone then sees it NORMAL.
    // Meanwhile r=one reads it coordinates never answer from its own empty
    // store: every key it held is found (errors while it learns the ring
    // are no wrong answer; a miss is).
    let mut through_victim = c.client(victim).await.unwrap();
    let (mut misses, mut found, mut repairing_seen) = (Vec::new(), 0, false);
    for &i in &held {
        let k = format!("key-{i}");
        if let Ok(g) = through_victim.get_with(&k, "one").await {
            if g.found() {
                found += 1;
            } else {
                misses.push(k);
            }
        }
        if !repairing_seen && let Ok(s) = c.status(victim).await {
            repairing_seen = s.state == ringkv_client::pb::NodeState::Repairing as i32;
        }
    }
    println!(
        "[{:?}] r=one reads through the restarted node: {found} found, {} missing (REPAIRING seen: {repairing_seen})",
        t0.elapsed(),
        misses.len()
    );
    assert!(
        misses.is_empty(),
        "the wiped node answered {} reads from its empty store, e.g. {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    c.wait_all_alive(4).await.unwrap();
    let took = started.elapsed();
    let after = c.status(victim).await.unwrap().repair.unwrap_or_default();
    println!(
        "[{:?}] victim restored itself: {} keys, {} bytes",
        t0.elapsed(),
        after.keys_streamed,
        after.bytes_streamed
    );
    let before = ringkv_client::pb::RepairStatus::default();
    let mut lost = Vec::new();
    for &i in &held {
        let k = format!("key-{i}");
        match c.replica_record(victim, k.as_bytes()).await.unwrap() {
            Some(r) if live_values(&r) == vec![value(i)] => {}
            other => lost.push((k, other.map(|r| live_values(&r).len()))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} keys not restored, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let streamed = after.bytes_streamed - before.bytes_streamed;
    println!(
        "restored {} keys ({missing_bytes} bytes of keys and values) in {took:?}; repair streamed {streamed} bytes ({:.2}x)",
        held.len(),
        streamed as f64 / missing_bytes as f64
    );
    assert!(streamed > 0, "the restore reported no bytes streamed");
    assert!(
        streamed <= 2 * missing_bytes,
        "the restore streamed {streamed} bytes for {missing_bytes} missing: more than 2x"
    );
    // A repair afterwards finds the replicas in agreement.
    let r = c.repair(victim).await.unwrap();
    assert!(r.started, "repair did not start: {r:?}");
    let again = c
        .wait_status(victim, 300, "the repair to complete", |s| {
            s.repair
                .as_ref()
                .is_some_and(|rep| !rep.running && rep.last_completed_unix_ms > 0)
        })
        .await
        .unwrap()
        .repair
        .unwrap();
    assert!(
        again.bytes_streamed <= missing_bytes / 10,
        "a repair after the restore still moved {} bytes",
        again.bytes_streamed
    );
    // Nothing else was disturbed: a quorum read of every key still works.
    for i in (0..KEYS).step_by(97) {
        let g = client.get(format!("key-{i}")).await.unwrap();
        assert_eq!(g.value().map(|v| v.to_vec()), Some(value(i)));
    }
}
