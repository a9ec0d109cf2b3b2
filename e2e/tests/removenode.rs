//! Replacing a node gone for good, with real processes, under writes.
//!
//! Four nodes (N=3) are loaded with 1500 keys written once, then a writer
//! keeps rewriting 300 others through node 0.
//! Removing a live node is refused. Node 3 is killed and its data directory
//! wiped (its volume is lost); node 1 runs RemoveNode for it while the writes
//! go on: every node sees it LEFT, and every acknowledged write is then held
//! by all three remaining nodes (its replicas) and readable at quorum. Node 3 comes back with an
//! empty directory under the same id and joins as a new node; a cleanup on
//! each old node then leaves every acknowledged write on exactly its three
//! replicas — nothing it no longer replicates, nothing it does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringkv_e2e::cluster::{Options, ProcessCluster};
use ringkv_e2e::history::History;
use ringkv_e2e::verify;
use ringkv_e2e::workload::Writer;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::key_value_client::KeyValueClient;
use ringkv_proto::v1::remove_node_status::Phase;
use ringkv_proto::v1::{CleanupRequest, NodeState, RemoveNodeRequest, RingRequest};

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");

async fn remove_node(c: &ProcessCluster, via: usize, node: &str) -> Result<Phase, tonic::Status> {
    let mut a = AdminClient::connect(c.endpoints(via).admin.clone())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let s = a
        .remove_node(RemoveNodeRequest {
            node_id: node.into(),
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    Ok(Phase::try_from(s.phase).unwrap_or(Phase::Unspecified))
}

/// Node ids of each key's replicas, from node `via`'s ring.
async fn replica_sets(
    c: &ProcessCluster,
    via: usize,
    keys: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut kv = KeyValueClient::connect(c.endpoints(via).grpc.clone())
        .await
        .unwrap();
    let ring = kv.ring(RingRequest {}).await.unwrap().into_inner();
    let mut ranges: Vec<_> = ring
        .ranges
        .iter()
        .filter(|r| !r.replicas.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.end);
    keys.iter()
        .map(|k| {
            let t = ringkv_node::ring::key_token(k.as_bytes());
            let i = ranges.partition_point(|r| r.end < t);
            let r = ranges[if i == ranges.len() { 0 } else { i }];
            let ids = r
                .replicas
                .iter()
                .map(|&n| ring.nodes[n as usize].node_id.clone())
                .collect();
            (k.clone(), ids)
        })
        .collect()
}

async fn cleanup(c: &ProcessCluster, i: usize) -> ringkv_proto::v1::CleanupStatus {
    let mut a = AdminClient::connect(c.endpoints(i).admin.clone())
        .await
        .unwrap();
    let r = a.cleanup(CleanupRequest {}).await.unwrap().into_inner();
    assert!(r.started);
    c.wait_status(i, 300, "cleanup to finish", |s| {
        s.cleanup
            .as_ref()
            .is_some_and(|x| !x.running && x.cleanup_id == r.cleanup_id)
    })
    .await
    .unwrap()
    .cleanup
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_is_removed_replaced_and_old_nodes_cleaned_up() {
    let mut c = ProcessCluster::start(
        BIN,
        Options {
            nodes: 4,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    c.wait_all_alive(4).await.unwrap();
    let hist = Arc::new(History::new());
    // Keys written once before node 3 dies and never again: only streaming
    // can bring them to the nodes that take over node 3's ranges.
    let preload = Writer {
        name: "pre".into(),
        endpoint: c.endpoints(1).grpc.clone(),
        keys: 1500,
        pause: Duration::ZERO,
    };
    let stop_preload = Arc::new(AtomicBool::new(false));
    let pre = tokio::spawn(preload.clone().run(hist.clone(), stop_preload.clone()));
    while hist.writes().0 < preload.keys {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_preload.store(true, Ordering::Relaxed);
    pre.await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        name: "w".into(),
        endpoint: c.endpoints(0).grpc.clone(),
        keys: 300,
        pause: Duration::from_millis(2),
    };
    let task = tokio::spawn(writer.clone().run(hist.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let gone = c.node_id(3).to_string();
    // A live node is never removed.
    let e = remove_node(&c, 1, &gone).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("alive"), "{e}");

    // node-3's volume is lost: killed, data directory wiped, not restarted.
    c.wipe(3).unwrap();
    for i in c.running() {
        c.wait_status(i, 120, "node 3 down", |s| {
            s.members.iter().any(|m| m.node_id == gone && !m.alive)
        })
        .await
        .unwrap();
    }
    let removing = std::time::Instant::now();
    let phase = remove_node(&c, 1, &gone).await.unwrap();
    assert!(
        matches!(phase, Phase::Announcing | Phase::Streaming),
        "{phase:?}"
    );
    let s = c
        .wait_status(1, 300, "removal DONE", |s| {
            s.removal
                .as_ref()
                .is_some_and(|r| r.phase == Phase::Done as i32 || r.phase == Phase::Failed as i32)
        })
        .await
        .unwrap();
    let r = s.removal.unwrap();
    assert_eq!(r.phase, Phase::Done as i32, "{r:?}");
    println!(
        "removal of {gone} took {:?}: {} ranges, {} keys / {} bytes streamed",
        removing.elapsed(),
        r.ranges_total,
        r.keys_streamed,
        r.bytes_streamed
    );
    assert!(
        r.ranges_total > 0 && r.ranges_done == r.ranges_total,
        "{r:?}"
    );
    assert!(
        r.keys_streamed > 0,
        "the preloaded keys were streamed: {r:?}"
    );
    for i in c.running() {
        c.wait_status(i, 60, "node 3 LEFT", |s| {
            s.members
                .iter()
                .any(|m| m.node_id == gone && m.state == NodeState::Left as i32)
        })
        .await
        .unwrap();
    }
    // Asking again reports it done.
    assert_eq!(remove_node(&c, 1, &gone).await.unwrap(), Phase::Done);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let (writes, failed) = hist.writes();
    println!("{writes} writes ({failed} failed) before, during and after the removal");
    assert!(writes > 200, "{writes} writes");
    let missing =
        verify::acknowledged_writes_replicated(&c, &hist, 3, Duration::from_secs(30)).await;
    assert!(
        missing.is_empty(),
        "{:#?}",
        &missing[..missing.len().min(10)]
    );
    let unreadable = verify::acknowledged_writes_readable(&c, 2, &hist, "quorum").await;
    assert!(
        unreadable.is_empty(),
        "{:#?}",
        &unreadable[..unreadable.len().min(10)]
    );

    // The same id with an empty directory joins as a new node.
    c.restart(3).unwrap();
    c.wait_all_alive(4).await.unwrap();

    // Cleanup on each old node: every key ends up on exactly its replicas.
    let mut dropped = 0;
    for i in 0..3 {
        let s = cleanup(&c, i).await;
        assert_eq!((s.ranges_kept, s.last_error.as_str()), (0, ""), "{s:?}");
        println!(
            "cleanup on {}: {} keys / {} bytes dropped, {} keys pushed first",
            c.node_id(i),
            s.keys_dropped,
            s.bytes_dropped,
            s.keys_pushed
        );
        dropped += s.keys_dropped;
    }
    assert!(dropped > 0, "the rejoined node took ranges from the others");
    let keys: Vec<String> = (0..writer.keys)
        .map(|j| writer.key(j))
        .chain((0..preload.keys).map(|j| preload.key(j)))
        .collect();
    let sets = replica_sets(&c, 0, &keys).await;
    let expected = hist.expected();
    for (k, reps) in &sets {
        assert_eq!(reps.len(), 3, "{k}: {reps:?}");
        for i in 0..4 {
            let held = c.replica_record(i, k.as_bytes()).await.unwrap().is_some();
            let replica = reps.iter().any(|r| r == c.node_id(i));
            if expected.get(k).is_some_and(|(acked, _)| acked.is_some()) || !replica {
                assert_eq!(held, replica, "{k} on {} (replicas {reps:?})", c.node_id(i));
            }
        }
    }
    let missing =
        verify::acknowledged_writes_replicated(&c, &hist, 3, Duration::from_secs(10)).await;
    assert!(
        missing.is_empty(),
        "{:#?}",
        &missing[..missing.len().min(10)]
    );
    let unreadable = verify::acknowledged_writes_readable(&c, 3, &hist, "quorum").await;
    assert!(
        unreadable.is_empty(),
        "{:#?}",
        &unreadable[..unreadable.len().min(10)]
    );
}
