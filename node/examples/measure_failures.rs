//! Measurements for the failure-handling closing note (run by hand, release):
//!
//!   cargo run --release -p ringkv-node --example measure_failures -- detect [trials]
//!   cargo run --release -p ringkv-node --example measure_failures -- handoff [hints] [rate]
//!   cargo run --release -p ringkv-node --example measure_failures -- antientropy [keys] [percent]
//!
//! In-process nodes on loopback. "Killing" a node cuts it off with the fault
//! layer (gossip and gRPC), which is what a crash looks like to its peers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_node::config::SyncMode;
use ringkv_node::version::{DvvSet, Record, Value};
use ringkv_node::{Config, FaultInjector, NodeOptions, RunningNode};

struct Cluster {
    nodes: Vec<RunningNode>,
    faults: Arc<FaultInjector>,
    _dir: tempfile::TempDir,
}

async fn start(count: usize, tweak: impl Fn(&mut Config)) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..count {
        let mut c = Config::loopback(&format!("node-{i}"), dir.path().join(format!("node-{i}")));
        c.sync = SyncMode::Never;
        if let Some(first) = nodes.first() {
            c.seeds = vec![first.addrs.gossip.to_string()];
        }
        tweak(&mut c);
        let opts = NodeOptions {
            faults: Some(faults.clone()),
        };
        nodes.push(RunningNode::start(c, opts).await.unwrap());
    }
    let cl = Cluster {
        nodes,
        faults,
        _dir: dir,
    };
    wait(Duration::from_secs(300), || {
        cl.nodes.iter().all(|n| {
            let v = n.membership.view();
            v.members.len() == count
                && v.members
                    .iter()
                    .all(|m| m.alive && m.state == ringkv_node::membership::NodeState::Normal)
        })
    })
    .await;
    cl
}

async fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn value(i: u64, version: &str) -> Value {
    Value {
        data: Some(Bytes::from(format!("{version}-{i:0>96}"))),
        expires_at_ms: 0,
        written_at_ms: 1,
    }
}

fn record(i: u64, version: &str) -> Record {
    Record::Causal(DvvSet::default().event(version, value(i, version)))
}

/// A write that read `record(i, "a")` and replaced it.
fn overwrite(i: u64) -> Record {
    let Record::Causal(a) = record(i, "a") else {
        unreachable!()
    };
    Record::Causal(DvvSet::update(&a, &a.join(), "b", value(i, "b")))
}

