//! A forwarded write that its sender gave up on never runs later (issue 10
//! item 12). Five node processes in network namespaces; node F (node 4)
//! replicates none of the test's keys and is cut off from the others by
//! iptables. `PUT k=X ?w=1` through F: F's forward to a replica times out
//! in the cut, F coordinates the write itself (sloppily) and acknowledges.
//! The forward's bytes stay queued in F's TCP connection and are
//! retransmitted after the heal, long after F gave up. Meanwhile the hints
//! deliver X, a client reads X and overwrites it with Y using that read's
//! context. The late forward must then be refused (it carries its sender's
//! deadline), never run as a new write that brings X back as a sibling of Y.
//!
//! Needs root, iproute2 and iptables; skipped with the reason otherwise.

use std::time::{Duration, Instant};

use ringkv_client::PutOptions;
use ringkv_e2e::cluster::{Options, ProcessCluster, live_values};
use ringkv_e2e::netns::Network;
use ringkv_e2e::skip_if;

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-e2e-node");
const F: usize = 4;
const KEYS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forward_its_sender_gave_up_on_never_runs_later() {
    let why = Network::available().err();
    skip_if!(
        why.is_some(),
        "real network partitions unavailable: {}",
        why.unwrap_or_default()
    );
    let c = ProcessCluster::start(
        BIN,
        Options {
            nodes: 5,
            namespaces: true,
            w: 1,
            r: 1,
            request_timeout: Duration::from_secs(2),
            ..Options::default()
        },
    )
    .await
    .unwrap();

    // Keys F does not replicate: written everywhere first (w=all), then
    // the keys F holds no copy of are kept.
    let mut c0 = c.client(0).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..200 {
        let k = format!("late-{i}");
        c0.put_with(&k, "base", PutOptions::default().w("all"))
            .await
            .unwrap();
        if c.replica_record(F, k.as_bytes()).await.unwrap().is_none() {
            keys.push(k);
            if keys.len() == KEYS {
                break;
            }
        }
    }
    assert_eq!(keys.len(), KEYS);
    let mut contexts = Vec::new();
    for k in &keys {
        contexts.push(c0.get_with(k, "all").await.unwrap().context);
    }

    // Cut F off and write X through it at once, before its failure
    // detector or circuit breakers give up on the others: the first
    // writes are forwarded and time out.
    let net = c.network().unwrap();
    let forwards_before = c.metric(F, "ringkv_forwarded_writes_total").await;
    net.partition(&[&[F], &[0, 1, 2, 3]]).unwrap();
    let mut f = c.client(F).await.unwrap();
    for (k, ctx) in keys.iter().zip(&contexts) {
        let opts = PutOptions {
            context: ctx.clone(),
            ..PutOptions::default()
        };
        f.put_with(k, "X", opts.w("one"))
            .await
            .unwrap_or_else(|e| panic!("F refused a w=1 write of {k}: {e}"));
    }
    let forwarded = c.metric(F, "ringkv_forwarded_writes_total").await - forwards_before;
    assert!(
        forwarded >= 1,
        "no write was forwarded: the scenario did not happen"
    );
    net.heal().unwrap();
    c.wait_all_alive(5).await.unwrap();

    // The hints bring X to the replicas; a client reads it and overwrites
    // it with Y, as a user who saw X would.
    for k in &keys {
        let deadline = Instant::now() + Duration::from_secs(90);
        let g = loop {
            let g = c0.get_with(k, "all").await;
            if let Ok(g) = g
                && g.siblings.iter().any(|v| v.value.as_ref() == b"X")
            {
                break g;
            }
            assert!(
                Instant::now() < deadline,
                "X of {k} never reached the replicas"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        c0.put_with(k, "Y", PutOptions::after(&g).w("all"))
            .await
            .unwrap();
    }

    // Wait until every byte F had queued towards the others is delivered
    // and acknowledged (TCP retransmits after the heal), so any late
    // forward has reached its replica.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unacked = net.unacked_bytes(F).unwrap();
        if unacked == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unacked} bytes still unacknowledged on F's connections"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut refused = 0;
    for i in 0..4 {
        refused += c.metric(i, "ringkv_late_forwards_refused_total").await;
    }
    println!("{forwarded} forwards from F, {refused} refused late by their replica");

    // Y alone, on every replica, for every key.
    for k in &keys {
        for i in 0..4 {
            if let Some(r) = c.replica_record(i, k.as_bytes()).await.unwrap() {
                let vals = live_values(&r);
                assert!(
                    vals.iter().all(|v| v == b"Y"),
                    "{k} on node {i}: {:?} (a late write came back)",
                    vals.iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
        let g = c0.get_with(k, "all").await.unwrap();
        assert_eq!(
            g.siblings
                .iter()
                .map(|v| v.value.to_vec())
                .collect::<Vec<_>>(),
            vec![b"Y".to_vec()],
            "{k}"
        );
    }
}
