//! Multi-node behaviour on loopback: quorums, siblings, TTL, deletes, read
//! repair, forwarding, failures, admin.

mod common;

use std::time::Duration;

use common::*;
use ringkv_node::Fault;
use ringkv_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(30);

/// Read-modify-write through random coordinators: every quorum read returns
/// the latest acknowledged write.
async fn latest_write_is_always_read(count: usize) {
    let c = Cluster::start(count, |_| {}).await;
    let mut clients = Vec::new();
    for i in 0..count {
        clients.push(c.kv(i).await);
    }
    for k in 0..8 {
        let key = format!("counter-{k}");
        let mut ctx = String::new();
        for round in 0..6 {
            let w = (k + round) % count;
            let resp = put(&mut clients[w], &key, &format!("v{round}"), &ctx)
                .await
                .unwrap();
            assert!(resp.acks >= 2, "W=2 needs two acks, got {}", resp.acks);
            let r = (k + round * 3 + 1) % count;
            let got = get(&mut clients[r], &key).await;
            assert_eq!(
                values(&got),
                vec![format!("v{round}")],
                "read via node {r} after write via node {w}"
            );
            assert!(got.replies >= 2);
            ctx = got.context;
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_read_the_latest_acknowledged_write() {
    latest_write_is_always_read(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_read_the_latest_acknowledged_write_and_forward_writes() {
    let c = Cluster::start(5, |_| {}).await;
    // A key whose replicas exclude some node: writing there must forward.
    let key = (0..100)
        .map(|i| format!("fwd-{i}"))
        .find(|k| c.non_replica(k.as_bytes()).is_some())
        .unwrap();
    let outsider = c.non_replica(key.as_bytes()).unwrap();
    let mut kv = c.kv(outsider).await;
    let resp = put(&mut kv, &key, "through-a-replica", "").await.unwrap();
    assert!(resp.acks >= 2);
    assert_eq!(values(&get(&mut kv, &key).await), vec!["through-a-replica"]);
    assert_eq!(c.metric(outsider, "ringkv_forwarded_writes_total"), 1);
    // The outsider never stored the key itself.
    assert!(c.local_values(outsider, key.as_bytes()).await.is_empty());

    // A write forwarded as often as allowed that still lands on a
    // non-replica (rings disagree for a gossip round while a node joins or
    // leaves) is taken there as a sloppy write, never refused.
    let mut internode = ringkv_proto::v1::internode_client::InternodeClient::connect(format!(
        "http://{}",
        c.nodes[outsider].addrs.internode
    ))
    .await
    .unwrap();
    let got = get(&mut kv, &key).await;
    let resp = internode
        .coordinate_write(pb::CoordinateWriteRequest {
            key: key.as_bytes().to_vec().into(),
            value: Some(b"after-two-hops".to_vec().into()),
            context: got.context,
            ttl_ms: 0,
            w: String::new(),
            hops: 2,
            deadline_unix_ms: 0,
        })
        .await
        .expect("a write at the hop limit is coordinated, not refused")
        .into_inner();
    assert!(resp.acks >= 2, "{resp:?}");
    // A sloppy write counts its coordinator (a substitute) toward W, so only
    // a read of every home replica is sure to see it (README: W+R>N is
    // overlap among home replicas only).
    let all = kv
        .get(pb::GetRequest {
            key: key.as_bytes().to_vec().into(),
            r: "all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&all), vec!["after-two-hops"]);
    assert_eq!(c.metric(outsider, "ringkv_sloppy_writes_total"), 1);

    // A forward that arrives after its sender's deadline (held up in the
    // network while the sender gave up and went on) is refused, and changes
    // nothing: run late, it would mint a new version of an old write.
    let replica = c.index_of(&c.replicas(key.as_bytes())[0]);
    let mut at_replica = ringkv_proto::v1::internode_client::InternodeClient::connect(format!(
        "http://{}",
        c.nodes[replica].addrs.internode
    ))
    .await
    .unwrap();
    let before = get(&mut kv, &key).await;
    let late = at_replica
        .coordinate_write(pb::CoordinateWriteRequest {
            key: key.as_bytes().to_vec().into(),
            value: Some(b"late".to_vec().into()),
            context: String::new(),
            ttl_ms: 0,
            w: String::new(),
            hops: 1,
            deadline_unix_ms: ringkv_node::coordinator::now_ms() - 1_000,
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late}");
    let after = kv
        .get(pb::GetRequest {
            key: key.as_bytes().to_vec().into(),
            r: "all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&after), values(&before));
    assert_eq!(after.context, before.context, "nothing was minted");
    assert_eq!(c.metric(replica, "ringkv_late_forwards_refused_total"), 1);
    c.stop().await;
    latest_write_is_always_read(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_become_siblings_over_grpc_and_resolve_to_one() {
    let c = Cluster::start(3, |_| {}).await;
    let (mut a, mut b) = (c.kv(0).await, c.kv(1).await);
    put(&mut a, "cart", "base", "").await.unwrap();
    let ctx = get(&mut a, "cart").await.context;
    // Two writers from the same context: neither saw the other.
    put(&mut a, "cart", "apple", &ctx).await.unwrap();
    put(&mut b, "cart", "pear", &ctx).await.unwrap();
    let got = get(&mut c.kv(2).await, "cart").await;
    assert_eq!(values(&got), vec!["apple", "pear"]);
    // Resolving with the merged context collapses them.
    put(&mut b, "cart", "apple+pear", &got.context)
        .await
        .unwrap();
    let got = get(&mut a, "cart").await;
    assert_eq!(values(&got), vec!["apple+pear"]);
    // A put without any context stays concurrent with what it did not see.
    put(&mut a, "cart", "blind", "").await.unwrap();
    assert_eq!(
        values(&get(&mut a, "cart").await),
        vec!["apple+pear", "blind"]
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_returns_300_with_siblings_and_resolves() {
    let c = Cluster::start(3, |_| {}).await;
    let (h0, h1) = (c.nodes[0].addrs.http, c.nodes[1].addrs.http);
    let r = http(h0, "GET", "/v1/keys/user%2F1", &[], b"").await;
    assert_eq!(r.status, 404);
    let r = http(h0, "PUT", "/v1/keys/user%2F1", &[], b"alice").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = http(h1, "GET", "/v1/keys/user%2F1", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"alice");
    let ctx = r.header("x-version-context").unwrap().to_string();
    assert_eq!(
        http(
            h0,
            "PUT",
            "/v1/keys/user%2F1",
            &[("X-Version-Context", &ctx)],
            b"alice-sf"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        http(
            h1,
            "PUT",
            "/v1/keys/user%2F1",
            &[("X-Version-Context", &ctx)],
            b"alice-ny"
        )
        .await
        .status,
        200
    );
    let r = http(c.nodes[2].addrs.http, "GET", "/v1/keys/user%2F1", &[], b"").await;
    assert_eq!(r.status, 300);
    let j = r.json();
    let mut vals: Vec<String> = j["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap().to_string())
        .collect();
    vals.sort();
    assert_eq!(vals, vec!["alice-ny", "alice-sf"]);
    let merged = j["context"].as_str().unwrap().to_string();
    assert_eq!(r.header("x-version-context"), Some(merged.as_str()));
    assert_eq!(
        http(
            h0,
            "PUT",
            "/v1/keys/user%2F1",
            &[("X-Version-Context", &merged)],
            b"alice-both"
        )
        .await
        .status,
        200
    );
    let r = http(
        h1,
        "GET",
        "/v1/keys/user%2F1?r=all",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["siblings"][0]["value"], "alice-both");
    // The same key over gRPC.
    assert_eq!(
        values(&get(&mut c.kv(0).await, "user/1").await),
        vec!["alice-both"]
    );
    // Health, readiness, metrics.
    assert_eq!(http(h0, "GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(http(h0, "GET", "/readyz", &[], b"").await.status, 200);
    let m = http(h0, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("ringkv_requests_total{op=\"put\",consistency=\"default\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("ringkv_request_duration_seconds_count{op=\"get\",consistency=\"default\"}"),
        "{text}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_and_delete_hides() {
    let c = Cluster::start(3, |cfg| cfg.tombstone_grace = Duration::from_secs(60)).await;
    let mut kv = c.kv(0).await;
    kv.put(pb::PutRequest {
        key: "session".into(),
        value: "token".into(),
        ttl_ms: 1500,
        ..Default::default()
    })
    .await
    .unwrap();
    let got = get(&mut kv, "session").await;
    assert!(got.found);
    assert!(got.siblings[0].expires_at_unix_ms > 0);
    eventually(LONG, "the TTL'd value to expire", || async {
        !get(&mut c.kv(1).await, "session").await.found
    })
    .await;
    // HTTP TTL parameter.
    let h = c.nodes[2].addrs.http;
    assert_eq!(
        http(h, "PUT", "/v1/keys/short?ttl=1s", &[], b"x")
            .await
            .status,
        200
    );
    assert_eq!(http(h, "GET", "/v1/keys/short", &[], b"").await.status, 200);
    eventually(LONG, "HTTP TTL expiry", || async {
        http(h, "GET", "/v1/keys/short", &[], b"").await.status == 404
    })
    .await;

    // Delete with the read context: gone everywhere, over both APIs.
    put(&mut kv, "doomed", "v", "").await.unwrap();
    let ctx = get(&mut kv, "doomed").await.context;
    let del = kv
        .delete(pb::DeleteRequest {
            key: "doomed".into(),
            context: ctx,
            w: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.acks >= 2);
    let after = get(&mut c.kv(1).await, "doomed").await;
    assert!(!after.found && after.siblings.is_empty());
    assert!(
        !after.context.is_empty(),
        "a tombstone still has a causal context"
    );
    put(&mut kv, "doomed2", "v", "").await.unwrap();
    let r = http(h, "GET", "/v1/keys/doomed2", &[], b"").await;
    let ctx = r.header("x-version-context").unwrap().to_string();
    assert_eq!(
        http(
            h,
            "DELETE",
            "/v1/keys/doomed2",
            &[("X-Version-Context", &ctx)],
            b""
        )
        .await
        .status,
        200
    );
    assert_eq!(
        http(h, "GET", "/v1/keys/doomed2", &[], b"").await.status,
        404
    );
    // A later put without context is a new value, not resurrecting the old one.
    put(&mut kv, "doomed", "reborn", "").await.unwrap();
    assert_eq!(values(&get(&mut kv, "doomed").await), vec!["reborn"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_fixes_a_replica_that_missed_a_write() {
    let c = Cluster::start(3, |_| {}).await;
    let key = "repair-me";
    let reps = c.replicas(key.as_bytes());
    assert_eq!(reps.len(), 3);
    let (coord, victim) = (c.index_of(&reps[0]), c.index_of(&reps[2]));
    // The coordinator cannot reach the victim: the write gets W=2 from the other two.
    c.faults.partition(&reps[0], &reps[2]);
    let mut kv = c.kv(coord).await;
    put(&mut kv, key, "fresh", "").await.unwrap();
    // Let the lost fan-out settle, then confirm the victim really missed it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c.local_values(victim, key.as_bytes()).await.is_empty(),
        "victim should have missed the write"
    );
    c.faults.heal();
    // A read that reaches every replica notices and repairs the stale one.
    let got = kv
        .get(pb::GetRequest {
            key: key.into(),
            r: "all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&got), vec!["fresh"]);
    eventually(LONG, "read repair to reach the stale replica", || async {
        c.local_values(victim, key.as_bytes()).await == vec![b"fresh".to_vec()]
    })
    .await;
    assert_eq!(c.metric(coord, "ringkv_read_repairs_total"), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_failures_say_how_many_replied() {
    let c = Cluster::start(3, |cfg| cfg.request_timeout = Duration::from_secs(6)).await;
    let key = "lonely";
    let reps = c.replicas(key.as_bytes());
    let coord = c.index_of(&reps[0]);
    c.faults.isolate(&reps[0], &[&reps[1], &reps[2]]);
    // Once gossip says both are down (no substitute exists in three nodes),
    // W=2 must still fail rather than quietly shrink to what is reachable.
    eventually(
        LONG,
        "the coordinator to see both other replicas down",
        || async {
            let v = c.view(coord);
            [&reps[1], &reps[2]]
                .iter()
                .all(|r| v.get(r).is_some_and(|m| !m.alive))
        },
    )
    .await;
    let mut kv = c.kv(coord).await;
    let err = put(&mut kv, key, "v", "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("quorum not reached: 1 of 2"),
        "{}",
        err.message()
    );
    let err = kv
        .get(pb::GetRequest {
            key: key.into(),
            r: "quorum".into(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("read quorum not reached: 1 of 2"),
        "{}",
        err.message()
    );
    // W=1 still succeeds on the coordinator alone.
    let ok = kv
        .put(pb::PutRequest {
            key: key.into(),
            value: "v".into(),
            w: "one".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().acks, 1);
    let r = http(
        c.nodes[coord].addrs.http,
        "GET",
        "/v1/keys/lonely?r=all",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "quorum_not_reached");
    // A delayed replica does not hold the quorum up: W=2 is met by the
    // coordinator and the third replica long before the 6s timeout.
    c.faults.heal();
    // What the write path acts on: its topology and breakers, not gossip's
    // view (which runs a moment ahead of them).
    eventually(
        LONG,
        "the coordinator to route to the others again",
        || async { reps.iter().all(|r| c.routes_to(coord, r)) },
    )
    .await;
    c.faults
        .set(&reps[0], &reps[1], Fault::Delay(Duration::from_secs(60)));
    let t = std::time::Instant::now();
    put(&mut kv, key, "v2", "").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t.elapsed()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_nothing_is_written() {
    let c = Cluster::start(3, |cfg| cfg.max_value_bytes = 1024).await;
    let mut kv = c.kv(0).await;
    let bad_puts = [
        (
            pb::PutRequest {
                key: "".into(),
                value: "v".into(),
                ..Default::default()
            },
            "key must not be empty",
        ),
        (
            pb::PutRequest {
                key: vec![b'k'; 1025].into(),
                value: "v".into(),
                ..Default::default()
            },
            "key is 1025 bytes",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: vec![0; 1025].into(),
                ..Default::default()
            },
            "value is 1025 bytes",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                context: "garbage!".into(),
                ..Default::default()
            },
            "malformed version context",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                context: "AQDAdnLP".into(),
                ..Default::default()
            },
            "checksum",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                w: "most".into(),
                ..Default::default()
            },
            "invalid consistency level",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                w: "4".into(),
                ..Default::default()
            },
            "exceeds the replication factor",
        ),
        (
            pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                w: "0".into(),
                ..Default::default()
            },
            "at least 1",
        ),
    ];
    for (req, msg) in bad_puts {
        let e = kv.put(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{msg}: {e:?}");
        assert!(
            e.message().contains(msg),
            "expected {msg:?} in {:?}",
            e.message()
        );
    }
    let e = kv
        .get(pb::GetRequest {
            key: "k".into(),
            r: "5".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = kv
        .get(pb::GetRequest {
            key: "".into(),
            r: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = kv
        .delete(pb::DeleteRequest {
            key: "k".into(),
            context: "%%%".into(),
            w: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let h = c.nodes[1].addrs.http;
    let long = format!("/v1/keys/{}", "k".repeat(1025));
    for (method, path, headers, body, status, code) in [
        ("PUT", "/v1/keys/", vec![], vec![1u8], 400, "invalid_key"),
        ("GET", "/v1/keys", vec![], vec![], 400, "invalid_key"),
        ("PUT", long.as_str(), vec![], vec![1], 400, "invalid_key"),
        (
            "PUT",
            "/v1/keys/k",
            vec![],
            vec![0; 1025],
            413,
            "value_too_large",
        ),
        (
            "PUT",
            "/v1/keys/k",
            vec![],
            vec![0; 200_000],
            413,
            "value_too_large",
        ),
        (
            "PUT",
            "/v1/keys/k",
            vec![("X-Version-Context", "not-a-context")],
            vec![1],
            400,
            "invalid_context",
        ),
        (
            "PUT",
            "/v1/keys/k?w=most",
            vec![],
            vec![1],
            400,
            "invalid_consistency",
        ),
        (
            "PUT",
            "/v1/keys/k?w=4",
            vec![],
            vec![1],
            400,
            "invalid_consistency",
        ),
        (
            "GET",
            "/v1/keys/k?r=4",
            vec![],
            vec![],
            400,
            "invalid_consistency",
        ),
        (
            "PUT",
            "/v1/keys/k?ttl=soon",
            vec![],
            vec![1],
            400,
            "invalid_ttl",
        ),
        ("PUT", "/v1/keys/%zz", vec![], vec![1], 400, "invalid_key"),
        (
            "DELETE",
            "/v1/keys/k",
            vec![("X-Version-Context", "AAAA")],
            vec![],
            400,
            "invalid_context",
        ),
    ] {
        let r = http(h, method, path, &headers, &body).await;
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(j["error"], code, "{method} {path}: {j}");
        assert!(!j["message"].as_str().unwrap().is_empty());
    }
    // Exactly at the limit is fine — and is the only record written.
    assert_eq!(
        c.total_records().await,
        0,
        "a rejected request wrote something"
    );
    assert_eq!(
        http(h, "PUT", "/v1/keys/k", &[], &[7; 1024]).await.status,
        200
    );
    eventually(LONG, "the one valid write on all replicas", || async {
        c.total_records().await == 3
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_mode_keeps_one_value() {
    let c = Cluster::start(3, |cfg| cfg.conflict_mode = ringkv_node::ConflictMode::Lww).await;
    let (mut a, mut b) = (c.kv(0).await, c.kv(1).await);
    put(&mut a, "k", "first", "").await.unwrap();
    put(&mut b, "k", "second", "").await.unwrap();
    assert_eq!(values(&get(&mut a, "k").await), vec!["second"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_and_drain() {
    let c = Cluster::start(3, |_| {}).await;
    let mut admin = c.admin(1).await;
    let s = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.node_id, "node-1");
    assert_eq!(s.state, pb::NodeState::Normal as i32);
    assert_eq!(s.members.len(), 3);
    assert!(
        s.members
            .iter()
            .all(|m| m.state == pb::NodeState::Normal as i32 && m.alive && m.tokens == 128)
    );
    let owned: f64 = s.members.iter().map(|m| m.owned_fraction).sum();
    assert!(
        (owned - 3.0).abs() < 1e-6,
        "owned fractions sum to N: {owned}"
    );
    assert_eq!(s.replication, Some(pb::Replication { n: 3, w: 2, r: 2 }));
    assert_eq!(s.conflict_mode, "causal");
    assert!(!s.draining);
    // Three nodes at N=3: leaving would under-replicate every range.
    let e = admin
        .decommission(pb::DecommissionRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("fewer than the replication factor N=3"),
        "{}",
        e.message()
    );

    admin.drain(pb::DrainRequest {}).await.unwrap();
    assert!(
        admin
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .draining
    );
    let e = put(&mut c.kv(1).await, "k", "v", "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("draining"));
    let h = c.nodes[1].addrs.http;
    assert_eq!(http(h, "GET", "/readyz", &[], b"").await.status, 503);
    assert_eq!(http(h, "GET", "/v1/keys/k", &[], b"").await.status, 503);
    // The drained node still serves as a replica for the others.
    put(&mut c.kv(0).await, "k", "v", "").await.unwrap();
    let got = c
        .kv(2)
        .await
        .get(pb::GetRequest {
            key: "k".into(),
            r: "all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&got), vec!["v"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_tokens_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = ringkv_node::Config::loopback("solo", dir.path().join("solo"));
        c.n = 1;
        c.w = 1;
        c.r = 1;
        c
    };
    let node = ringkv_node::RunningNode::start(cfg(), Default::default())
        .await
        .unwrap();
    let tokens = node.membership.local().tokens;
    assert_eq!(tokens.len(), 128);
    let mut kv = ringkv_proto::v1::key_value_client::KeyValueClient::connect(format!(
        "http://{}",
        node.addrs.grpc
    ))
    .await
    .unwrap();
    put(&mut kv, "durable", "yes", "").await.unwrap();
    node.shutdown().await;
    let node = ringkv_node::RunningNode::start(cfg(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        node.membership.local().tokens,
        tokens,
        "tokens are chosen once"
    );
    let mut kv = ringkv_proto::v1::key_value_client::KeyValueClient::connect(format!(
        "http://{}",
        node.addrs.grpc
    ))
    .await
    .unwrap();
    assert_eq!(values(&get(&mut kv, "durable").await), vec!["yes"]);
    // A clean restart keeps minting under the node id.
    assert_eq!(node.replica.writer_id(), "solo");
    node.shutdown().await;

    // A stop that was not clean (no marker, as after a kill): versions are
    // minted under a new writer id, so a dot this node may have sent out
    // before a crash is never minted again for another value. Versions
    // from both ids still supersede each other as usual.
    std::fs::remove_file(dir.path().join("solo/clean_shutdown")).unwrap();
    let node = ringkv_node::RunningNode::start(cfg(), Default::default())
        .await
        .unwrap();
    let writer = node.replica.writer_id().to_string();
    assert!(writer.starts_with("solo~"), "{writer}");
    let mut kv = ringkv_proto::v1::key_value_client::KeyValueClient::connect(format!(
        "http://{}",
        node.addrs.grpc
    ))
    .await
    .unwrap();
    let got = get(&mut kv, "durable").await;
    put(&mut kv, "durable", "again", &got.context)
        .await
        .unwrap();
    assert_eq!(values(&get(&mut kv, "durable").await), vec!["again"]);
    node.shutdown().await;
    // Another identity on the same data directory is refused.
    let mut other = cfg();
    other.node_id = "impostor".into();
    let e = ringkv_node::RunningNode::start(other, Default::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("belongs to node \"solo\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ask_r_replicas_first_and_more_only_when_one_is_slow_or_down() {
    // A fixed speculation delay, so "slow" means the same on a loaded
    // machine as on a quiet one (the adaptive default follows the load).
    const SPECULATE_AFTER: Duration = Duration::from_millis(250);
    let c = Cluster::start(3, |c| {
        c.speculative_retry = ringkv_node::config::SpeculativeRetry::After(SPECULATE_AFTER)
    })
    .await;
    let key = "spec-read";
    let reps = c.replicas(key.as_bytes());
    let coord = c.index_of(&reps[0]);
    let mut kv = c.kv(coord).await;
    put(&mut kv, key, "v", "").await.unwrap();
    // Wait for the fan-out to reach the third replica too.
    let third = c.index_of(&reps[2]);
    eventually(
        Duration::from_secs(10),
        "all replicas to hold the key",
        || async { !c.local_values(third, key.as_bytes()).await.is_empty() },
    )
    .await;
    let spec = |c: &Cluster| c.metric(coord, "ringkv_speculative_reads_total");
    // Healthy replicas: R=2 reads ask two (this node and one more), never
    // the third, unless a read took longer than the speculation delay.
    // Remote replica reads only: hand-off or range moves left over from
    // the start may make other calls meanwhile.
    let reads = || c.faults.calls_of(ringkv_node::transport::CallKind::Read);
    let calls = reads();
    let mut slow_reads = 0;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(values(&get(&mut kv, key).await), vec!["v"]);
        if t.elapsed() >= SPECULATE_AFTER {
            slow_reads += 1;
        }
    }
    let speculated = spec(&c);
    assert!(
        speculated <= slow_reads,
        "{speculated} speculative reads but only {slow_reads} reads took {SPECULATE_AFTER:?}"
    );
    assert!(
        reads() - calls <= 20 + speculated,
        "{} remote read calls for 20 reads ({speculated} speculative): more than one remote replica asked",
        reads() - calls
    );
    // One replica slow (3 s, under the 5 s timeout): reads that ask it
    // first ask the third one after the delay and answer long before it
    // replies. Reads take turns between the two remote replicas, so four
    // reads ask the slow one first at least once.
    c.faults.set(
        &reps[0],
        &reps[1],
        ringkv_node::Fault::Delay(Duration::from_secs(3)),
    );
    let before = spec(&c);
    for _ in 0..4 {
        let t = std::time::Instant::now();
        assert_eq!(values(&get(&mut kv, key).await), vec!["v"]);
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "a read waited for the slow replica: {:?}",
            t.elapsed()
        );
    }
    assert!(
        spec(&c) > before,
        "a slow replica triggers a speculative read"
    );
    c.faults.heal();
    // A replica that cannot be reached: the next one is asked at once.
    c.faults.partition(&reps[0], &reps[1]);
    for _ in 0..10 {
        assert_eq!(values(&get(&mut kv, key).await), vec!["v"]);
    }
    c.stop().await;
}
