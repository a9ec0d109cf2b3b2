//! Cleanup (`Admin.Cleanup`, `ringkv cleanup`): drops the records of every
//! range this node no longer replicates — ranges a joining node took over,
//! sloppy writes it coordinated for other nodes' keys. Kept forever, such
//! records come back when a later ring change makes this node a replica
//! again, after the tombstones that deleted them were purged elsewhere.
//!
//! Safety rules (a record here may be the only copy: a sloppy write whose
//! hints are not delivered yet, a join that streamed from another replica):
//!
//! 1. Only a NORMAL node cleans up, and only while no node is JOINING or
//!    LEAVING (refused otherwise): "ranges this node does not replicate" is
//!    then the same in the current and the future ring, so nothing a move in
//!    progress still needs is touched. Before each batch of deletions the ring
//!    is compared with the one the run started from; if it changed, the run
//!    stops (nothing more is dropped). A move announced meanwhile waits a
//!    gossip settle period before streaming, far longer than one batch.
//! 2. A range is dropped only after it was pushed to every one of its current
//!    replicas: Merkle trees are compared and only what a replica lacks (or
//!    holds in another version) is sent and merged there. A range with a
//!    replica down, or a push that fails, is kept and reported; running
//!    cleanup again later retries it.
//! 3. What is dropped is exactly the set of (key, record hash) read before the
//!    pushes, and a key is deleted only if it still holds that record, checked
//!    under the key's lock: a write merged here meanwhile is kept.
//!
//! Deletions are limited to `repair_rate` bytes per second (pushes share the
//! repair's limiter).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;

use super::merkle::item_hash;
use super::{RepairError, Repairer, SyncStats, TokenRange, ring_ranges};
use crate::membership::{Member, NodeState};
use crate::ratelimit::RateLimiter;
use crate::replica::now_ms;
use crate::ring::{RingNode, Topology};

/// Keys deleted per engine batch (each holds its key's lock meanwhile).
const DELETE_BATCH: usize = 256;
/// Differing leaves pushed at once.
const PARALLEL_LEAVES: usize = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanupError {
    #[error("this node is {0:?}; only a NORMAL node cleans up")]
    WrongState(NodeState),
    #[error("the ring is changing ({0}); run cleanup once no node is joining or leaving")]
    RingChanging(String),
}

#[derive(Debug, Default)]
struct CleanupState {
    running: bool,
    id: u64,
    total: u32,
    done: u32,
    kept: u32,
    keys_dropped: u64,
    bytes_dropped: u64,
    keys_pushed: u64,
    bytes_pushed: u64,
    last_completed_ms: u64,
    last_error: String,
}

/// Both rings a run started from: if either changes, replica sets may have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RingShape(Vec<RingNode>, Vec<RingNode>);

impl RingShape {
    fn of(t: &Topology) -> RingShape {
        RingShape(t.ring.nodes().to_vec(), t.future.nodes().to_vec())
    }
}

/// Why one range was not (entirely) dropped.
enum RangeError {
    /// A replica is down or a push failed: the range is kept.
    Kept(String),
    /// The ring changed: the whole run stops.
    RingChanged,
    Local(RepairError),
}

/// A member JOINING or LEAVING, described, if any.
pub fn ring_change(topo: &Topology) -> Option<String> {
    topo.view
        .members
        .iter()
        .find(|m| matches!(m.state, NodeState::Joining | NodeState::Leaving))
        .map(|m| format!("{} is {:?}", m.node_id, m.state))
}

/// The ranges of the ring `me` replicates neither now nor after the moves in
/// progress, each with its current replicas.
pub fn foreign_ranges(topo: &Topology, me: &str, n: usize) -> Vec<(TokenRange, Vec<Member>)> {
    ring_ranges(&topo.ring)
        .into_iter()
        .filter_map(|r| {
            let reps = topo.replicas_of_token(r.end, n);
            let future = topo.future_replicas_of_token(r.end, n);
            let mine = reps.iter().chain(future.iter()).any(|m| m.node_id == me);
            (!mine).then(|| (r, reps.into_iter().cloned().collect()))
        })
        .collect()
}

/// Runs cleanups on one node.
#[derive(Debug)]
pub struct Cleaner {
    repair: Arc<Repairer>,
    limiter: RateLimiter,
    state: Mutex<CleanupState>,
}

