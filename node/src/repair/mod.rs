//! Anti-entropy and range movement: Merkle trees per token range compared
//! top-down between replicas ([`merkle`], [`sync`]), repair runs over every
//! range this node replicates (scheduled and on demand), the streaming that
//! join and decommission are made of ([`moves`]), removing a dead node
//! ([`remove`]) and dropping what this node no longer replicates
//! ([`cleanup`]).
//!
//! Repair is a sibling of the coordinator (`api → {coordinator, repair} →
//! {replica, ring, transport}`): it reads and applies records through the
//! replica layer, sees the ring through the shared topology and talks to
//! peers through the internode client; neither knows of the other.

pub mod cleanup;
pub mod merkle;
pub mod moves;
pub mod remove;
pub mod restore;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;

pub use cleanup::{Cleaner, CleanupError};
pub use merkle::{TokenRange, Tree};
pub use moves::{DecommissionError, Moves};
pub use remove::{RemoveError, Remover};
pub use sync::SyncStats;

use crate::membership::Member;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::replica::{Replica, StorageError, now_ms};
use crate::ring::{SharedTopology, Topology};
use crate::transport::{InternodeClient, TransportError};

/// Ranges synced at once by one repair.
const PARALLEL_RANGES: usize = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("peer misbehaved: {0}")]
    Peer(String),
    #[error("invalid repair request: {0}")]
    Invalid(&'static str),
    #[error("Merkle tree {0} expired; build it again")]
    TreeGone(u64),
    #[error("background task failed: {0}")]
    Task(String),
}

