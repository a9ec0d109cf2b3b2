//! Join and decommission with real processes, under continuous writes.
//!
//! Three nodes are loaded; a writer keeps writing through node 0 while a
//! fourth node joins (it must reach NORMAL everywhere) and then node 1 is
//! decommissioned (it must stream its ranges away and reach LEFT). After node
//! 1 is gone, every write acknowledged before, during and after is readable
//! with its latest version, and — with three nodes left and N=3 — every one
//! of them is held by all three remaining nodes: no range stayed below N
//! replicas once streaming completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringkv_e2e::cluster::{Options, ProcessCluster};
use ringkv_e2e::history::History;
use ringkv_e2e::verify;
use ringkv_e2e::workload::Writer;
use ringkv_proto::v1::NodeState;
use ringkv_proto::v1::decommission_status::Phase;

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_then_decommission_keeps_every_write() {
    let mut c = ProcessCluster::start(BIN, Options::default())
        .await
        .unwrap();
    let hist = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        name: "w".into(),
        endpoint: c.endpoints(0).grpc.clone(),
        keys: 300,
        pause: Duration::from_millis(2),
    };
    let task = tokio::spawn(writer.run(hist.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Join.
    let joined = c.add_node_process().unwrap();
    let id = c.node_id(joined).to_string();
    for i in c.running() {
        c.wait_status(i, 180, &format!("{id} NORMAL"), |s| {
            s.members
                .iter()
                .any(|m| m.node_id == id && m.state == NodeState::Normal as i32 && m.alive)
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Decommission node 1 (idempotent: a second call reports progress).
    let leaving = c.node_id(1).to_string();
    c.decommission(1).await.unwrap();
    c.decommission(1).await.unwrap();
    c.wait_status(1, 300, "decommission DONE", |s| {
        s.decommission
            .as_ref()
            .is_some_and(|d| d.phase == Phase::Done as i32)
    })
    .await
    .unwrap();
    c.wait_status(0, 60, &format!("{leaving} LEFT"), |s| {
        s.members
            .iter()
            .any(|m| m.node_id == leaving && m.state == NodeState::Left as i32)
    })
    .await
    .unwrap();
    // Going below N is refused.
    let err = c.decommission(0).await.unwrap_err();
    assert!(
        err.contains("FailedPrecondition") || err.contains("precondition"),
        "{err}"
    );
    c.kill(1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::Relaxed);
    let attempted = task.await.unwrap();
    let (writes, failed) = hist.writes();
    println!(
        "{writes} writes ({failed} failed) across join and decommission; attempted {attempted}"
    );
    assert!(writes > 200);

    let unreadable = verify::acknowledged_writes_readable(&c, 0, &hist, "quorum").await;
    assert!(
        unreadable.is_empty(),
        "{:#?}",
        &unreadable[..unreadable.len().min(10)]
    );
    let missing =
        verify::acknowledged_writes_replicated(&c, &hist, 3, Duration::from_secs(60)).await;
    assert!(
        missing.is_empty(),
        "{:#?}",
        &missing[..missing.len().min(10)]
    );
}