impl Cleaner {
    /// `rate`: bytes dropped per second (0 = unlimited).
    pub fn new(repair: Arc<Repairer>, rate: u64) -> Arc<Cleaner> {
        Arc::new(Cleaner {
            repair,
            limiter: RateLimiter::new(rate),
            state: Mutex::new(CleanupState::default()),
        })
    }

    /// Starts a cleanup unless one runs: (started, id of the new or running one).
    pub fn start(self: &Arc<Self>) -> Result<(bool, u64), CleanupError> {
        let topo = self.repair.topology();
        let me = self.repair.node_id().to_string();
        let mine = topo.view.get(&me).map_or(NodeState::Joining, |m| m.state);
        let id = {
            let mut st = self.state.lock();
            if st.running {
                return Ok((false, st.id));
            }
            if mine != NodeState::Normal {
                return Err(CleanupError::WrongState(mine));
            }
            if let Some(what) = ring_change(&topo) {
                return Err(CleanupError::RingChanging(what));
            }
            st.running = true;
            st.id = st.id.max(now_ms()) + 1;
            st.id
        };
        let this = self.clone();
        tokio::spawn(async move { this.run(id, topo).await });
        Ok((true, id))
    }

    pub fn is_running(&self) -> bool {
        self.state.lock().running
    }

    /// Progress for Admin.Status.
    pub fn status(&self) -> pb::CleanupStatus {
        let st = self.state.lock();
        pb::CleanupStatus {
            running: st.running,
            cleanup_id: st.id,
            ranges_total: st.total,
            ranges_done: st.done,
            ranges_kept: st.kept,
            keys_dropped: st.keys_dropped,
            bytes_dropped: st.bytes_dropped,
            keys_pushed: st.keys_pushed,
            bytes_pushed: st.bytes_pushed,
            last_completed_unix_ms: st.last_completed_ms,
            last_error: st.last_error.clone(),
        }
    }

    async fn run(self: Arc<Self>, id: u64, topo: Arc<Topology>) {
        let me = self.repair.node_id().to_string();
        let work = foreign_ranges(&topo, &me, self.repair.n() as usize);
        let shape = RingShape::of(&topo);
        {
            let mut st = self.state.lock();
            st.total = work.len() as u32;
            st.done = 0;
            st.kept = 0;
            st.keys_dropped = 0;
            st.bytes_dropped = 0;
            st.keys_pushed = 0;
            st.bytes_pushed = 0;
        }
        tracing::info!(cleanup = id, ranges = work.len(), "cleanup started");
        let mut kept: Vec<String> = Vec::new();
        let mut stopped = None;
        for (range, replicas) in work {
            match self.clean_range(range, &replicas, &shape).await {
                Ok(()) => {}
                Err(RangeError::Kept(why)) => {
                    self.state.lock().kept += 1;
                    kept.push(format!("{range:?}: {why}"));
                }
                Err(RangeError::RingChanged) => {
                    stopped = Some(
                        "the ring changed during cleanup; nothing more was dropped (run cleanup again once no node is joining or leaving)"
                            .to_string(),
                    );
                    break;
                }
                Err(RangeError::Local(e)) => {
                    stopped = Some(format!("local storage: {e}"));
                    break;
                }
            }
            self.state.lock().done += 1;
        }
        let mut st = self.state.lock();
        st.running = false;
        st.last_error = match (stopped, kept.first()) {
            (Some(e), _) => e,
            (None, Some(first)) => format!(
                "{} range(s) kept (a replica is down or did not take the records; run cleanup again); first: {first}",
                kept.len()
            ),
            (None, None) => {
                st.last_completed_ms = now_ms();
                String::new()
            }
        };
        tracing::info!(cleanup = id, keys_dropped = st.keys_dropped, bytes_dropped = st.bytes_dropped, keys_pushed = st.keys_pushed, kept = st.kept, error = %st.last_error, "cleanup finished");
    }

    fn ring_changed(&self, shape: &RingShape) -> bool {
        RingShape::of(&self.repair.topology()) != *shape
    }