/// Failure detection at default settings (1 s gossip, phi 8): time from a
/// node going silent until each other node marks it down.
async fn detect(trials: usize) {
    let c = start(5, |cfg| cfg.gossip_interval = Duration::from_secs(1)).await;
    let ids: Vec<String> = c.nodes.iter().map(|n| n.node_id().to_string()).collect();
    tokio::time::sleep(Duration::from_secs(20)).await; // heartbeat samples
    let mut samples = Vec::new();
    for t in 0..trials {
        let victim = 1 + t % 4;
        let others: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
        let killed = Instant::now();
        c.faults.isolate(&ids[victim], &others);
        let mut pending: Vec<usize> = (0..5).filter(|&i| i != victim).collect();
        while !pending.is_empty() {
            pending.retain(|&i| {
                let down = c.nodes[i]
                    .membership
                    .view()
                    .get(&ids[victim])
                    .is_some_and(|m| !m.alive);
                if down {
                    samples.push(killed.elapsed().as_secs_f64());
                }
                !down
            });
            assert!(killed.elapsed() < Duration::from_secs(120));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.faults.heal();
        wait(Duration::from_secs(120), || {
            c.nodes
                .iter()
                .all(|n| n.membership.view().members.iter().all(|m| m.alive))
        })
        .await;
        eprintln!("trial {t}: victim {} detected", ids[victim]);
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
    let n = samples.len();
    println!(
        "failure detection (gossip 1s, phi 8), {n} observations: p50 {:.2}s p99 {:.2}s max {:.2}s",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.99),
        pct(&mut samples, 1.0)
    );
}

/// Time for node 0 to hand 100k hints to node 2 once it is back.
async fn handoff(hints: u64, rate: u64) {
    let c = start(3, |cfg| cfg.hint_delivery_rate = rate).await;
    let ids: Vec<String> = c.nodes.iter().map(|n| n.node_id().to_string()).collect();
    c.faults.isolate(&ids[2], &[&ids[0], &ids[1]]);
    wait(Duration::from_secs(120), || {
        c.nodes[0]
            .membership
            .view()
            .get(&ids[2])
            .is_some_and(|m| !m.alive)
    })
    .await;
    let h = c.nodes[0].replica.hints().clone();
    let t = Instant::now();
    for i in 0..hints {
        let key = format!("hinted-{i:08}");
        h.store(
            &ids[2],
            key.as_bytes(),
            &record(i, "w"),
            ringkv_node::coordinator::now_ms(),
        )
        .await
        .unwrap();
    }
    eprintln!("stored {hints} hints in {:?}", t.elapsed());
    c.faults.heal();
    let healed = Instant::now();
    let seen = wait(Duration::from_secs(120), || {
        c.nodes[0]
            .membership
            .view()
            .get(&ids[2])
            .is_some_and(|m| m.alive)
    })
    .await;
    let drained = wait(Duration::from_secs(3600), || h.pending_total() == 0).await;
    let stored = c.nodes[2].replica.store().count().await.unwrap();
    println!(
        "hinted handoff of {hints} hints (hint_delivery_rate {rate}/s): owner seen alive {:.2}s after heal, drained {:.2}s after that ({:.0} hints/s); owner now stores {stored} keys; total {:.2}s",
        seen.as_secs_f64(),
        (drained).as_secs_f64(),
        hints as f64 / drained.as_secs_f64().max(1e-9),
        healed.elapsed().as_secs_f64()
    );
}

/// Anti-entropy on `keys` keys where node 2 missed `percent`% of the latest writes.
async fn antientropy(keys: u64, percent: f64) {
    let c = start(3, |cfg| cfg.repair_rate = 0).await;
    let t = Instant::now();
    let batch = 2000u64;
    let mut i = 0;
    while i < keys {
        let items: Vec<(Bytes, Record)> = (i..(i + batch).min(keys))
            .map(|k| (Bytes::from(format!("key-{k:010}")), record(k, "a")))
            .collect();
        for n in &c.nodes {
            n.replica.store().merge_batch(items.clone()).await.unwrap();
        }
        i += batch;
    }
    let stale = (keys as f64 * percent / 100.0) as u64;
    let step = (keys / stale.max(1)).max(1);
    let mut newer = Vec::new();
    let mut newer_bytes = 0u64;
    for k in (0..keys).step_by(step as usize).take(stale as usize) {
        let key = Bytes::from(format!("key-{k:010}"));
        let rec = overwrite(k);
        newer_bytes += key.len() as u64 + rec.encode().len() as u64;
        newer.push((key, rec));
    }
    for n in &c.nodes[..2] {
        for chunk in newer.chunks(2000) {
            n.replica.store().merge_batch(chunk.to_vec()).await.unwrap();
        }
    }
    eprintln!(
        "loaded {keys} keys on 3 nodes, {} newer on nodes 0 and 1 only, in {:?}",
        newer.len(),
        t.elapsed()
    );
    for n in &c.nodes {
        n.replica.store().flush().await.unwrap();
    }
    let r = c.nodes[2].repair.clone();
    let t = Instant::now();
    let (_, id) = r.start();
    wait(Duration::from_secs(3600), || {
        let s = r.status();
        !s.running && s.repair_id == id
    })
    .await;
    let took = t.elapsed();
    let s = r.status();
    println!(
        "anti-entropy on {keys} keys with {} ({percent}%) stale on one replica: {:.2}s for {} ranges; {} keys / {} record bytes streamed (the stale data is {newer_bytes} bytes) + {} digest bytes; errors: {:?}",
        newer.len(),
        took.as_secs_f64(),
        s.ranges_total,
        s.keys_streamed,
        s.bytes_streamed,
        s.digest_bytes,
        s.last_error
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(|s| s.as_str()) {
        Some("detect") => detect(num(1, 12) as usize).await,
        Some("handoff") => handoff(num(1, 100_000), num(2, 10_000)).await,
        Some("antientropy") => {
            antientropy(
                num(1, 1_000_000),
                args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0),
            )
            .await
        }
        _ => eprintln!(
            "usage: measure_failures detect [trials] | handoff [hints] [rate] | antientropy [keys] [percent]"
        ),
    }
}
