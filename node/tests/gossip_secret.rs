//! Authenticated gossip (issue 9): with `gossip_secret_file` set, a process
//! without the secret (or with another one) cannot become a member, and
//! replayed, stale or unauthenticated datagrams are dropped before decoding.

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringkv_node::membership::guard::{GossipSecret, Guard};
use ringkv_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(60);
const KEY_A: &str = "cluster-a-secret-0123456789abcdef";
const KEY_B: &str = "cluster-b-secret-0123456789abcdef";

fn secret_file(dir: &std::path::Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{key}\n")).unwrap();
    p
}

fn sees(c: &Cluster, i: usize, ids: &[&str]) -> bool {
    let v = c.nodes[i].membership.view();
    v.members.len() == ids.len()
        && ids.iter().all(|id| {
            v.get(id)
                .is_some_and(|m| m.alive || *id == c.nodes[i].node_id())
        })
}

fn now_ms() -> u64 {
    ringkv_node::replica::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_cannot_become_a_member() {
    let keys = tempfile::tempdir().unwrap();
    let a = secret_file(keys.path(), "a", KEY_A);
    let b = secret_file(keys.path(), "b", KEY_B);
    let with =
        |p: PathBuf| move |cfg: &mut ringkv_node::Config| cfg.gossip_secret_file = Some(p.clone());
    let mut c = Cluster::start(2, with(a.clone())).await;
    // node-2 has no secret, node-3 another cluster's; node-4 the right one.
    c.add_node(|_| {}).await;
    c.add_node(with(b)).await;
    c.add_node(with(a)).await;
    let good = ["node-0", "node-1", "node-4"];
    eventually(
        LONG,
        "the keyed nodes to form one ring of three",
        || async {
            [0, 1, 4].iter().all(|&i| {
                sees(&c, i, &good) && c.nodes[i].coordinator.topology().ring.nodes().len() == 3
            })
        },
    )
    .await;
    // The others kept gossiping at node-0 all along, and were dropped.
    eventually(LONG, "the outsiders' datagrams to be dropped", || async {
        dropped(&c.nodes[0], "unauthenticated") >= 10
    })
    .await;
    for i in [0, 1, 4] {
        let v = c.nodes[i].membership.view();
        assert!(v.get("node-2").is_none() && v.get("node-3").is_none());
    }
    // The outsiders learned nothing either.
    assert!(sees(&c, 2, &["node-2"]));
    assert!(sees(&c, 3, &["node-3"]));
    // The keyed cluster works as one: a write needing all 3 replicas succeeds.
    c.kv(4)
        .await
        .put(pb::PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            w: "all".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_stale_datagrams_are_dropped_before_decoding() {
    let keys = tempfile::tempdir().unwrap();
    let a = secret_file(keys.path(), "a", KEY_A);
    let c = Cluster::start(2, move |cfg| cfg.gossip_secret_file = Some(a.clone())).await;
    let target = c.nodes[0].addrs.gossip;
    let sink: SocketAddrV4 = "127.0.0.1:9".parse().unwrap();
    // Without the key, the forged Syn is not even decoded.
    let forged = forged_syn(&[("node-1", 1 << 62)], sink, 1);
    send_udp(target, &[forged.clone(), b"junk".to_vec()]).await;
    eventually(LONG, "the forgeries to be dropped", || async {
        dropped(&c.nodes[0], "unauthenticated") >= 2
    })
    .await;
    assert_eq!(c.nodes[0].membership.implausible_incarnations(), 0);

    // A keyed sender (an insider) is heard once; a replay of the very same
    // datagram, or one sealed two minutes ago, is not.
    let guard = Guard::new(Some(GossipSecret::from_text(KEY_A).unwrap()));
    let fresh = guard.seal(&forged, now_ms());
    send_udp(target, &fresh).await;
    eventually(LONG, "the sealed datagram to be accepted", || async {
        c.nodes[0].membership.implausible_incarnations() >= 1
    })
    .await;
    send_udp(target, &fresh).await;
    let old = guard.seal(&forged, now_ms() - 120_000);
    send_udp(target, &old).await;
    eventually(
        LONG,
        "the replay and the stale one to be dropped",
        || async { dropped(&c.nodes[0], "replayed") == 1 && dropped(&c.nodes[0], "stale") == 1 },
    )
    .await;
    // Admin.Status reports the counts too.
    let st = c.nodes[0].status();
    assert_eq!(st.gossip_dropped.get("replayed"), Some(&1));
    assert!(st.gossip_dropped["unauthenticated"] >= 2);
    // And the forged generation, though authenticated, hides no one.
    assert!(sees(&c, 1, &["node-0", "node-1"]));
    assert!(sees(&c, 0, &["node-0", "node-1"]));
    c.stop().await;
}