    /// Pushes `range` to its replicas, then drops what was verified there.
    async fn clean_range(
        &self,
        range: TokenRange,
        replicas: &[Member],
        shape: &RingShape,
    ) -> Result<(), RangeError> {
        // 1. What may be dropped: the records held now, by hash.
        let held = self.held(range).await.map_err(RangeError::Local)?;
        if held.is_empty() {
            return Ok(());
        }
        // 2. Every current replica must have them.
        if let Some(down) = replicas.iter().find(|m| !m.alive) {
            return Err(RangeError::Kept(format!("{} is down", down.node_id)));
        }
        if replicas.is_empty() {
            return Err(RangeError::Kept("the range has no replica".into()));
        }
        for peer in replicas {
            let pushed = self
                .push_missing(range, peer)
                .await
                .map_err(|e| RangeError::Kept(format!("{}: {e}", peer.node_id)))?;
            let mut st = self.state.lock();
            st.keys_pushed += pushed.keys;
            st.bytes_pushed += pushed.bytes;
        }
        // 3. Drop each record still as it was.
        for chunk in held.chunks(DELETE_BATCH) {
            if self.ring_changed(shape) {
                return Err(RangeError::RingChanged);
            }
            let bytes: u64 = chunk.iter().map(|h| h.size).sum();
            self.limiter.acquire(bytes).await;
            let expected: HashMap<&[u8], u64> =
                chunk.iter().map(|h| (h.ekey.as_slice(), h.hash)).collect();
            let (keys, bytes) = self
                .repair
                .replica()
                .store()
                .remove_if_unchanged(chunk.iter().map(|h| h.ekey.clone()).collect(), |ek, v| {
                    expected.get(ek) == Some(&item_hash(ek, v))
                })
                .await
                .map_err(|e| RangeError::Local(e.into()))?;
            let mut st = self.state.lock();
            st.keys_dropped += keys;
            st.bytes_dropped += bytes;
        }
        Ok(())
    }

    /// Every record of `range` here: engine key, item hash, size.
    async fn held(&self, range: TokenRange) -> Result<Vec<Held>, RepairError> {
        self.repair
            .blocking(move |s| {
                let mut out = Vec::new();
                for (lo, hi) in range.intervals() {
                    s.scan_tokens_blocking(lo, hi, |ek, v| {
                        out.push(Held {
                            ekey: ek.to_vec(),
                            hash: item_hash(ek, v),
                            size: (ek.len() + v.len()) as u64,
                        });
                        true
                    })?;
                }
                Ok(out)
            })
            .await
    }

    /// Sends `peer` what it lacks of our records of `range` (one way: what
    /// only the peer has stays there).
    async fn push_missing(
        &self,
        range: TokenRange,
        peer: &Member,
    ) -> Result<SyncStats, RepairError> {
        let repair = &self.repair;
        let mut st = SyncStats::default();
        let local = repair.sized_tree(range).await?;
        let diff = repair.differing_leaves(peer, &local, &mut st).await?;
        let leaves = local.leaves().len();
        let local = &local;
        let moved: Vec<Result<SyncStats, RepairError>> = futures::stream::iter(diff)
            .map(|(leaf, theirs)| async move {
                let sub = range.slice(leaf as usize, leaves);
                if local.leaves()[leaf as usize] == 0 {
                    return Ok(SyncStats::default());
                }
                if theirs == 0 {
                    return repair.push(peer, sub, None).await;
                }
                let their_digest = repair
                    .client()
                    .range_digest(
                        &peer.node_id,
                        &peer.internode_addr,
                        pb::RangeDigestRequest {
                            range: Some(super::sync::range_pb(sub)),
                        },
                    )
                    .await?;
                let theirs: HashMap<Bytes, u64> = their_digest
                    .keys
                    .into_iter()
                    .map(|k| (k.key, k.hash))
                    .collect();
                let ours = repair.digest(sub).await?;
                let push: Vec<Bytes> = ours
                    .into_iter()
                    .filter(|(k, h)| theirs.get(k) != Some(h))
                    .map(|(k, _)| k)
                    .collect();
                if push.is_empty() {
                    return Ok(SyncStats::default());
                }
                repair.push(peer, sub, Some(push)).await
            })
            .buffer_unordered(PARALLEL_LEAVES)
            .collect()
            .await;
        for m in moved {
            st.add(m?);
        }
        Ok(st)
    }
}

/// One record a cleanup may drop.
struct Held {
    ekey: Vec<u8>,
    hash: u64,
    size: u64,
}
