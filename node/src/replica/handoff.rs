//! Hinted handoff: delivers the hints this node holds once gossip sees their
//! owner alive again, oldest first, in batches bounded by count and bytes,
//! rate-limited. Delivery is a merge (the version sync), so a hint delivered
//! twice — say the ack was lost — changes nothing the second time. Hints
//! older than `max_hint_window` are dropped; anti-entropy covers what they
//! would have carried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_proto::v1 as pb;
use tokio::sync::watch;

use super::{Hint, Replica, now_ms};
use crate::membership::NodeState;
use crate::ratelimit::RateLimiter;
use crate::ring::SharedTopology;
use crate::transport::InternodeClient;

/// Hints sent per WriteBatch call at most.
const BATCH: usize = 512;
/// Failed deliveries are logged at most this often per target.
const LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct HandoffSettings {
    pub max_hint_window: Duration,
    /// Hints per second; 0 = unlimited.
    pub rate: u64,
    /// How often to look for deliverable hints.
    pub tick: Duration,
    /// Key + record bytes per WriteBatch call at most (a single larger hint
    /// still goes, alone). The node's `max_value_bytes`: a peer accepts
    /// twice (max_value_bytes + 256 KiB) per message, so a batch always fits.
    pub max_batch_bytes: usize,
}

/// What hand-off works with.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub replica: Arc<Replica>,
    pub topology: Arc<SharedTopology>,
    pub client: InternodeClient,
    pub settings: HandoffSettings,
}

impl Handoff {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let limiter = RateLimiter::new(self.settings.rate);
        let mut last_logged: std::collections::HashMap<String, Instant> = Default::default();
        loop {
            for (target, _) in self.replica.hints().pending() {
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = self.deliver(&target, &limiter, &stop).await {
                    self.replica.metrics().hint_delivery_failures.inc();
                    let due = last_logged
                        .get(&target)
                        .is_none_or(|t| t.elapsed() >= LOG_EVERY);
                    if due {
                        tracing::warn!(%target, error = %e, "hint delivery failed; retrying");
                        last_logged.insert(target, Instant::now());
                    }
                }
            }
            self.replica
                .metrics()
                .hints_pending
                .set(self.replica.hints().pending_total() as i64);
            tokio::select! {
                _ = tokio::time::sleep(self.settings.tick) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Delivers (or drops) `target`'s hints while it stays reachable.
    async fn deliver(
        &self,
        target: &str,
        limiter: &RateLimiter,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), String> {
        let window_ms = self.settings.max_hint_window.as_millis() as u64;
        let hints = self.replica.hints();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let topo = self.topology.get();
            let member = topo.view.get(target).cloned();
            let batch = hints
                .oldest(target, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(());
            }
            let now = now_ms();
            // A node that left for good streamed its ranges away first; what
            // it missed meanwhile is on the other replicas.
            let gone = member.as_ref().is_some_and(|m| m.state == NodeState::Left);
            let (expired, fresh): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|h| gone || h.created_ms.saturating_add(window_ms) < now);
            if !expired.is_empty() {
                hints.remove(&expired).await.map_err(|e| e.to_string())?;
                self.replica
                    .metrics()
                    .hints_dropped
                    .inc_by(expired.len() as u64);
                tracing::info!(%target, dropped = expired.len(), "hints past max_hint_window (or for a node that left) dropped");
                continue;
            }
            // Not while gossip calls it down, nor while its requests keep
            // failing (the circuit breaker probes it meanwhile).
            let Some(m) = member.filter(|m| m.alive && !self.client.is_suspect(&m.node_id)) else {
                return Ok(());
            };
            let fresh = bounded(fresh, self.settings.max_batch_bytes);
            limiter.acquire(fresh.len() as u64).await;
            let items: Vec<pb::KeyRecord> = fresh
                .iter()
                .map(|h| pb::KeyRecord {
                    key: h.key.clone(),
                    record: Some(h.record.to_proto()),
                })
                .collect();
            self.client
                .write_batch(&m.node_id, &m.internode_addr, items)
                .await
                .map_err(|e| e.to_string())?;
            hints.remove(&fresh).await.map_err(|e| e.to_string())?;
            self.replica
                .metrics()
                .hints_delivered
                .inc_by(fresh.len() as u64);
        }
    }
}

/// The oldest hints of `batch` whose records fit in `max_bytes` together;
/// always at least one, so a hint larger than the limit still goes alone.
fn bounded(batch: Vec<Hint>, max_bytes: usize) -> Vec<Hint> {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(batch.len());
    for h in batch {
        let size = h.key.len() + prost::Message::encoded_len(&h.record.to_proto());
        if !out.is_empty() && total + size > max_bytes {
            break;
        }
        total += size;
        out.push(h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{LwwValue, Record, Value};

    fn hint(bytes: usize) -> Hint {
        Hint {
            id: Vec::new(),
            target: "t".into(),
            created_ms: 0,
            key: bytes::Bytes::from_static(b"k"),
            record: Record::Lww(LwwValue {
                hlc: 1,
                writer: "w".into(),
                value: Value {
                    data: Some(bytes::Bytes::from(vec![0u8; bytes])),
                    expires_at_ms: 0,
                    written_at_ms: 1,
                },
            }),
        }
    }

    #[test]
    fn batches_are_bounded_by_bytes_but_never_empty() {
        let four: Vec<Hint> = (0..4).map(|_| hint(900 << 10)).collect();
        // 900 KiB records: four would be 3.6 MiB, two fit in 2 MiB.
        assert_eq!(bounded(four, 2 << 20).len(), 2);
        // One hint over the limit still goes alone.
        assert_eq!(bounded(vec![hint(5 << 20), hint(10)], 1 << 20).len(), 1);
        assert_eq!(
            bounded((0..10).map(|_| hint(10)).collect(), 1 << 20).len(),
            10
        );
    }
}
