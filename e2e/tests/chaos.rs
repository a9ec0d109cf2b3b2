//! Five real node processes, N=3 W=2 R=2. Three writers and a reader run
//! continuously (through nodes 0–2) while node 3 is SIGKILLed and later
//! restarted, and node 4 is SIGSTOPped for longer than failure detection.
//!
//! Asserted: no client-visible write failure; no quorum read older than a
//! write acknowledged before it began; and afterwards every acknowledged
//! write is held by all three of its replicas (checked replica by replica)
//! and readable at R=all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_e2e::cluster::{Options, ProcessCluster};
use ringkv_e2e::history::History;
use ringkv_e2e::verify;
use ringkv_e2e::workload::{Writer, read_loop};

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");

async fn wait_seen(c: &ProcessCluster, observer: usize, node: &str, alive: bool) -> Duration {
    let t = Instant::now();
    c.wait_status(observer, 60, &format!("{node} alive={alive}"), |s| {
        s.members
            .iter()
            .any(|m| m.node_id == node && m.alive == alive)
    })
    .await
    .unwrap();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_and_stop_lose_no_acknowledged_write() {
    let mut c = ProcessCluster::start(
        BIN,
        Options {
            nodes: 5,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let hist = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<Writer> = (0..3)
        .map(|w| Writer {
            name: format!("w{w}"),
            endpoint: c.endpoints(w).grpc.clone(),
            keys: 40,
            pause: Duration::from_millis(5),
        })
        .collect();
    let keys: Vec<String> = writers
        .iter()
        .flat_map(|w| (0..w.keys).map(|j| w.key(j)))
        .collect();
    let mut tasks = Vec::new();
    for w in writers {
        tasks.push(tokio::spawn(w.run(hist.clone(), stop.clone())));
    }
    let reader = tokio::spawn(read_loop(
        c.endpoints(0).grpc.clone(),
        keys,
        hist.clone(),
        stop.clone(),
        Duration::from_millis(5),
    ));

    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill(3);
    let detect_kill = wait_seen(&c, 0, c.node_id(3), false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    c.stop(4);
    let detect_stop = wait_seen(&c, 0, c.node_id(4), false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.resume(4);
    wait_seen(&c, 0, c.node_id(4), true).await;

    c.restart(3).unwrap();
    wait_seen(&c, 0, c.node_id(3), true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();

    let (writes, failed) = hist.writes();
    let (reads, failed_reads) = hist.reads();
    println!(
        "{writes} writes ({failed} failed), {reads} quorum reads ({failed_reads} failed); \
         kill detected in {detect_kill:?}, stop detected in {detect_stop:?}"
    );
    assert!(
        writes > 300,
        "too little traffic for the test to mean anything: {writes}"
    );
    let fw = hist.failed_writes();
    assert!(
        fw.is_empty(),
        "client-visible write failures: {:#?}",
        &fw[..fw.len().min(10)]
    );
    let stale = hist.stale_reads();
    assert!(
        stale.is_empty(),
        "stale reads: {:#?}",
        &stale[..stale.len().min(10)]
    );

    // Converge (hinted handoff, read repair, anti-entropy), then check every
    // replica of every key.
    for i in c.running() {
        c.repair(i).await.unwrap();
    }
    let missing =
        verify::acknowledged_writes_replicated(&c, &hist, 3, Duration::from_secs(120)).await;
    assert!(
        missing.is_empty(),
        "acknowledged writes not on all replicas: {:#?}",
        &missing[..missing.len().min(10)]
    );
    let unreadable = verify::acknowledged_writes_readable(&c, 1, &hist, "all").await;
    assert!(unreadable.is_empty(), "{unreadable:#?}");
}
