//! Day-2 operations in-process: cleanup after a join (drops exactly what a
//! node no longer replicates, never a record its replicas lack) and
//! removenode (a node gone for good, replaced from the surviving replicas).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use ringkv_node::membership::NodeState;
use ringkv_node::version::{DvvSet, Record, Value};
use ringkv_node::{Config, NodeOptions, RunningNode};
use ringkv_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(90);

fn fast(cfg: &mut Config) {
    cfg.sync = ringkv_node::config::SyncMode::Never;
}

/// Every node sees `count` members, all NORMAL and alive (no move in progress).
async fn settled(c: &Cluster, count: usize) -> bool {
    c.nodes.iter().all(|n| {
        let v = n.membership.view();
        v.members.len() == count
            && v.members
                .iter()
                .all(|m| m.alive && m.state == NodeState::Normal)
    })
}

/// The keys node `i` stores (user keys, as strings).
async fn stored_keys(c: &Cluster, i: usize) -> BTreeSet<String> {
    let store = c.nodes[i].replica.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeSet::new();
        store
            .scan_tokens_blocking(0, u64::MAX, |ek, _| {
                out.insert(String::from_utf8_lossy(&ek[8..]).to_string());
                true
            })
            .unwrap();
        out
    })
    .await
    .unwrap()
}

/// Replica ids of `key` as node `observer` sees the ring.
fn replicas_seen_by(c: &Cluster, observer: usize, key: &str) -> Vec<String> {
    let topo = c.nodes[observer].coordinator.topology();
    topo.replicas(key.as_bytes(), 3)
        .iter()
        .map(|m| m.node_id.clone())
        .collect()
}

/// Every key's replicas (by node `observer`'s ring) hold exactly its value.
async fn on_every_replica(
    c: &Cluster,
    observer: usize,
    latest: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in latest {
        let reps = replicas_seen_by(c, observer, k);
        if reps.len() != 3 {
            return Err(format!("{k} has {} replicas: {reps:?}", reps.len()));
        }
        for r in reps {
            let vals = c.local_values(c.index_of(&r), k.as_bytes()).await;
            if vals != vec![v.clone().into_bytes()] {
                return Err(format!("{k} on {r}: {vals:?} (want {v})"));
            }
        }
    }
    Ok(())
}

