//! RemoveNode (`Admin.RemoveNode`, `ringkv removenode NODE`): replaces a node
//! that is gone for good without its help, as Cassandra's removenode does.
//!
//! The node that runs it coordinates:
//!
//! 1. It checks the dead node is down, no other node is joining or leaving,
//!    and at least N NORMAL nodes remain.
//! 2. It announces the removal (`membership::removal`): every node shows the
//!    dead node LEAVING, so writes for its ranges also reach the nodes that
//!    take them over (pending replicas), and re-announces it. It waits until
//!    every live node's gossip state carries the removal, then a settle
//!    period for writes coordinated under the old view to finish.
//! 3. For every range the dead node replicated, each new replica gets the
//!    range from every surviving replica (a write acknowledged by W replicas
//!    may be on only one survivor): a Merkle sync when this node is one of
//!    the two, otherwise a relay through this node that compares both
//!    replicas' trees and copies only the leaves and keys the new replica
//!    lacks.
//! 4. It announces the removal done: the node is LEFT for everyone, its hints
//!    are dropped, and its tokens leave the ring.
//!
//! A failure (a survivor down, a stream error) leaves the node LEAVING;
//! RemoveNode again, here or on any other node, resumes. The [`Remover`] of
//! every node also keeps the removals it hears of (`keep`): persisted in the
//! data directory and re-announced, and a node that finds itself removed (its
//! tokens are the removed ones: it was restarted on a stale data directory)
//! turns LEFT and stops serving instead of rejoining with stale data.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::remove_node_status::Phase;

use super::merkle::ARITY;
use super::sync::{range_pb, rec_bytes};
use super::{RepairError, Repairer, SyncStats, TokenRange, ring_ranges};
use crate::membership::removal::{self, Removal, Removals, tokens_hash};
use crate::membership::{Member, Membership, NodeState};
use crate::replica::now_ms;

const PARALLEL: usize = 4;
const PARALLEL_LEAVES: usize = 8;
/// Depth of the trees compared when relaying between two other nodes.
const RELAY_LEVELS: u32 = 3;
/// How long every live node has to acknowledge a removal by gossip.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    #[error("no node id given")]
    NoNode,
    #[error("{0} is this node: decommission it instead")]
    IsSelf(String),
    #[error("no node {0:?} is known to this node")]
    Unknown(String),
    #[error(
        "{0} is alive (this node heard from it recently): removenode is for a node gone for good; decommission it instead, or stop it first"
    )]
    Alive(String),
    #[error(
        "removing {node} would leave {remaining} NORMAL node(s), fewer than the replication factor N={n}"
    )]
    TooFewNodes {
        node: String,
        remaining: usize,
        n: u32,
    },
    #[error("the ring is changing ({0}); remove the node once no other node is joining or leaving")]
    RingChanging(String),
    #[error("this node is {0:?}; only a NORMAL node can coordinate a removal")]
    WrongState(NodeState),
    #[error("this node is removing {0}; remove one node at a time")]
    Busy(String),
}

