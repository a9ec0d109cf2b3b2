//! Surviving failures in-process, with the fault layer cutting both gRPC and
//! gossip: partitions with sloppy quorums and hinted handoff, anti-entropy
//! after a lost data directory, and join/decommission moving data.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use prost::Message as _;
use ringkv_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(60);

/// Every replica of every range node `i` replicates has the same Merkle
/// root as node `i` for it.
async fn replicas_agree(c: &Cluster) -> bool {
    let by_id: HashMap<String, usize> = (0..c.nodes.len())
        .map(|i| (c.nodes[i].node_id().to_string(), i))
        .collect();
    for node in &c.nodes {
        for (range, peers) in node.repair.my_ranges() {
            let mine = node.repair.range_root(range).await.unwrap();
            for p in peers {
                let Some(&j) = by_id.get(&p.node_id) else {
                    return false;
                };
                if c.nodes[j].repair.range_root(range).await.unwrap() != mine {
                    return false;
                }
            }
        }
    }
    true
}

async fn sees_down(c: &Cluster, observer: usize, others: &[usize]) -> bool {
    let v = c.view(observer);
    others
        .iter()
        .all(|&o| v.get(c.nodes[o].node_id()).is_some_and(|m| !m.alive))
}

async fn all_alive(c: &Cluster) -> bool {
    (0..c.nodes.len()).all(|i| {
        let v = c.view(i);
        v.members.len() == c.nodes.len() && v.members.iter().all(|m| m.alive)
    })
}

async fn repair_all(c: &Cluster) {
    for i in 0..c.nodes.len() {
        c.admin(i).await.repair(pb::RepairRequest {}).await.unwrap();
    }
    eventually(LONG, "repairs to finish", || async {
        let mut idle = true;
        for i in 0..c.nodes.len() {
            let s = c.nodes[i].status();
            idle &= !s.repair.unwrap().running;
        }
        idle
    })
    .await;
}