async fn cleanup_and_wait(c: &Cluster, i: usize) -> pb::CleanupStatus {
    let started = c
        .admin(i)
        .await
        .cleanup(pb::CleanupRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(started.started);
    eventually(LONG, "the cleanup to finish", || async {
        let s = c.nodes[i].status().cleanup.unwrap();
        !s.running && s.cleanup_id == started.cleanup_id
    })
    .await;
    c.nodes[i].status().cleanup.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_a_join_drops_exactly_what_the_node_no_longer_replicates() {
    let mut c = Cluster::start(4, fast).await;
    let mut kv = c.kv(0).await;
    let mut latest = BTreeMap::new();
    for i in 0..400 {
        let k = format!("k{i:04}");
        put(&mut kv, &k, &format!("v{i}"), "").await.unwrap();
        latest.insert(k, format!("v{i}"));
    }
    // Nothing to drop yet: node-0 holds only what it replicates.
    let s = cleanup_and_wait(&c, 0).await;
    assert!(s.ranges_total > 0, "{s:?}");
    assert_eq!((s.keys_dropped, s.last_error.as_str()), (0, ""), "{s:?}");

    let j = c.add_node(fast).await;
    // While node-4 joins, cleanup is refused: a move still needs old copies.
    eventually(LONG, "node-0 to see node-4 joining", || async {
        c.nodes[0]
            .membership
            .view()
            .get("node-4")
            .is_some_and(|m| m.state == NodeState::Joining)
    })
    .await;
    let refused = c
        .admin(0)
        .await
        .cleanup(pb::CleanupRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("node-4"),
        "{}",
        refused.message()
    );
    eventually(LONG, "node-4 to join and every node to see it", || async {
        c.nodes[j].status().state == pb::NodeState::Normal as i32 && settled(&c, 5).await
    })
    .await;

    // A record only node-0 holds, for a key it does not replicate (as a
    // sloppy write whose hints are not delivered yet would be).
    let stray = (0..)
        .map(|i| format!("stray{i}"))
        .find(|k| !replicas_seen_by(&c, 0, k).contains(&"node-0".to_string()))
        .unwrap();
    let rec = Record::Causal(DvvSet::default().event(
        "elsewhere",
        Value {
            data: Some(bytes::Bytes::from_static(b"only-on-node-0")),
            expires_at_ms: 0,
            written_at_ms: ringkv_node::coordinator::now_ms(),
        },
    ));
    c.nodes[0]
        .replica
        .apply(stray.as_bytes(), rec)
        .await
        .unwrap();
    let stray_reps = replicas_seen_by(&c, 0, &stray);
    for r in &stray_reps {
        assert!(
            c.local_values(c.index_of(r), stray.as_bytes())
                .await
                .is_empty()
        );
    }

    let owned = |c: &Cluster, k: &str| replicas_seen_by(c, 0, k).contains(&"node-0".to_string());
    let before = stored_keys(&c, 0).await;
    assert!(before.contains(&stray));
    assert!(
        before.iter().any(|k| *k != stray && !owned(&c, k)),
        "the join took some ranges from node-0"
    );

    // One replica of the stray key (an old node) is cut off: the ranges it
    // replicates must be kept, the others dropped.
    let down = stray_reps.iter().find(|r| *r != "node-4").unwrap().clone();
    let d = c.index_of(&down);
    let others: Vec<&str> = (0..c.nodes.len())
        .filter(|&i| i != d)
        .map(|i| c.nodes[i].node_id())
        .collect();
    c.faults.isolate(&down, &others);
    eventually(LONG, "node-0 to see the isolated replica down", || async {
        c.nodes[0]
            .membership
            .view()
            .get(&down)
            .is_some_and(|m| !m.alive)
    })
    .await;
    let s = cleanup_and_wait(&c, 0).await;
    assert!(s.ranges_kept > 0 && !s.last_error.is_empty(), "{s:?}");
    assert!(s.keys_dropped > 0, "{s:?}");
    let after = stored_keys(&c, 0).await;
    for k in &before {
        let reps = replicas_seen_by(&c, 0, k);
        let keep = reps.contains(&"node-0".to_string()) || reps.contains(&down);
        assert_eq!(after.contains(k), keep, "{k} (replicas {reps:?})");
    }
    assert!(
        after.contains(&stray),
        "a range with a replica down is kept"
    );

    // Healed: the stray record reaches every replica, then goes from node-0.
    c.faults.heal();
    eventually(LONG, "every node to see all alive", || async {
        settled(&c, 5).await
    })
    .await;
    let s = cleanup_and_wait(&c, 0).await;
    assert_eq!((s.ranges_kept, s.last_error.as_str()), (0, ""), "{s:?}");
    assert!(s.keys_pushed >= 1, "the stray record was pushed: {s:?}");
    assert!(s.last_completed_unix_ms > 0);
    let after = stored_keys(&c, 0).await;
    let expected: BTreeSet<String> = before.iter().filter(|k| owned(&c, k)).cloned().collect();
    assert_eq!(after, expected, "node-0 keeps exactly what it replicates");
    for r in &stray_reps {
        assert_eq!(
            c.local_values(c.index_of(r), stray.as_bytes()).await,
            vec![b"only-on-node-0".to_vec()],
            "the stray record on its replica {r}"
        );
    }
    on_every_replica(&c, 0, &latest).await.unwrap();
    let mut kv1 = c.kv(1).await;
    for (k, v) in &latest {
        assert_eq!(values(&get(&mut kv1, k).await), vec![v.clone()], "{k}");
    }
    c.stop().await;
}

/// Starts a node from `cfg` seeded with `seed`.
async fn start_node(c: &Cluster, mut cfg: Config, seed: usize) -> RunningNode {
    cfg.seeds = vec![c.nodes[seed].addrs.gossip.to_string()];
    RunningNode::start(
        cfg,
        NodeOptions {
            faults: Some(c.faults.clone()),
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removenode_restores_every_range_from_the_survivors() {
    let mut c = Cluster::start(5, fast).await;
    let mut kv = c.kv(0).await;
    let mut latest = BTreeMap::new();
    for i in 0..400 {
        let k = format!("k{i:04}");
        put(&mut kv, &k, &format!("v{i}"), "").await.unwrap();
        latest.insert(k, format!("v{i}"));
    }
    let remove = |node: &str| pb::RemoveNodeRequest {
        node_id: node.to_string(),
    };

    // Refused: a live node, an unknown one, this node itself.
    let e = c
        .admin(1)
        .await
        .remove_node(remove("node-4"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("alive"), "{}", e.message());
    let e = c
        .admin(1)
        .await
        .remove_node(remove("nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .admin(1)
        .await
        .remove_node(remove("node-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // node-4 goes away for good (its data directory is kept for later).
    let gone_cfg = c.configs[4].clone();
    c.nodes.remove(4).shutdown().await;
    eventually(LONG, "every node to see node-4 down", || async {
        c.nodes
            .iter()
            .all(|n| n.membership.view().get("node-4").is_some_and(|m| !m.alive))
    })
    .await;
    // Writes go on meanwhile (node-4's share as hints).
    for i in 400..500 {
        let k = format!("k{i:04}");
        put(&mut kv, &k, &format!("v{i}"), "").await.unwrap();
        latest.insert(k, format!("v{i}"));
    }

    // node-1 coordinates; asking again reports the same removal.
    let first = c
        .admin(1)
        .await
        .remove_node(remove("node-4"))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(first.node_id, "node-4");
    assert_ne!(first.phase, pb::remove_node_status::Phase::Failed as i32);
    let again = c
        .admin(1)
        .await
        .remove_node(remove("node-4"))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(again.node_id, "node-4");
    eventually(LONG, "the removal to finish", || async {
        c.nodes[1].status().removal.unwrap().phase == pb::remove_node_status::Phase::Done as i32
    })
    .await;
    let done = c.nodes[1].status().removal.unwrap();
    assert!(
        done.ranges_total > 0 && done.ranges_done == done.ranges_total && done.keys_streamed > 0,
        "{done:?}"
    );
    eventually(LONG, "every node to see node-4 LEFT", || async {
        c.nodes.iter().all(|n| {
            n.membership
                .view()
                .get("node-4")
                .is_some_and(|m| m.state == NodeState::Left)
                && n.status()
                    .removed_nodes
                    .iter()
                    .any(|r| r.node_id == "node-4" && r.done && r.removed_by == "node-1")
        })
    })
    .await;
    // Every key is on all three of its (new) replicas, replica by replica,
    // with no repair run, and readable at quorum.
    for observer in 0..c.nodes.len() {
        on_every_replica(&c, observer, &latest).await.unwrap();
    }
    let mut kv2 = c.kv(2).await;
    for (k, v) in &latest {
        assert_eq!(values(&get(&mut kv2, k).await), vec![v.clone()], "{k}");
    }
    // Hints held for node-4 are dropped.
    eventually(LONG, "hints for node-4 to be dropped", || async {
        c.nodes
            .iter()
            .all(|n| !n.status().pending_hints_by_node.contains_key("node-4"))
    })
    .await;

    // node-4 restarted on its stale data directory does not rejoin: it
    // finds itself removed, turns LEFT and refuses clients.
    let stale = start_node(&c, gone_cfg.clone(), 0).await;
    eventually(LONG, "the stale node-4 to turn itself LEFT", || async {
        stale.status().state == pb::NodeState::Left as i32
    })
    .await;
    let mut kv4 =
        pb::key_value_client::KeyValueClient::connect(format!("http://{}", stale.addrs.grpc))
            .await
            .unwrap();
    let e = put(&mut kv4, "k0000", "stale", "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    for n in &c.nodes {
        assert_eq!(
            n.membership.view().get("node-4").map(|m| m.state),
            Some(NodeState::Left)
        );
    }
    stale.shutdown().await;

    // Started afresh (empty data directory), the same id joins as a new node.
    std::fs::remove_dir_all(&gone_cfg.data_dir).unwrap();
    let fresh = start_node(&c, gone_cfg, 0).await;
    c.nodes.push(fresh);
    eventually(
        LONG,
        "the new node-4 to join and be seen NORMAL",
        || async { settled(&c, 5).await },
    )
    .await;
    for (k, v) in &latest {
        assert_eq!(values(&get(&mut kv2, k).await), vec![v.clone()], "{k}");
    }
    on_every_replica(&c, 0, &latest).await.unwrap();

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removenode_is_refused_when_fewer_than_n_nodes_would_remain() {
    let mut c = Cluster::start(3, fast).await;
    c.nodes.remove(2).shutdown().await;
    eventually(LONG, "node-0 to see node-2 down", || async {
        c.nodes[0]
            .membership
            .view()
            .get("node-2")
            .is_some_and(|m| !m.alive)
    })
    .await;
    let e = c
        .admin(0)
        .await
        .remove_node(pb::RemoveNodeRequest {
            node_id: "node-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("N=3"), "{}", e.message());
    // Nothing was announced.
    assert!(c.nodes[0].status().removed_nodes.is_empty());
    c.stop().await;
}
