//! Hostile gossip without a cluster secret (issue 9, findings 2 and 3): a
//! forged Syn naming nodes with generation 2^62, garbage, and a
//! decompression bomb, sent over UDP to running nodes, change nothing. One
//! test in its own binary, so the process's peak memory is this test's.

mod common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ringkv_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(60);

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn all_alive(c: &Cluster) -> bool {
    c.nodes.iter().all(|n| {
        let v = n.membership.view();
        v.members.len() == c.nodes.len() && v.members.iter().all(|m| m.alive)
    })
}

/// A chitchat Ack whose delta is thousands of tiny zstd frames, each
/// inflating to 64 KiB: ~290 MiB from one 64 KB datagram.
fn bomb() -> Vec<u8> {
    let zeros = vec![0u8; u16::MAX as usize];
    let mut frame = vec![0u8; 256];
    let n = zstd_safe::compress(&mut frame[..], &zeros, 19).unwrap();
    frame.truncate(n);
    let mut p = 45_139u16.to_le_bytes().to_vec();
    p.extend_from_slice(&[0, 2]); // version 0, Ack
    while p.len() + 3 + frame.len() < 65_000 {
        p.push(1); // a compressed block
        p.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        p.extend_from_slice(&frame);
    }
    p.push(0);
    p
}

async fn put_all(c: &Cluster, key: &str) -> Result<(), tonic::Status> {
    c.kv(0)
        .await
        .put(pb::PutRequest {
            key: Bytes::from(key.as_bytes().to_vec()),
            value: Bytes::from_static(b"v"),
            w: "all".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_garbage_and_bomb_datagrams_change_nothing() {
    let mut c = Cluster::start(3, |_| {}).await;
    eventually(LONG, "all alive", || async { all_alive(&c) }).await;
    let sink: SocketAddrV4 = "127.0.0.1:9".parse().unwrap();
    let far = 1u64 << 62;
    // The 61-byte Syn naming node-1, and the 155-byte one naming all.
    let one = forged_syn(&[("node-1", far)], sink, 1);
    assert_eq!(one.len(), 61);
    let every = forged_syn(
        &[("node-0", far), ("node-1", far), ("node-2", far)],
        sink,
        1,
    );
    assert_eq!(every.len(), 155);
    send_udp(c.nodes[2].addrs.gossip, &[one]).await;
    send_udp(c.nodes[0].addrs.gossip, &[every]).await;
    // The forgeries reach every node (chitchat relays them) and are ignored.
    eventually(
        LONG,
        "every node to hold the forged incarnations",
        || async {
            c.nodes
                .iter()
                .all(|n| n.membership.implausible_incarnations() >= 2)
        },
    )
    .await;

    // Garbage and a bomb: dropped before decoding, counted, no memory spike.
    let before = peak_rss_kib();
    let b = bomb();
    assert!(b.len() <= 65_507);
    send_udp(
        c.nodes[1].addrs.gossip,
        &[
            b"\x00garbage".to_vec(),
            b.clone(),
            vec![0xd3, 0xb0, 0, 9, 1, 2],
        ],
    )
    .await;
    eventually(LONG, "the datagrams to be dropped", || async {
        dropped(&c.nodes[1], "decompression_bomb") == 1 && dropped(&c.nodes[1], "malformed") >= 2
    })
    .await;
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 100, "peak memory grew by {grew_mib} MiB");

    // Gossip rounds go by (100 ms each): every node still sees every node
    // alive, and writes that need every replica succeed.
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < until {
        assert!(all_alive(&c), "a node was marked down by forged gossip");
        put_all(&c, &format!("k{i}")).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = http(c.nodes[1].addrs.http, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("ringkv_gossip_dropped_total{reason=\"decompression_bomb\"} 1"),
        "{text}"
    );

    // A restarted node is seen again (and its new incarnation wins).
    let old_gen = c.nodes[1].membership.local().generation;
    c.restart(1, false).await;
    eventually(
        LONG,
        "node-1's new incarnation to be seen alive",
        || async {
            all_alive(&c)
                && c.nodes.iter().all(|n| {
                    n.membership
                        .view()
                        .get("node-1")
                        .is_some_and(|m| m.generation > old_gen)
                })
        },
    )
    .await;
    put_all(&c, "after-restart").await.unwrap();
    c.stop().await;
}
