//! Hinted handoff: delivers the hints this node holds once gossip sees their
//! owner alive again, oldest first, in batches, rate-limited. Delivery is a
//! merge (the version sync), so a hint delivered twice — say the ack was lost
//! — changes nothing the second time. Hints older than `max_hint_window` are
//! dropped; anti-entropy covers what they would have carried.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use tokio::sync::watch;

use super::{Coordinator, now_ms};
use crate::membership::NodeState;
use crate::ratelimit::RateLimiter;

/// Hints sent per WriteBatch call.
const BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct HandoffSettings {
    pub max_hint_window: Duration,
    /// Hints per second; 0 = unlimited.
    pub rate: u64,
    /// How often to look for deliverable hints.
    pub tick: Duration,
}

/// Runs until `stop` turns true.
pub async fn run(coord: Arc<Coordinator>, s: HandoffSettings, mut stop: watch::Receiver<bool>) {
    let limiter = RateLimiter::new(s.rate);
    loop {
        for (target, _) in coord.hints().pending() {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = deliver(&coord, &target, &s, &limiter, &stop).await {
                tracing::debug!(%target, error = %e, "hint delivery paused");
            }
        }
        coord
            .metrics()
            .hints_pending
            .set(coord.hints().pending_total() as i64);
        tokio::select! {
            _ = tokio::time::sleep(s.tick) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Delivers (or drops) `target`'s hints while it stays reachable.
async fn deliver(
    coord: &Arc<Coordinator>,
    target: &str,
    s: &HandoffSettings,
    limiter: &RateLimiter,
    stop: &watch::Receiver<bool>,
) -> Result<(), String> {
    let window_ms = s.max_hint_window.as_millis() as u64;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let topo = coord.topology();
        let member = topo.view.get(target).cloned();
        let batch = coord
            .hints()
            .oldest(target, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // A node that left for good streamed its ranges away first; what it
        // missed meanwhile is on the other replicas.
        let gone = member.as_ref().is_some_and(|m| m.state == NodeState::Left);
        let (expired, fresh): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|h| gone || h.created_ms.saturating_add(window_ms) < now);
        if !expired.is_empty() {
            coord
                .hints()
                .remove(&expired)
                .await
                .map_err(|e| e.to_string())?;
            coord.metrics().hints_dropped.inc_by(expired.len() as u64);
            tracing::info!(%target, dropped = expired.len(), "hints past max_hint_window (or for a node that left) dropped");
            continue;
        }
        let Some(m) = member.filter(|m| m.alive) else {
            return Ok(());
        };
        limiter.acquire(fresh.len() as u64).await;
        let items: Vec<pb::KeyRecord> = fresh
            .iter()
            .map(|h| pb::KeyRecord {
                key: h.key.clone(),
                record: Some(h.record.to_proto()),
            })
            .collect();
        coord
            .client()
            .write_batch(&m.node_id, &m.internode_addr, items)
            .await
            .map_err(|e| e.to_string())?;
        coord
            .hints()
            .remove(&fresh)
            .await
            .map_err(|e| e.to_string())?;
        coord.metrics().hints_delivered.inc_by(fresh.len() as u64);
    }
}