impl From<RemoveError> for tonic::Status {
    fn from(e: RemoveError) -> Self {
        match e {
            RemoveError::NoNode | RemoveError::IsSelf(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            RemoveError::Unknown(_) => tonic::Status::not_found(e.to_string()),
            _ => tonic::Status::failed_precondition(e.to_string()),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Progress {
    total: u32,
    done: u32,
    keys: u64,
    bytes: u64,
}

#[derive(Debug)]
struct RemoveState {
    node: String,
    phase: Phase,
    running: bool,
    progress: Progress,
    error: String,
}

type OnRemoved = Box<dyn Fn() + Send + Sync>;

/// Coordinates removals, and keeps every node's record of them.
pub struct Remover {
    repair: Arc<Repairer>,
    membership: Membership,
    dir: PathBuf,
    settle: Duration,
    state: Mutex<RemoveState>,
    /// Called when this node finds itself removed (closes client traffic).
    on_removed: OnRemoved,
}

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remover").field("dir", &self.dir).finish()
    }
}

impl Remover {
    pub fn new(
        repair: Arc<Repairer>,
        membership: Membership,
        dir: PathBuf,
        settle: Duration,
        on_removed: OnRemoved,
    ) -> Arc<Remover> {
        Arc::new(Remover {
            repair,
            membership,
            dir,
            settle,
            state: Mutex::new(RemoveState {
                node: String::new(),
                phase: Phase::NotStarted,
                running: false,
                progress: Progress::default(),
                error: String::new(),
            }),
            on_removed,
        })
    }

    pub fn status(&self) -> pb::RemoveNodeStatus {
        let s = self.state.lock();
        pb::RemoveNodeStatus {
            node_id: s.node.clone(),
            phase: s.phase as i32,
            ranges_total: s.progress.total,
            ranges_done: s.progress.done,
            keys_streamed: s.progress.keys,
            bytes_streamed: s.progress.bytes,
            error: s.error.clone(),
        }
    }

    /// Every removal this node knows of, for Admin.Status.
    pub fn removed_nodes(&self) -> Vec<pb::RemovedNode> {
        self.membership
            .removals()
            .into_values()
            .map(|r| pb::RemovedNode {
                node_id: r.node_id,
                generation: r.generation,
                done: r.done,
                removed_by: r.by,
                at_unix_ms: r.at_ms,
            })
            .collect()
    }

    /// Starts (or resumes, or reports) the removal of `node`; see admin.proto.
    pub fn remove(self: &Arc<Self>, node: &str) -> Result<pb::RemoveNodeStatus, RemoveError> {
        let me = self.repair.node_id().to_string();
        if node.is_empty() {
            return Err(RemoveError::NoNode);
        }
        if node == me {
            return Err(RemoveError::IsSelf(me));
        }
        let topo = self.repair.topology();
        let target = topo
            .view
            .get(node)
            .cloned()
            .ok_or_else(|| RemoveError::Unknown(node.to_string()))?;
        let known = self
            .membership
            .removals()
            .remove(node)
            .filter(|r| r.applies_to(target.generation, &target.tokens));
        let mut st = self.state.lock();
        if st.running {
            if st.node == node {
                drop(st);
                return Ok(self.status());
            }
            return Err(RemoveError::Busy(st.node.clone()));
        }
        if target.state == NodeState::Left {
            // Removed already (by whichever node), or decommissioned.
            if st.node != node {
                st.node = node.to_string();
                st.progress = Progress::default();
            }
            st.phase = Phase::Done;
            st.error.clear();
            drop(st);
            return Ok(self.status());
        }
        let mine = topo.view.get(&me).map_or(NodeState::Joining, |m| m.state);
        if mine != NodeState::Normal {
            return Err(RemoveError::WrongState(mine));
        }
        if target.alive {
            return Err(RemoveError::Alive(node.to_string()));
        }
        if let Some(m) = topo.view.members.iter().find(|m| {
            m.node_id != node && matches!(m.state, NodeState::Joining | NodeState::Leaving)
        }) {
            return Err(RemoveError::RingChanging(format!(
                "{} is {:?}",
                m.node_id, m.state
            )));
        }
        let n = self.repair.n();
        let remaining = topo
            .view
            .members
            .iter()
            .filter(|m| m.node_id != node && m.state == NodeState::Normal && !m.tokens.is_empty())
            .count();
        if remaining < n as usize {
            return Err(RemoveError::TooFewNodes {
                node: node.to_string(),
                remaining,
                n,
            });
        }
        let removal = known.unwrap_or_else(|| Removal {
            node_id: node.to_string(),
            generation: target.generation,
            tokens_hash: tokens_hash(&target.tokens),
            done: false,
            by: me.clone(),
            at_ms: now_ms(),
        });
        *st = RemoveState {
            node: node.to_string(),
            phase: Phase::Announcing,
            running: true,
            progress: Progress::default(),
            error: String::new(),
        };
        drop(st);
        let this = self.clone();
        tokio::spawn(async move { this.run(removal).await });
        Ok(self.status())
    }

    async fn run(self: Arc<Self>, removal: Removal) {
        let node = removal.node_id.clone();
        let result = self.run_inner(removal).await;
        let mut st = self.state.lock();
        st.running = false;
        match result {
            Ok(()) => {
                st.phase = Phase::Done;
                tracing::info!(%node, "removenode: done; the node is LEFT");
            }
            Err(e) => {
                tracing::warn!(%node, error = %e, "removenode failed; call RemoveNode again to resume");
                st.phase = Phase::Failed;
                st.error = e;
            }
        }
    }

    async fn run_inner(&self, removal: Removal) -> Result<(), String> {
        let node = removal.node_id.clone();
        tracing::info!(%node, generation = removal.generation, "removenode: announcing the removal");
        self.keep_announced(removal.clone()).await?;
        self.await_acknowledged(&removal).await?;
        // Writes coordinated under the old view (sent to the dead node only)
        // finish or fail within this.
        tokio::time::sleep(self.settle).await;
        self.state.lock().phase = Phase::Streaming;
        let work = self.work(&node);
        self.state.lock().progress.total = work.len() as u32;
        tracing::info!(%node, ranges = work.len(), "removenode: streaming its ranges to their new owners");
        let failed: Vec<String> = futures::stream::iter(work)
            .map(|(range, sources, targets)| async move {
                self.restore_range(range, &sources, &targets).await.err()
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|e| async move { e })
            .collect()
            .await;
        if let Some(first) = failed.first() {
            return Err(format!(
                "{} range(s) not streamed; first: {first}",
                failed.len()
            ));
        }
        self.keep_announced(Removal {
            done: true,
            ..removal
        })
        .await
    }

    /// Announces `r` and keeps it in the data directory.
    async fn keep_announced(&self, r: Removal) -> Result<(), String> {
        let mut all = self.membership.removals();
        removal::merge(&mut all, r.clone());
        removal::save(&self.dir, &all)
            .map_err(|e| format!("cannot record the removal in the data directory: {e}"))?;
        self.membership.announce_removal(r).await;
        Ok(())
    }

    /// Waits until every live node (but the removed one) announces `r`.
    async fn await_acknowledged(&self, r: &Removal) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let heard = self.membership.removal_announcers(&r.node_id, r.generation);
            let view = self.membership.view();
            let missing: Vec<&str> = view
                .members
                .iter()
                .filter(|m| m.alive && m.node_id != r.node_id && m.state != NodeState::Left)
                .map(|m| m.node_id.as_str())
                .filter(|id| !heard.iter().any(|h| h == id))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{} did not acknowledge the removal within {ACK_TIMEOUT:?}",
                    missing.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each range `node` replicates now: (range, surviving replicas, new replicas).
    fn work(&self, node: &str) -> Vec<(TokenRange, Vec<Member>, Vec<Member>)> {
        let topo = self.repair.topology();
        let n = self.repair.n() as usize;
        ring_ranges(&topo.ring)
            .into_iter()
            .filter_map(|r| {
                let now = topo.replicas_of_token(r.end, n);
                if !now.iter().any(|m| m.node_id == node) {
                    return None;
                }
                let later = topo.future_replicas_of_token(r.end, n);
                let targets: Vec<Member> = later
                    .iter()
                    .filter(|m| !now.iter().any(|c| c.node_id == m.node_id))
                    .map(|m| (*m).clone())
                    .collect();
                let sources: Vec<Member> = now
                    .iter()
                    .filter(|m| m.node_id != node)
                    .map(|m| (*m).clone())
                    .collect();
                Some((r, sources, targets))
            })
            .collect()
    }

    /// Gives every new replica of `range` what every survivor holds.
    async fn restore_range(
        &self,
        range: TokenRange,
        sources: &[Member],
        targets: &[Member],
    ) -> Result<(), String> {
        let me = self.repair.node_id();
        for t in targets {
            for s in sources {
                // Liveness as of now, not as of planning.
                let topo = self.repair.topology();
                for m in [s, t] {
                    if m.node_id != me && !topo.view.get(&m.node_id).is_some_and(|x| x.alive) {
                        return Err(format!("{range:?}: {} is down", m.node_id));
                    }
                }
                let res = if t.node_id == me {
                    self.repair.sync_range(range, s).await
                } else if s.node_id == me {
                    self.repair.sync_range(range, t).await
                } else {
                    self.relay(range, s, t).await
                };
                let stats =
                    res.map_err(|e| format!("{range:?} {} -> {}: {e}", s.node_id, t.node_id))?;
                let mut st = self.state.lock();
                st.progress.keys += stats.keys;
                st.progress.bytes += stats.bytes;
            }
        }
        self.state.lock().progress.done += 1;
        Ok(())
    }

    /// Copies to `to` what `from` has of `range` and `to` lacks, through this
    /// node: both trees are compared top-down, then differing leaves key by key.
    async fn relay(
        &self,
        range: TokenRange,
        from: &Member,
        to: &Member,
    ) -> Result<SyncStats, RepairError> {
        let client = self.repair.client();
        let levels = RELAY_LEVELS.min(range.max_levels());
        let req = pb::MerkleTreeRequest {
            range: Some(range_pb(range)),
            levels,
        };
        let a = client
            .merkle_tree(&from.node_id, &from.internode_addr, req)
            .await?;
        let b = client
            .merkle_tree(&to.node_id, &to.internode_addr, req)
            .await?;
        let mut st = SyncStats::default();
        if a.root == b.root || a.root == 0 {
            return Ok(st);
        }
        // (node index, source hash, target hash) of differing nodes at depth.
        let mut diff: Vec<(u32, u64, u64)> = vec![(0, a.root, b.root)];
        for depth in 0..levels {
            let parents: Vec<u32> = diff.iter().map(|d| d.0).collect();
            let (ha, hb) = futures::try_join!(
                self.tree_nodes(from, a.tree_id, depth, &parents),
                self.tree_nodes(to, b.tree_id, depth, &parents)
            )?;
            let mut next = Vec::new();
            for (k, p) in parents.iter().enumerate() {
                for c in 0..ARITY {
                    let (x, y) = (ha[k * ARITY + c], hb[k * ARITY + c]);
                    if x != y && x != 0 {
                        next.push(((*p as usize * ARITY + c) as u32, x, y));
                    }
                }
            }
            diff = next;
        }
        let leaves = ARITY.pow(levels);
        let moved: Vec<Result<SyncStats, RepairError>> = futures::stream::iter(diff)
            .map(|(leaf, _, theirs)| async move {
                let sub = range.slice(leaf as usize, leaves);
                let keys = if theirs == 0 {
                    Vec::new()
                } else {
                    self.lacking(sub, from, to).await?
                };
                if theirs != 0 && keys.is_empty() {
                    return Ok(SyncStats::default());
                }
                self.copy(sub, keys, from, to).await
            })
            .buffer_unordered(PARALLEL_LEAVES)
            .collect()
            .await;
        for m in moved {
            st.add(m?);
        }
        Ok(st)
    }

    /// The children of `parents` at `depth` of `m`'s tree `tree_id`.
    async fn tree_nodes(
        &self,
        m: &Member,
        tree_id: u64,
        depth: u32,
        parents: &[u32],
    ) -> Result<Vec<u64>, RepairError> {
        let r = self
            .repair
            .client()
            .merkle_nodes(
                &m.node_id,
                &m.internode_addr,
                pb::MerkleNodesRequest {
                    tree_id,
                    depth,
                    parents: parents.to_vec(),
                },
            )
            .await?;
        if r.hashes.len() != parents.len() * ARITY {
            return Err(RepairError::Peer(format!(
                "{} sent {} hashes for {} parents",
                m.node_id,
                r.hashes.len(),
                parents.len()
            )));
        }
        Ok(r.hashes)
    }

    /// Keys of `sub` that `from` holds and `to` lacks or holds differently.
    async fn lacking(
        &self,
        sub: TokenRange,
        from: &Member,
        to: &Member,
    ) -> Result<Vec<Bytes>, RepairError> {
        let client = self.repair.client();
        let req = pb::RangeDigestRequest {
            range: Some(range_pb(sub)),
        };
        let (a, b) = futures::try_join!(
            client.range_digest(&from.node_id, &from.internode_addr, req),
            client.range_digest(&to.node_id, &to.internode_addr, req),
        )?;
        let theirs: std::collections::HashMap<Bytes, u64> =
            b.keys.into_iter().map(|k| (k.key, k.hash)).collect();
        Ok(a.keys
            .into_iter()
            .filter(|k| theirs.get(&k.key) != Some(&k.hash))
            .map(|k| k.key)
            .collect())
    }

    /// Streams `sub` (or just `keys`) from `from` into `to`.
    async fn copy(
        &self,
        sub: TokenRange,
        keys: Vec<Bytes>,
        from: &Member,
        to: &Member,
    ) -> Result<SyncStats, RepairError> {
        let client = self.repair.client();
        let mut st = SyncStats::default();
        let mut stream = client
            .fetch_range(
                &from.node_id,
                &from.internode_addr,
                pb::FetchRangeRequest {
                    range: Some(range_pb(sub)),
                    keys,
                },
            )
            .await?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|s| RepairError::Peer(format!("{}: {s}", from.node_id)))?;
            let bytes = rec_bytes(&batch.items);
            self.repair.limiter.acquire(bytes).await;
            st.keys += batch.items.len() as u64;
            st.bytes += bytes;
            client
                .write_batch(&to.node_id, &to.internode_addr, batch.items)
                .await?;
        }
        Ok(st)
    }

    /// Keeps every removal this node hears of (data directory, own gossip
    /// state) and turns this node LEFT if it finds itself removed; runs until
    /// `stop`. Removals kept from an earlier run are announced first.
    pub async fn keep(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut announced = Removals::new();
        match removal::load(&self.dir) {
            Ok(rs) => {
                for r in rs {
                    removal::merge(&mut announced, r.clone());
                    self.membership.announce_removal(r).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the removed nodes file"),
        }
        let mut views = self.membership.subscribe();
        let mut gave_up = false;
        loop {
            let all = self.membership.removals();
            let fresh: Vec<Removal> = all
                .values()
                .filter(|r| announced.get(&r.node_id) != Some(r))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                match removal::save(&self.dir, &all) {
                    Ok(()) => {
                        for r in fresh {
                            announced.insert(r.node_id.clone(), r.clone());
                            self.membership.announce_removal(r).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot record removed nodes"),
                }
            }
            if !gave_up && let Some(r) = self.removed_self(&all) {
                gave_up = true;
                self.leave_removed(&r).await;
            }
            tokio::select! {
                r = views.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(interval) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The removal of this very incarnation (same tokens), if one was announced.
    fn removed_self(&self, all: &Removals) -> Option<Removal> {
        let local = self.membership.local();
        let r = all.get(&local.node_id)?;
        let mine = NodeState::from_proto(local.state);
        (r.tokens_hash != 0
            && tokens_hash(&local.tokens) == r.tokens_hash
            && mine != Some(NodeState::Left))
        .then(|| r.clone())
    }

    /// This node was removed while it was away: its data is stale and its
    /// ranges belong to others. It turns LEFT (durably) and stops serving.
    async fn leave_removed(&self, r: &Removal) {
        tracing::error!(
            removed_by = %r.by,
            "this node was removed from the cluster (removenode) while it was down; it is LEFT and serves nothing. Wipe its data directory to join again as a new node"
        );
        if let Err(e) = super::moves::save_state(&self.dir, Some(NodeState::Left)) {
            tracing::error!(error = %e, "cannot record LEFT in the data directory");
        }
        self.membership
            .update_local(|l| l.state = NodeState::Left.to_proto() as i32)
            .await;
        (self.on_removed)();
    }
}