impl From<RepairError> for tonic::Status {
    fn from(e: RepairError) -> Self {
        match e {
            RepairError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            RepairError::TreeGone(_) => tonic::Status::not_found(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

#[derive(Debug, Default)]
struct RepairState {
    running: bool,
    id: u64,
    total: u32,
    done: u32,
    keys: u64,
    bytes: u64,
    digest_bytes: u64,
    last_completed_ms: u64,
    last_error: String,
    /// Last completion per range (start, end).
    ranges: BTreeMap<(u64, u64), u64>,
}

/// The ranges of `ring` as `TokenRange`s: the whole ring when it has one
/// token, and never the empty range between two nodes' equal tokens (which
/// `(t, t]` would misread as the whole ring).
pub fn ring_ranges(ring: &crate::ring::Ring) -> Vec<TokenRange> {
    let all = ring.ranges();
    if all.len() == 1 {
        return vec![TokenRange::new(all[0].1, all[0].1)];
    }
    all.into_iter()
        .filter(|(s, e, _)| s != e)
        .map(|(s, e, _)| TokenRange::new(s, e))
        .collect()
}

/// Anti-entropy of one node: runs repairs, serves peers' repairs, and
/// streams ranges for join and decommission.
#[derive(Debug)]
pub struct Repairer {
    replica: Arc<Replica>,
    topology: Arc<SharedTopology>,
    client: InternodeClient,
    /// The replication factor.
    n: u32,
    trees: Mutex<sync::TreeCache>,
    limiter: RateLimiter,
    state: Mutex<RepairState>,
}

impl Repairer {
    /// `rate` bounds streamed record bytes per second (0 = unlimited).
    pub fn new(
        replica: Arc<Replica>,
        topology: Arc<SharedTopology>,
        client: InternodeClient,
        n: u32,
        rate: u64,
    ) -> Arc<Repairer> {
        Arc::new(Repairer {
            replica,
            topology,
            client,
            n,
            trees: Mutex::new(sync::TreeCache::default()),
            limiter: RateLimiter::new(rate),
            state: Mutex::new(RepairState::default()),
        })
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn client(&self) -> &InternodeClient {
        &self.client
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.get()
    }

    pub fn node_id(&self) -> &str {
        self.replica.node_id()
    }

    /// The replication factor N.
    pub fn n(&self) -> u32 {
        self.n
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.replica.metrics()
    }

    /// The ranges this node replicates in the current ring, each with the
    /// other replicas.
    pub fn my_ranges(&self) -> Vec<(TokenRange, Vec<Member>)> {
        let topo = self.topology();
        let me = self.node_id();
        let n = self.n as usize;
        ring_ranges(&topo.ring)
            .into_iter()
            .filter_map(|range| {
                let reps = topo.replicas_of_token(range.end, n);
                if !reps.iter().any(|m| m.node_id == me) {
                    return None;
                }
                let peers = reps
                    .into_iter()
                    .filter(|m| m.node_id != me)
                    .cloned()
                    .collect();
                Some((range, peers))
            })
            .collect()
    }

    /// Starts a repair of every range this node replicates unless one is
    /// running; returns (started, id of the new or running repair).
    pub fn start(self: &Arc<Self>) -> (bool, u64) {
        let id = {
            let mut st = self.state.lock();
            if st.running {
                return (false, st.id);
            }
            st.running = true;
            st.id = st.id.max(now_ms()) + 1;
            st.id
        };
        let this = self.clone();
        tokio::spawn(async move { this.run(id).await });
        (true, id)
    }

    /// Runs one repair to completion (also what `start` spawns).
    async fn run(self: Arc<Self>, id: u64) {
        let ranges = self.my_ranges();
        {
            let mut st = self.state.lock();
            st.total = ranges.len() as u32;
            st.done = 0;
            st.keys = 0;
            st.bytes = 0;
            st.digest_bytes = 0;
        }
        let m = self.metrics().clone();
        m.repair_running.set(1);
        tracing::info!(
            repair = id,
            ranges = ranges.len(),
            "anti-entropy repair started"
        );
        let started = std::time::Instant::now();
        let errors: Vec<String> = futures::stream::iter(ranges)
            .map(|(range, peers)| {
                let this = self.clone();
                async move { this.repair_range(range, &peers).await.err() }
            })
            .buffer_unordered(PARALLEL_RANGES)
            .filter_map(|e| async move { e })
            .collect()
            .await;
        let mut st = self.state.lock();
        st.running = false;
        m.repair_running.set(0);
        if errors.is_empty() {
            st.last_completed_ms = now_ms();
            st.last_error.clear();
            m.repair_last_completed_seconds
                .set((st.last_completed_ms / 1000) as i64);
        } else {
            st.last_error = format!(
                "{} range(s) not repaired; first: {}",
                errors.len(),
                errors[0]
            );
        }
        tracing::info!(repair = id, took = ?started.elapsed(), keys = st.keys, bytes = st.bytes, digest_bytes = st.digest_bytes, errors = errors.len(), "anti-entropy repair finished");
    }

    /// Syncs one range with each of its other replicas; an error names the
    /// first peer that failed (the range is retried by the next repair).
    async fn repair_range(&self, range: TokenRange, peers: &[Member]) -> Result<(), String> {
        let mut failed = None;
        for p in peers {
            if !p.alive {
                failed.get_or_insert_with(|| format!("{}: down", p.node_id));
                continue;
            }
            match self.sync_range(range, p).await {
                Ok(s) => self.record(s),
                Err(e) => {
                    failed.get_or_insert_with(|| format!("{} {range:?}: {e}", p.node_id));
                }
            }
        }
        let mut st = self.state.lock();
        st.done += 1;
        self.metrics().repair_ranges.inc();
        match failed {
            None => {
                st.ranges.insert((range.start, range.end), now_ms());
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Syncs `range` with the first of `peers` that can (restoring a node
    /// that lost its data: one live replica is enough); records the range
    /// as repaired. The error names the last peer that failed.
    pub async fn restore_range(&self, range: TokenRange, peers: &[Member]) -> Result<(), String> {
        let mut last = String::from("no other replica is alive");
        for p in peers.iter().filter(|p| p.alive) {
            match self.sync_range(range, p).await {
                Ok(s) => {
                    self.record(s);
                    self.state
                        .lock()
                        .ranges
                        .insert((range.start, range.end), now_ms());
                    return Ok(());
                }
                Err(e) => last = format!("{}: {e}", p.node_id),
            }
        }
        Err(last)
    }

    fn record(&self, s: SyncStats) {
        let m = self.metrics();
        m.repair_keys_streamed.inc_by(s.keys);
        m.repair_bytes_streamed.inc_by(s.bytes);
        m.repair_digest_bytes.inc_by(s.digest_bytes);
        let mut st = self.state.lock();
        st.keys += s.keys;
        st.bytes += s.bytes;
        st.digest_bytes += s.digest_bytes;
    }

    pub fn is_running(&self) -> bool {
        self.state.lock().running
    }

    /// Progress for Admin.Status.
    pub fn status(&self) -> pb::RepairStatus {
        let current: Vec<(TokenRange, Vec<Member>)> = self.my_ranges();
        let st = self.state.lock();
        pb::RepairStatus {
            running: st.running,
            repair_id: st.id,
            ranges_total: st.total,
            ranges_done: st.done,
            keys_streamed: st.keys,
            bytes_streamed: st.bytes,
            last_completed_unix_ms: st.last_completed_ms,
            ranges: current
                .iter()
                .map(|(r, _)| pb::RangeRepairStatus {
                    start_token: r.start,
                    end_token: r.end,
                    last_completed_unix_ms: st.ranges.get(&(r.start, r.end)).copied().unwrap_or(0),
                })
                .collect(),
            digest_bytes: st.digest_bytes,
            last_error: st.last_error.clone(),
        }
    }

    /// Repairs every `interval` (the node config's `repair_interval`).
    pub async fn schedule(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            self.start();
        }
    }
}
