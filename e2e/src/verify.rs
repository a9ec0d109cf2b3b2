//! End-state checks against every replica directly (internode `ReadReplica`,
//! no quorum, no read repair), so a replica that silently lost a write
//! cannot hide behind the others in a merged read.

use std::time::{Duration, Instant};

use crate::cluster::{ProcessCluster, live_values};
use crate::history::{History, version_of};
use ringkv_client::Client;

/// How many running nodes hold, for `key`, a live version `>= at_least`.
pub async fn holders(c: &ProcessCluster, key: &str, at_least: u64) -> usize {
    let mut n = 0;
    for i in c.running() {
        if let Ok(Some(rec)) = c.replica_record(i, key.as_bytes()).await
            && live_values(&rec)
                .iter()
                .filter_map(|v| version_of(key, v))
                .any(|v| v >= at_least)
        {
            n += 1;
        }
    }
    n
}

/// Wait (up to `within`) until every acknowledged write is held by at least
/// `n` running nodes; returns the keys that never got there.
pub async fn acknowledged_writes_replicated(
    c: &ProcessCluster,
    hist: &History,
    n: usize,
    within: Duration,
) -> Vec<String> {
    let until = Instant::now() + within;
    let expected = hist.expected();
    let mut pending: Vec<(String, u64)> = expected
        .iter()
        .filter_map(|(k, (acked, _))| acked.map(|v| (k.clone(), v)))
        .collect();
    loop {
        let mut still = Vec::new();
        for (k, v) in pending {
            if holders(c, &k, v).await < n {
                still.push((k, v));
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut out = Vec::new();
    for (k, v) in pending {
        out.push(format!(
            "{k}: acknowledged version {v} is on {} of {n} replicas",
            holders(c, &k, v).await
        ));
    }
    out
}

/// Every acknowledged write read back through node `via` at `r` returns
/// that version or a later one.
pub async fn acknowledged_writes_readable(
    c: &ProcessCluster,
    via: usize,
    hist: &History,
    r: &str,
) -> Vec<String> {
    match c.client(via).await {
        Ok(client) => acknowledged_writes_readable_with(client, hist, r).await,
        Err(e) => vec![format!("cannot connect to node {via}: {e}")],
    }
}

/// [`acknowledged_writes_readable`] through any client (a Service, say).
pub async fn acknowledged_writes_readable_with(
    mut client: Client,
    hist: &History,
    r: &str,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (k, (acked, attempted)) in hist.expected() {
        let Some(v) = acked else { continue };
        match client.get_with(&k, r).await {
            Ok(g) => {
                let seen: Vec<u64> = g
                    .siblings
                    .iter()
                    .filter_map(|s| version_of(&k, &s.value))
                    .collect();
                if !seen.iter().any(|&s| s >= v && s <= attempted) {
                    bad.push(format!(
                        "{k}: read at r={r} returned {seen:?}, acknowledged {v}"
                    ));
                }
            }
            Err(e) => bad.push(format!("{k}: read at r={r} failed: {e}")),
        }
    }
    bad
}