/// Convergence bound asserted after a heal: hints delivered plus one repair
/// on every node. Typically a few seconds here; generous for loaded CI.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_2_3_with_w1_keeps_both_sides_writable_then_converges_with_siblings() {
    let c = Cluster::start(5, |_| {}).await;
    let ids: Vec<String> = c.nodes.iter().map(|n| n.node_id().to_string()).collect();
    let mut kv0 = c.kv(0).await;
    let keys: Vec<String> = (0..24).map(|i| format!("cart-{i}")).collect();
    let mut ctx = HashMap::new();
    for k in &keys {
        put(&mut kv0, k, "base", "").await.unwrap();
        ctx.insert(k.clone(), get(&mut kv0, k).await.context);
    }

    // Cut {0,1} from {2,3,4}: gRPC and gossip.
    for a in 0..2 {
        for b in 2..5 {
            c.faults.partition(&ids[a], &ids[b]);
        }
    }
    eventually(LONG, "each side to see the other side down", || async {
        sees_down(&c, 0, &[2, 3, 4]).await
            && sees_down(&c, 1, &[2, 3, 4]).await
            && sees_down(&c, 2, &[0, 1]).await
            && sees_down(&c, 4, &[0, 1]).await
    })
    .await;

    // Both sides take a write of every key at W=1, from the same context.
    let (mut left, mut right) = (c.kv(1).await, c.kv(3).await);
    for k in &keys {
        for (kv, v) in [(&mut left, "left"), (&mut right, "right")] {
            let r = kv
                .put(pb::PutRequest {
                    key: k.clone().into_bytes().into(),
                    value: v.as_bytes().to_vec().into(),
                    context: ctx[k].clone(),
                    w: "one".into(),
                    ..Default::default()
                })
                .await;
            assert!(r.is_ok(), "{v} side refused {k}: {r:?}");
        }
    }
    let stored: u64 = c
        .nodes
        .iter()
        .map(|n| n.replica.hints().pending_total())
        .sum();
    assert!(stored > 0, "writes for the far side must leave hints");

    c.faults.heal();
    let healed = Instant::now();
    eventually(LONG, "everyone alive again", || all_alive(&c)).await;
    eventually(LONG, "hints handed off", || async {
        c.nodes
            .iter()
            .all(|n| n.replica.hints().pending_total() == 0)
    })
    .await;
    repair_all(&c).await;
    eventually(
        CONVERGENCE_BOUND,
        "every replica to have equal Merkle roots",
        || replicas_agree(&c),
    )
    .await;
    let took = healed.elapsed();
    assert!(took < CONVERGENCE_BOUND, "converged in {took:?}");
    eprintln!("partition healed -> converged in {took:?}");

    // Concurrent writes are siblings, on every replica alike.
    for k in &keys {
        let got = c
            .kv(4)
            .await
            .get(pb::GetRequest {
                key: k.clone().into_bytes().into(),
                r: "all".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(values(&got), vec!["left", "right"], "{k}");
    }
    let delivered: u64 = c
        .nodes
        .iter()
        .map(|n| n.metrics.value("ringkv_hints_delivered_total").unwrap_or(0))
        .sum();
    assert!(delivered > 0, "hints were delivered, per /metrics");
    c.stop().await;
}

/// Size of what node `i` stores (engine key + encoded record per key).
async fn stored_bytes(c: &Cluster, i: usize) -> u64 {
    let mut total = 0;
    let store = c.nodes[i].replica.store().clone();
    tokio::task::spawn_blocking(move || {
        store
            .scan_tokens_blocking(0, u64::MAX, |k, v| {
                total += (k.len() - 8 + v.len()) as u64;
                true
            })
            .unwrap();
        total
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_data_directory_is_restored_by_anti_entropy_streaming_under_2x() {
    let mut c = Cluster::start(3, |cfg| cfg.sync = ringkv_node::config::SyncMode::Never).await;
    let mut kv = c.kv(0).await;
    let count = 1500;
    for i in 0..count {
        put(&mut kv, &format!("user:{i:05}"), &"x".repeat(100), "")
            .await
            .unwrap();
    }
    // With three nodes at N=3 node 2 holds everything.
    eventually(LONG, "the third replica to have every write", || async {
        c.nodes[2].replica.store().count().await.unwrap() == count
    })
    .await;
    let missing = stored_bytes(&c, 2).await;
    let tokens_before = c.nodes[2].membership.local().tokens;

    c.restart(2, true).await;
    assert_eq!(
        c.nodes[2].membership.local().tokens,
        tokens_before,
        "a node whose disk was lost takes its tokens back from the ring"
    );
    // Until it has its data back it takes writes but serves no reads, and
    // is not ready: reads at R=1 through it come from the other replicas.
    let repairing = pb::NodeState::Repairing as i32;
    let mut kv2 = c.kv(2).await;
    let mut checked = 0;
    while c.nodes[2].status().state == repairing && checked < count {
        let k = format!("user:{checked:05}");
        let got = kv2
            .get(pb::GetRequest {
                key: k.clone().into_bytes().into(),
                r: "one".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found, "{k} read as absent from the node restoring it");
        checked += 1;
    }
    assert!(checked > 0, "the node was never seen REPAIRING");
    eventually(LONG, "the restore to finish", || async {
        c.nodes[2].status().state == pb::NodeState::Normal as i32
    })
    .await;
    assert_eq!(c.nodes[2].replica.store().count().await.unwrap(), count);
    let r = c.nodes[2].status().repair.unwrap();
    assert!(
        r.bytes_streamed >= missing && r.bytes_streamed <= 2 * missing,
        "streamed {} bytes to restore {missing} missing bytes",
        r.bytes_streamed
    );
    assert!(r.ranges.iter().all(|x| x.last_completed_unix_ms > 0));
    eprintln!(
        "wiped node restored: {} keys, {} record bytes streamed for {missing} missing, {} digest bytes",
        r.keys_streamed, r.bytes_streamed, r.digest_bytes
    );
    assert!(replicas_agree(&c).await);
    // A second repair finds nothing to move.
    let (mut admin, before) = (c.admin(2).await, r.repair_id);
    let started = admin
        .repair(pb::RepairRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(started.started && started.repair_id > before);
    eventually(LONG, "the second repair", || async {
        let r = c.nodes[2].status().repair.unwrap();
        !r.running && r.repair_id == started.repair_id
    })
    .await;
    assert_eq!(c.nodes[2].status().repair.unwrap().bytes_streamed, 0);
    c.stop().await;
}

/// Every key's replicas (as node `observer` sees the ring) hold its latest value.
async fn fully_replicated(
    c: &Cluster,
    observer: usize,
    latest: &HashMap<String, String>,
) -> Result<(), String> {
    let topo = c.nodes[observer].coordinator.topology();
    for (k, v) in latest {
        let reps = topo.replicas(k.as_bytes(), 3);
        if reps.len() != 3 {
            return Err(format!("{k} has {} replicas", reps.len()));
        }
        for r in reps {
            let i = c.index_of(&r.node_id);
            let vals = c.local_values(i, k.as_bytes()).await;
            if vals != vec![v.clone().into_bytes()] {
                return Err(format!(
                    "{k} on {}: {:?} (want {v})",
                    r.node_id,
                    vals.iter()
                        .map(|x| String::from_utf8_lossy(x).to_string())
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_a_fourth_node_then_decommission_one_keeps_every_key() {
    let mut c = Cluster::start(3, |cfg| cfg.sync = ringkv_node::config::SyncMode::Never).await;
    let mut kv = c.kv(0).await;
    let latest: Arc<parking_lot::Mutex<HashMap<String, String>>> = Arc::default();
    for i in 0..600 {
        let k = format!("k{i:04}");
        put(&mut kv, &k, "v0", "").await.unwrap();
        latest.lock().insert(k, "v0".into());
    }

    // A writer keeps updating keys (read context, write) through it all.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, latest) = (stop.clone(), latest.clone());
        let addr = c.nodes[1].addrs.grpc;
        tokio::spawn(async move {
            let mut kv = pb::key_value_client::KeyValueClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let mut round = 1u64;
            let mut errors: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for i in (0..600).step_by(7) {
                    let k = format!("k{i:04}");
                    let v = format!("v{round}");
                    let ctx = get(&mut kv, &k).await.context;
                    match put(&mut kv, &k, &v, &ctx).await {
                        Ok(_) => {
                            latest.lock().insert(k, v);
                        }
                        Err(e) => errors.push(format!("{k}: {e}")),
                    }
                }
                round += 1;
            }
            errors
        })
    };

    let j = c
        .add_node(|cfg| cfg.sync = ringkv_node::config::SyncMode::Never)
        .await;
    eventually(LONG, "the new node to finish joining", || async {
        c.nodes[j].status().state == pb::NodeState::Normal as i32
    })
    .await;
    let js = c.nodes[j].status().join.unwrap();
    assert!(
        js.ranges_done == js.ranges_total && js.keys_streamed > 0,
        "{js:?}"
    );
    c.wait_converged().await;

    // Decommission node 2 while writes go on.
    let mut admin = c.admin(2).await;
    let first = admin
        .decommission(pb::DecommissionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.status.unwrap().phase,
        pb::decommission_status::Phase::Streaming as i32
    );
    eventually(LONG, "the decommission to finish", || async {
        let s = c.nodes[2].status();
        s.state == pb::NodeState::Left as i32
            && s.decommission.unwrap().phase == pb::decommission_status::Phase::Done as i32
    })
    .await;
    // Idempotent: asking again reports the final progress.
    let again = admin
        .decommission(pb::DecommissionRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(again.phase, pb::decommission_status::Phase::Done as i32);
    assert!(again.ranges_done == again.ranges_total && again.keys_streamed > 0);
    // A LEFT node refuses clients.
    let e = put(&mut c.kv(2).await, "k0000", "late", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);

    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.unwrap();
    assert!(
        errors.is_empty(),
        "writes failed during join/decommission: {errors:?}"
    );
    eventually(LONG, "everyone to see node-2 LEFT", || async {
        [0, 1, 3].iter().all(|&i| {
            c.nodes[i]
                .membership
                .view()
                .get("node-2")
                .is_some_and(|m| m.state == ringkv_node::membership::NodeState::Left)
        })
    })
    .await;
    // Every key readable with its latest value, and (no repair has run)
    // stored on all three of its replicas.
    let latest = latest.lock().clone();
    let mut kv3 = c.kv(3).await;
    for (k, v) in &latest {
        assert_eq!(values(&get(&mut kv3, k).await), vec![v.clone()], "{k}");
    }
    let mut last = String::new();
    let ok = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fully_replicated(&c, 0, &latest).await {
                Ok(()) => break true,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(ok, "a range is below N replicas: {last}");
    let total: u64 = c.nodes[2].status().decommission.unwrap().bytes_streamed;
    assert!(total > 0);
    let _ = pb::Record::default().encoded_len();
    c.stop().await;
}

/// A partial partition: nodes 0-1 and 3-4 cannot reach each other, yet
/// gossip (relayed, here left intact) calls everyone alive, so requests
/// across the cut hang until their timeout. After a few failures the
/// per-peer circuit breaker routes around the unreachable replicas (sloppy
/// substitutes and hints) and writes are fast again; after the heal a probe
/// closes it and the hints reach their owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_requests_hang_is_routed_around_while_gossip_calls_it_alive() {
    let c = Cluster::start(5, |cfg| {
        cfg.request_timeout = Duration::from_secs(1);
        cfg.sync = ringkv_node::config::SyncMode::Never;
    })
    .await;
    let id = |i: usize| c.nodes[i].node_id().to_string();
    // A black hole (requests hang past the timeout), gossip untouched.
    for a in [0, 1] {
        for b in [3, 4] {
            c.faults.set(
                &id(a),
                &id(b),
                ringkv_node::Fault::Delay(Duration::from_secs(60)),
            );
            c.faults.set(
                &id(b),
                &id(a),
                ringkv_node::Fault::Delay(Duration::from_secs(60)),
            );
        }
    }
    assert!(all_alive(&c).await, "gossip still calls everyone alive");
    // Keys whose replicas include node 3 or 4.
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("bridge-{i}"))
        .filter(|k| {
            let r = c.replicas(k.as_bytes());
            r.contains(&id(3)) || r.contains(&id(4))
        })
        .take(220)
        .collect();
    assert_eq!(keys.len(), 220);
    // Each node learns on its own: a few requests across the cut time out
    // (failed or slow writes) until its breakers trip.
    // Written until both nodes' breakers have tripped (a loaded machine
    // may need more requests than a quiet one), at most 100 keys.
    let mut kv0 = c.kv(0).await;
    let mut kv1 = c.kv(1).await;
    let suspects = |i: usize| c.nodes[i].coordinator.suspects();
    let tripped = |i: usize| {
        let s = suspects(i);
        s.contains(&id(3)) && s.contains(&id(4))
    };
    let mut learned = 0;
    while learned < 100 && !(tripped(0) && tripped(1)) {
        let _ = put(&mut kv0, &keys[learned], "v", "").await;
        let _ = put(&mut kv1, &keys[learned], "v", "").await;
        learned += 1;
    }
    for i in [0, 1] {
        assert!(
            tripped(i),
            "after {learned} keys node-{i} still sends to the cut peers: {:?}",
            suspects(i)
        );
    }
    let keys = &keys[learned..learned + 120];
    // From then on no write through either side waits for a timeout: the
    // cut replicas are replaced by substitutes (hints), even while the
    // breakers probe them in the background.
    let mut slow = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let kv = if i % 2 == 0 { &mut kv0 } else { &mut kv1 };
        let t = Instant::now();
        let res = put(kv, k, "v", "").await;
        if res.is_err() || t.elapsed() > Duration::from_millis(400) {
            slow.push((
                k.clone(),
                t.elapsed(),
                res.err().map(|e| e.message().to_string()),
            ));
        }
    }
    assert!(
        slow.len() <= 2,
        "{} of 120 writes waited for a timeout or failed: {slow:?}",
        slow.len()
    );
    assert!(c.metric(0, "ringkv_peers_suspected_total") > 0);

    // Heal: probes close the breakers, the hints drain, every key is on its
    // home replicas again.
    c.faults.heal();
    eventually(LONG, "hints to drain", || async {
        c.nodes
            .iter()
            .all(|n| n.replica.hints().pending_total() == 0)
    })
    .await;

    for k in keys {
        for r in c.replicas(k.as_bytes()) {
            assert_eq!(
                c.local_values(c.index_of(&r), k.as_bytes()).await,
                vec![b"v".to_vec()],
                "{k} on {r}"
            );
        }
    }
    eventually(LONG, "the breakers to close", || async {
        // Traffic to the healed peers is what closes a breaker.
        let _ = put(&mut c.kv(0).await, "probe", "p", "").await;
        c.nodes[0].coordinator.suspects().is_empty()
    })
    .await;
    c.stop().await;
}

/// Issue 10 item 10: a key whose home replicas are mostly down is still
/// readable at quorum, from the substitutes that took its writes as hints
/// (Dynamo's "first N healthy nodes"); `all` still needs every home replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_reads_find_writes_held_as_hints_while_two_home_replicas_are_down() {
    let c = Cluster::start(5, |_| {}).await;
    let ids: Vec<String> = c.nodes.iter().map(|n| n.node_id().to_string()).collect();
    // Keys that node-3 and node-4 both replicate: cut those two off and a
    // key keeps one reachable home replica of three.
    let keys: Vec<String> = (0..400)
        .map(|i| format!("sloppy-{i}"))
        .filter(|k| {
            let r = c.replicas(k.as_bytes());
            r.contains(&ids[3]) && r.contains(&ids[4])
        })
        .take(12)
        .collect();
    assert_eq!(keys.len(), 12);
    for a in 0..3 {
        for b in 3..5 {
            c.faults.partition(&ids[a], &ids[b]);
        }
    }
    eventually(LONG, "nodes 0-2 to see 3 and 4 down", || async {
        sees_down(&c, 0, &[3, 4]).await
            && sees_down(&c, 1, &[3, 4]).await
            && sees_down(&c, 2, &[3, 4]).await
    })
    .await;
    let mut kv: Vec<_> = Vec::new();
    for i in 0..3 {
        kv.push(c.kv(i).await);
    }
    for (j, k) in keys.iter().enumerate() {
        put(&mut kv[j % 3], k, &format!("v-{j}"), "").await.unwrap();
    }
    // Every quorum read, through every reachable node, sees the write.
    for (j, k) in keys.iter().enumerate() {
        for (i, kv) in kv.iter_mut().enumerate() {
            let got = kv
                .get(pb::GetRequest {
                    key: k.clone().into_bytes().into(),
                    r: String::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("quorum read of {k} through node-{i}: {e}"))
                .into_inner();
            assert_eq!(values(&got), vec![format!("v-{j}")], "{k} via node-{i}");
        }
    }
    let sloppy: u64 = (0..c.nodes.len())
        .map(|i| c.metric(i, "ringkv_sloppy_reads_total"))
        .sum();
    assert!(sloppy >= keys.len() as u64, "{sloppy} sloppy reads");
    // `all` means every home replica: a substitute never stands in.
    let e = kv[0]
        .get(pb::GetRequest {
            key: keys[0].clone().into_bytes().into(),
            r: "all".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    // After the heal the hints drain, and with them the per-key index a
    // sloppy read consults: nothing is left for any key on any node.
    c.faults.heal();
    eventually(LONG, "everyone alive again", || all_alive(&c)).await;
    eventually(LONG, "hints to drain", || async {
        c.nodes
            .iter()
            .all(|n| n.replica.hints().pending_total() == 0)
    })
    .await;
    for n in &c.nodes {
        assert_eq!(n.replica.hints().indexed_keys().await.unwrap(), 0);
    }
    for (j, k) in keys.iter().enumerate() {
        for i in 3..5 {
            assert_eq!(
                c.local_values(i, k.as_bytes()).await,
                vec![format!("v-{j}").into_bytes()]
            );
        }
    }
    c.stop().await;
}
