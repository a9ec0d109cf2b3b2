//! Hostile input over the client and internode APIs (issue 9): forged
//! causal contexts, forged records, records that do not decode, unbounded
//! metric labels, oversized contexts, TTL spellings, context-less deletes.
//! Each test fails on the code before the fix.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringkv_node::version::{MAX_CONTEXT_ENTRIES, Record, VersionVector};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internode_client::InternodeClient;

const LONG: Duration = Duration::from_secs(60);

/// The context from the issue: node-0's counter = 2^64-1.
const FORGED: &str = "AQEGbm9kZS0w____________Adexhew";

fn ctx_hdr(c: &str) -> (&'static str, &str) {
    ("X-Version-Context", c)
}

async fn internode(c: &Cluster, i: usize) -> InternodeClient<tonic::transport::Channel> {
    InternodeClient::connect(format!("http://{}", c.nodes[i].addrs.internode))
        .await
        .unwrap()
}

/// The record the issue's forged write left behind (node-0's counter wrapped
/// to 0 under one value), or with the unwrapped 2^64-1.
fn poisoned(counter: u64) -> pb::Record {
    pb::Record {
        kind: Some(pb::record::Kind::Causal(pb::CausalRecord {
            entries: vec![pb::DvvEntry {
                node: "node-0".into(),
                counter,
                values: vec![pb::StoredValue {
                    value: Some(Bytes::from_static(b"evil")),
                    expires_at_unix_ms: 0,
                    written_at_unix_ms: 1,
                }],
            }],
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_forged_context_is_refused_and_the_key_keeps_working() {
    let c = Cluster::start(3, |_| {}).await;
    let h = c.nodes[0].addrs.http;
    assert_eq!(http(h, "PUT", "/v1/keys/k", &[], b"v1").await.status, 200);
    // Through every node, so every replica coordinates the forged write once.
    for i in 0..3 {
        let r = http(
            c.nodes[i].addrs.http,
            "PUT",
            "/v1/keys/k",
            &[ctx_hdr(FORGED)],
            b"evil",
        )
        .await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        assert_eq!(j["error"], "invalid_context");
        assert!(
            j["message"].as_str().unwrap().contains("node-0"),
            "{}",
            j["message"]
        );
    }
    let e = put(&mut c.kv(1).await, "k", "evil", FORGED)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    // The key still reads at r=all, takes writes and deletes.
    let r = http(h, "GET", "/v1/keys/k?r=all", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
    let ctx = r.header("x-version-context").unwrap().to_string();
    let w = http(h, "PUT", "/v1/keys/k?w=all", &[ctx_hdr(&ctx)], b"v2").await;
    assert_eq!(w.status, 200);
    let d = http(h, "DELETE", "/v1/keys/k?w=all", &[], b"").await;
    assert_eq!(d.status, 200);
    assert_eq!(
        http(h, "GET", "/v1/keys/k?r=all", &[], b"").await.status,
        404
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_over_internode_are_refused_and_nothing_is_stored() {
    let c = Cluster::start(3, |_| {}).await;
    let mut kv = c.kv(0).await;
    put(&mut kv, "k", "v1", "").await.unwrap();
    // W=2 acknowledged; wait for the third replica's copy too (it is read
    // below to build a valid batch item).
    eventually(
        std::time::Duration::from_secs(10),
        "every replica to hold k",
        || async {
            let mut all = true;
            for i in 0..3 {
                all &= !c.local_values(i, b"k").await.is_empty();
            }
            all
        },
    )
    .await;
    for counter in [u64::MAX, 0, 1 << 60] {
        for i in 0..3 {
            let mut ic = internode(&c, i).await;
            let e = ic
                .write_replica(pb::WriteReplicaRequest {
                    key: Bytes::from_static(b"k"),
                    record: Some(poisoned(counter)),
                    hint_for: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            // As a hint too (it would never drain).
            let e = ic
                .write_replica(pb::WriteReplicaRequest {
                    key: Bytes::from_static(b"k"),
                    record: Some(poisoned(counter)),
                    hint_for: "node-1".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            // A batch is all or nothing: one bad item refuses the batch.
            let good = c.nodes[i]
                .replica
                .store()
                .read(b"k")
                .await
                .unwrap()
                .unwrap()
                .to_proto();
            let e = ic
                .write_batch(pb::WriteBatchRequest {
                    items: vec![
                        pb::KeyRecord {
                            key: Bytes::from_static(b"other"),
                            record: Some(good),
                        },
                        pb::KeyRecord {
                            key: Bytes::from_static(b"k"),
                            record: Some(poisoned(counter)),
                        },
                    ],
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            assert!(c.local_values(i, b"other").await.is_empty());
        }
    }
    // Every replica still holds v1 and the key still takes writes.
    for i in 0..3 {
        assert_eq!(c.local_values(i, b"k").await, vec![b"v1".to_vec()]);
        assert_eq!(c.nodes[i].replica.store().undecodable_records(), 0);
    }
    let ctx = get(&mut kv, "k").await.context;
    put(&mut kv, "k", "v2", &ctx).await.unwrap();
    assert_eq!(values(&get(&mut c.kv(2).await, "k").await), vec!["v2"]);
    c.stop().await;
}

/// Writes `records` (user key → raw engine value) straight into node `i`'s
/// engine while it is stopped, then starts it again.
async fn plant(c: &mut Cluster, i: usize, records: &[(&str, Option<Vec<u8>>)]) {
    let dir = c.configs[i].data_dir.join("engine");
    let node = c.nodes.remove(i);
    let addrs = node.addrs;
    node.shutdown().await;
    {
        let db = ringkv_engine::Db::open(&dir, ringkv_engine::Options::default()).unwrap();
        for (k, v) in records {
            let ek = ringkv_node::replica::engine_key(k.as_bytes());
            match v {
                Some(v) => db.put(&ek, v).unwrap(),
                None => db.delete(&ek).unwrap(),
            }
        }
        db.close().unwrap();
    }
    // `restart` takes the old node's ports from `nodes[i]`: put a stand-in back.
    let mut cfg = c.configs[i].clone();
    cfg.listen_gossip = addrs.gossip;
    cfg.listen_internode = addrs.internode;
    cfg.listen_grpc = addrs.grpc;
    cfg.listen_http = addrs.http;
    cfg.seeds = vec![c.nodes[0].addrs.gossip.to_string()];
    let node = ringkv_node::RunningNode::start(
        cfg,
        ringkv_node::NodeOptions {
            faults: Some(c.faults.clone()),
        },
    )
    .await
    .unwrap();
    c.nodes.insert(i, node);
    c.wait_converged().await;
    eventually(LONG, "every node to see every node alive", || async {
        c.nodes.iter().all(|n| {
            let v = n.membership.view();
            v.members.len() == c.nodes.len() && v.members.iter().all(|m| m.alive)
        })
    })
    .await;
}

fn wrapped_bytes() -> Vec<u8> {
    prost::Message::encode_to_vec(&poisoned(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_record_that_does_not_decode_never_blocks_reads_writes_or_repair() {
    let mut c = Cluster::start(3, |cfg| cfg.sync = ringkv_node::config::SyncMode::Never).await;
    let mut kv = c.kv(0).await;
    for i in 0..100 {
        let (k, v) = (format!("k{i:03}"), format!("v{i}"));
        put(&mut kv, &k, &v, "").await.unwrap();
    }
    // Every replica has every key (N = 3 nodes): wait for the slowest ack.
    eventually(LONG, "full replication", || async {
        let mut n = 0;
        for i in 0..3 {
            n += c.nodes[i].replica.store().count().await.unwrap();
        }
        n == 300
    })
    .await;
    // Node 2: "k000" holds the issue's undecodable record, "k001" garbage,
    // "k002".."k009" are missing, "ghost" exists only there, undecodable.
    let mut planted: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("k000", Some(wrapped_bytes())),
        ("k001", Some(b"\xff\xff\xff not a record".to_vec())),
        ("ghost", Some(wrapped_bytes())),
    ];
    let missing: Vec<String> = (2..10).map(|i| format!("k{i:03}")).collect();
    planted.extend(missing.iter().map(|k| (k.as_str(), None)));
    plant(&mut c, 2, &planted).await;

    // Reads at r=all answer (the bad copy counts as absent), writes work.
    let mut kv2 = c.kv(2).await;
    let r = kv2
        .get(pb::GetRequest {
            key: Bytes::from_static(b"k000"),
            r: "all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&r), vec!["v0"]);
    // Repair on node 2 completes: pulls what it lacks, overwrites what it
    // cannot decode, and pushes the rest without the bad record.
    c.admin(2).await.repair(pb::RepairRequest {}).await.unwrap();
    eventually(LONG, "node 2's repair to finish", || async {
        let s = c.nodes[2].status().repair.unwrap();
        !s.running && s.last_completed_unix_ms > 0
    })
    .await;
    let s = c.nodes[2].status();
    let rs = s.repair.unwrap();
    assert!(rs.last_error.is_empty(), "{}", rs.last_error);
    assert_eq!(rs.ranges_done, rs.ranges_total);
    for i in 0..100 {
        let k = format!("k{i:03}");
        assert_eq!(
            c.local_values(2, k.as_bytes()).await,
            vec![format!("v{i}").into_bytes()],
            "{k} on node-2 after repair"
        );
    }
    // Counted and reported: on the node, in Admin.Status and /metrics.
    let bad = c.nodes[2].replica.store().undecodable_records();
    assert!(bad >= 2, "{bad}");
    assert_eq!(
        s.undecodable_records,
        c.nodes[2].replica.store().undecodable_records()
    );
    let m = http(c.nodes[2].addrs.http, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        ringkv_node::metrics::sample(&text, "ringkv_undecodable_records_total")
            .is_some_and(|n| n >= 2),
        "{text}"
    );
    // The ghost never left node 2 (nothing sane to send), and nobody failed over it.
    for i in 0..2 {
        assert!(c.local_values(i, b"ghost").await.is_empty());
    }
    // A write through node 2 heals the ghost too.
    put(&mut kv2, "ghost", "real", "").await.unwrap();
    assert_eq!(c.local_values(2, b"ghost").await, vec![b"real".to_vec()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_streams_every_other_key_past_a_bad_stored_record() {
    let mut c = Cluster::start(4, |cfg| cfg.sync = ringkv_node::config::SyncMode::Never).await;
    let mut kv = c.kv(0).await;
    let mut latest = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("k{i:03}"), format!("v{i}"));
        let out = kv
            .put(pb::PutRequest {
                key: Bytes::from(k.clone().into_bytes()),
                value: Bytes::from(v.clone().into_bytes()),
                w: "all".into(),
                ..Default::default()
            })
            .await;
        out.unwrap();
        latest.push((k, v));
    }
    // Node 3 holds, for a key it replicates, a record no one can decode.
    let poison = (0..)
        .map(|i| format!("poison{i}"))
        .find(|k| c.replicas(k.as_bytes()).iter().any(|r| r == "node-3"))
        .unwrap();
    plant(&mut c, 3, &[(poison.as_str(), Some(wrapped_bytes()))]).await;
    c.admin(3)
        .await
        .decommission(pb::DecommissionRequest {})
        .await
        .unwrap();
    eventually(LONG, "the decommission to finish", || async {
        let s = c.nodes[3].status();
        let d = s.decommission.unwrap();
        assert_ne!(
            d.phase,
            pb::decommission_status::Phase::Failed as i32,
            "decommission failed: {}",
            d.error
        );
        s.state == pb::NodeState::Left as i32
            && d.phase == pb::decommission_status::Phase::Done as i32
    })
    .await;
    assert!(c.nodes[3].replica.store().undecodable_records() >= 1);
    eventually(LONG, "everyone to see node-3 LEFT", || async {
        (0..3).all(|i| {
            c.nodes[i]
                .membership
                .view()
                .get("node-3")
                .is_some_and(|m| m.state == ringkv_node::membership::NodeState::Left)
        })
    })
    .await;
    // Three nodes left with N = 3: each must hold every key, without repair.
    for (k, v) in &latest {
        for i in 0..3 {
            assert_eq!(
                c.local_values(i, k.as_bytes()).await,
                vec![v.clone().into_bytes()],
                "{k} on node-{i}"
            );
        }
    }
    c.stop().await;
}

/// Distinct `ringkv_requests_total` / latency series in a /metrics scrape.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("ringkv_request"))
        .filter_map(|l| l.split_once('}').map(|(s, _)| s.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_do_not_grow_with_distinct_bad_consistency_values() {
    let c = Cluster::start(3, |_| {}).await;
    let h = c.nodes[0].addrs.http;
    let mut kv = c.kv(0).await;
    // One of each kind first, so every label the bad values map to exists.
    let _ = http(h, "GET", "/v1/keys/k?r=99", &[], b"").await;
    let _ = http(h, "PUT", "/v1/keys/k?w=99", &[], b"x").await;
    let _ = http(h, "PUT", "/v1/keys/k?w=bad", &[], b"x").await;
    let _ = http(h, "DELETE", "/v1/keys/k?w=99", &[], b"").await;
    let _ = kv
        .get(pb::GetRequest {
            key: Bytes::from_static(b"k"),
            r: "99".into(),
        })
        .await;
    let before = http(h, "GET", "/metrics", &[], b"").await;
    let before_text = String::from_utf8_lossy(&before.body).to_string();
    for i in 0..300u32 {
        let n = 1000 + i;
        let r = http(h, "GET", &format!("/v1/keys/k?r={n}"), &[], b"").await;
        assert_eq!(r.status, 400);
        let r = http(h, "PUT", &format!("/v1/keys/k?w=x{i}"), &[], b"x").await;
        assert_eq!(r.status, 400);
        let e = kv
            .put(pb::PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"x"),
                w: format!("{}", 17 + i),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    let after = http(h, "GET", "/metrics", &[], b"").await;
    let after_text = String::from_utf8_lossy(&after.body).to_string();
    assert_eq!(series(&before_text), series(&after_text));
    assert!(
        after_text.contains("consistency=\"invalid\""),
        "{after_text}"
    );
    assert!(!after_text.contains("\"1000\""));
    // Bounded: the scrape is the same size give or take the counts' digits.
    assert!(
        after_text.len() < before_text.len() + 4096,
        "{} -> {}",
        before_text.len(),
        after_text.len()
    );
    c.stop().await;
}

fn big_context(prefix: &str, n: usize) -> String {
    let mut ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    ids.sort();
    let mut vv = VersionVector::new();
    for id in ids {
        vv = vv.with(&id, 3);
    }
    vv.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_puts_with_large_contexts_leave_a_key_the_server_can_resolve() {
    let c = Cluster::start(3, |_| {}).await;
    // The issue's 1024-entry context: refused, clearly, and nothing written.
    let r = http(
        c.nodes[0].addrs.http,
        "PUT",
        "/v1/keys/bloat",
        &[ctx_hdr(&big_context("x", 1024))],
        b"a",
    )
    .await;
    assert_eq!(r.status, 400);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("limit is 64"), "{msg}");
    assert_eq!(
        http(
            c.nodes[0].addrs.http,
            "GET",
            "/v1/keys/bloat?r=all",
            &[],
            b""
        )
        .await
        .status,
        404
    );
    // Three PUTs through three coordinators, each with a full context of
    // writers the key never had.
    for i in 0..3 {
        let r = http(
            c.nodes[i].addrs.http,
            "PUT",
            "/v1/keys/bloat?w=all",
            &[ctx_hdr(&big_context(
                &format!("ghost{i}"),
                MAX_CONTEXT_ENTRIES,
            ))],
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // The write's own context is accepted back.
        let ctx = r.header("x-version-context").unwrap();
        assert!(VersionVector::decode(ctx).is_ok());
    }
    let h = c.nodes[1].addrs.http;
    let g = http(h, "GET", "/v1/keys/bloat?r=all", &[], b"").await;
    assert_eq!(g.status, 300, "three concurrent writes are three siblings");
    let ctx = g.header("x-version-context").unwrap().to_string();
    assert!(ctx.len() < 4096, "context header is {} bytes", ctx.len());
    // Every stored copy stays small, whatever the merges did.
    for i in 0..3 {
        let rec = c.nodes[i]
            .replica
            .store()
            .read(b"bloat")
            .await
            .unwrap()
            .unwrap();
        let n = match rec {
            ringkv_node::version::Record::Causal(d) => d.entries.len(),
            _ => 0,
        };
        assert!(n <= 3 * MAX_CONTEXT_ENTRIES, "{n} writers");
    }
    // The server accepts its own context and the siblings resolve.
    let w = http(h, "PUT", "/v1/keys/bloat?w=all", &[ctx_hdr(&ctx)], b"one").await;
    assert_eq!(w.status, 200, "{}", String::from_utf8_lossy(&w.body));
    let g = http(h, "GET", "/v1/keys/bloat?r=all", &[], b"").await;
    assert_eq!((g.status, g.body.as_slice()), (200, &b"one"[..]));
    c.stop().await;
}

/// The writer ids node `i`'s stored record of `key` names.
async fn writers(c: &Cluster, i: usize, key: &str) -> Vec<String> {
    match c.nodes[i]
        .replica
        .store()
        .read(key.as_bytes())
        .await
        .unwrap()
    {
        Some(Record::Causal(d)) => d.entries.iter().map(|e| e.node.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Finding 5 over time: after an unclean start a node mints under a new
/// writer id (`node~epoch`), so without pruning every crash of a coordinator
/// would add an entry to each key it writes afterwards, for good. Once the
/// new id is a tombstone grace old, every replica's copy drops the old id's
/// empty entry, and the key holds exactly the last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinators_old_writer_id_is_pruned_after_the_grace() {
    let mut c = Cluster::start(3, |cfg| cfg.tombstone_grace = Duration::from_secs(1)).await;
    let first = put(&mut c.kv(1).await, "k", "one", "").await.unwrap();
    put(&mut c.kv(0).await, "k", "two", &first.context)
        .await
        .unwrap();
    // Every replica names node-1, which has nothing left ("two" won), and
    // with no newer id of node-1 it stays, however old.
    eventually(LONG, "every replica to name node-1", || async {
        let mut all = true;
        for i in 0..3 {
            all &= writers(&c, i, "k").await.contains(&"node-1".to_string());
        }
        all
    })
    .await;

    // Node 1 loses its disk: it comes back minting under a new id.
    c.restart(1, true).await;
    eventually(LONG, "every node to see node 1 readable again", || async {
        c.nodes.iter().all(|n| {
            let topo = n.coordinator.topology();
            topo.view
                .get("node-1")
                .is_some_and(|m| m.state.serves_reads())
        })
    })
    .await;
    let new_id = c.nodes[1].replica.writer_id().to_string();
    assert!(new_id.starts_with("node-1~"), "{new_id}");

    // Writes through it (each write re-prunes every copy it reaches) until
    // every replica has forgotten `node-1` and names the new id.
    let kv1 = c.kv(1).await;
    let last = std::sync::Mutex::new(String::new());
    let round = std::sync::atomic::AtomicU32::new(0);
    eventually(LONG, "every replica to forget node-1", || {
        let (mut kv, c, last, round, new_id) = (kv1.clone(), &c, &last, &round, &new_id);
        async move {
            let ctx = get_all(&mut kv, "k").await.context;
            let v = format!(
                "v{}",
                round.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            put(&mut kv, "k", &v, &ctx).await.unwrap();
            *last.lock().unwrap() = v;
            let mut done = true;
            for i in 0..3 {
                let w = writers(c, i, "k").await;
                done &= !w.contains(&"node-1".to_string()) && w.contains(new_id);
            }
            done
        }
    })
    .await;
    let got = get_all(&mut c.kv(2).await, "k").await;
    assert_eq!(
        values(&got),
        [last.into_inner().unwrap()],
        "no value lost or back"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_spellings_agree_and_a_delete_without_context_deletes() {
    let c = Cluster::start(3, |_| {}).await;
    let h = c.nodes[0].addrs.http;
    // Below the 1 ms resolution: refused, never "no expiry".
    for bad in ["1ns", "999us", "1500us"] {
        let r = http(h, "PUT", &format!("/v1/keys/t?ttl={bad}"), &[], b"x").await;
        assert_eq!(r.status, 400, "{bad}");
        let j = r.json();
        assert_eq!(j["error"], "invalid_ttl");
        assert!(j["message"].as_str().unwrap().contains("1ms"), "{j}");
    }
    assert_eq!(
        http(h, "GET", "/v1/keys/t?r=all", &[], b"").await.status,
        404
    );
    // 0 and 0s (and 0ms) all mean no expiry, as ttl_ms 0 over gRPC.
    for (k, zero) in [("z1", "0"), ("z2", "0s"), ("z3", "0ms")] {
        let r = http(h, "PUT", &format!("/v1/keys/{k}?ttl={zero}"), &[], b"x").await;
        assert_eq!(r.status, 200, "{zero}");
        let g = http(h, "GET", &format!("/v1/keys/{k}"), &[], b"").await;
        assert_eq!(g.status, 200);
        assert_eq!(g.header("x-expires-at"), None, "{zero} must not expire");
    }
    // A short TTL expires.
    assert_eq!(
        http(h, "PUT", "/v1/keys/short?ttl=300ms", &[], b"x")
            .await
            .status,
        200
    );
    eventually(LONG, "a 300ms TTL to expire", || async {
        http(h, "GET", "/v1/keys/short", &[], b"").await.status == 404
    })
    .await;

    // DELETE without a context deletes what a quorum read sees (HTTP, gRPC).
    assert_eq!(
        http(h, "PUT", "/v1/keys/d?w=all", &[], b"x").await.status,
        200
    );
    assert_eq!(
        http(h, "PUT", "/v1/keys/d?w=all", &[], b"y").await.status,
        200
    );
    assert_eq!(
        http(h, "GET", "/v1/keys/d?r=all", &[], b"").await.status,
        300
    );
    let d = http(
        c.nodes[1].addrs.http,
        "DELETE",
        "/v1/keys/d?w=all",
        &[],
        b"",
    )
    .await;
    assert_eq!(d.status, 200);
    assert_eq!(
        http(h, "GET", "/v1/keys/d?r=all", &[], b"").await.status,
        404
    );
    let mut kv = c.kv(2).await;
    put(&mut kv, "g", "x", "").await.unwrap();
    kv.delete(pb::DeleteRequest {
        key: Bytes::from_static(b"g"),
        context: String::new(),
        w: "all".into(),
    })
    .await
    .unwrap();
    assert!(get(&mut kv, "g").await.siblings.is_empty());
    c.stop().await;
}
