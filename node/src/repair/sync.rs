//! Syncing one token range with one peer, and the peer's side of it.
//!
//! The initiator builds its tree of the range, asks the peer to build the
//! same-shaped tree, and walks both top-down, fetching only the children of
//! nodes that differ. For each differing leaf: if this side is empty there,
//! pull the peer's whole leaf; if the peer is empty, push ours; otherwise
//! compare (key, hash) lists and move only the keys that differ. Records are
//! merged with the version sync on arrival, so siblings survive and
//! tombstones win over what they deleted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ringkv_proto::v1 as pb;

use super::merkle::{ARITY, TokenRange, Tree, engine_key_token, item_hash, levels_for};
use super::{RepairError, Repairer};
use crate::membership::Member;
use crate::version::Record;

/// Differing leaves of one range synced at once.
const PARALLEL_LEAVES: usize = 8;
/// Bytes per streamed batch.
const BATCH_BYTES: usize = 1 << 20;
/// Batches read ahead of the network while streaming a range.
const QUEUED_BATCHES: usize = 2;
/// Built trees are kept this long for the initiator's walk.
const TREE_TTL: Duration = Duration::from_secs(60);
const MAX_TREES: usize = 256;

/// What one sync moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncStats {
    pub keys: u64,
    pub bytes: u64,
    pub digest_bytes: u64,
    /// False when the trees were equal.
    pub differed: bool,
}

impl SyncStats {
    pub fn add(&mut self, o: SyncStats) {
        self.keys += o.keys;
        self.bytes += o.bytes;
        self.digest_bytes += o.digest_bytes;
        self.differed |= o.differed;
    }
}

/// Trees built for peers, by id.
#[derive(Debug, Default)]
pub struct TreeCache {
    next: u64,
    trees: HashMap<u64, (Instant, std::sync::Arc<Tree>)>,
}

impl TreeCache {
    fn insert(&mut self, t: Tree) -> u64 {
        let now = Instant::now();
        self.trees
            .retain(|_, (at, _)| now.duration_since(*at) < TREE_TTL);
        if self.trees.len() >= MAX_TREES
            && let Some(oldest) = self
                .trees
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k)
        {
            self.trees.remove(&oldest);
        }
        self.next += 1;
        self.trees.insert(self.next, (now, std::sync::Arc::new(t)));
        self.next
    }

    fn get(&self, id: u64) -> Option<std::sync::Arc<Tree>> {
        self.trees.get(&id).map(|(_, t)| t.clone())
    }
}

pub(super) fn range_pb(r: TokenRange) -> pb::TokenRange {
    pb::TokenRange {
        start: r.start,
        end: r.end,
    }
}

pub fn range_from_pb(r: Option<pb::TokenRange>) -> Result<TokenRange, RepairError> {
    let r = r.ok_or(RepairError::Invalid("range missing"))?;
    Ok(TokenRange::new(r.start, r.end))
}

/// The user key of an engine key.
pub(super) fn user_key(ekey: &[u8]) -> &[u8] {
    &ekey[8.min(ekey.len())..]
}

/// Feeds `add` every stored (user key, record bytes) of `sub`, or of just
/// `keys`, until it returns false (the receiver is gone) or fails.
fn scan_records(
    store: &crate::replica::Store,
    sub: TokenRange,
    keys: Option<Vec<Bytes>>,
    add: &mut impl FnMut(&[u8], &[u8]) -> Result<bool, crate::replica::StorageError>,
) -> Result<(), crate::replica::StorageError> {
    match keys {
        None => {
            for (lo, hi) in sub.intervals() {
                // What stopped the scan early: the receiver leaving, or an error.
                let mut more = Ok(true);
                store.scan_tokens_blocking(lo, hi, |ek, v| {
                    more = add(user_key(ek), v);
                    matches!(more, Ok(true))
                })?;
                if !more? {
                    return Ok(());
                }
            }
        }
        Some(keys) => {
            for k in keys {
                let ek = crate::replica::engine_key(&k);
                if let Some(v) = store.read_engine_key_blocking(&ek)?
                    && !add(&k, &v)?
                {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

pub(super) fn rec_bytes(items: &[pb::KeyRecord]) -> u64 {
    use prost::Message as _;
    items
        .iter()
        .map(|i| i.key.len() as u64 + i.record.as_ref().map_or(0, |r| r.encoded_len() as u64))
        .sum()
}

impl Repairer {
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::replica::Store) -> Result<T, crate::replica::StorageError>
        + Send
        + 'static,
    ) -> Result<T, RepairError> {
        let store = self.replica.store().clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| RepairError::Task(e.to_string()))?
            .map_err(RepairError::from)
    }

    /// This node's tree of `range`.
    pub async fn local_tree(&self, range: TokenRange, levels: u32) -> Result<Tree, RepairError> {
        self.blocking(move |s| Tree::build(s, range, levels)).await
    }

    /// Root hash of this node's data in `range` (levels do not change it
    /// being equal exactly when the data is; tests compare replicas by it).
    pub async fn range_root(&self, range: TokenRange) -> Result<u64, RepairError> {
        Ok(self.local_tree(range, 0).await?.root())
    }

    /// This node's tree of `range`, as deep as its number of keys calls for.
    pub(super) async fn sized_tree(&self, range: TokenRange) -> Result<Tree, RepairError> {
        let count = self
            .blocking(move |s| {
                let mut n = 0u64;
                for (lo, hi) in range.intervals() {
                    s.scan_tokens_blocking(lo, hi, |_, _| {
                        n += 1;
                        true
                    })?;
                }
                Ok(n)
            })
            .await?;
        let levels = levels_for(count).min(range.max_levels());
        self.local_tree(range, levels).await
    }

    /// Brings this node and `peer` to the same data in `range`.
    pub async fn sync_range(
        &self,
        range: TokenRange,
        peer: &Member,
    ) -> Result<SyncStats, RepairError> {
        let mut st = SyncStats::default();
        let local = self.sized_tree(range).await?;
        let diff = self.differing_leaves(peer, &local, &mut st).await?;
        let leaves = local.leaves().len();
        let local = &local;
        // Leaves are independent: overlap their round trips.
        let moved: Vec<Result<SyncStats, RepairError>> = futures::stream::iter(diff)
            .map(|(leaf, theirs)| async move {
                let sub = range.slice(leaf as usize, leaves);
                let ours = local.leaves()[leaf as usize];
                if ours == 0 {
                    self.pull(peer, sub, Vec::new()).await
                } else if theirs == 0 {
                    self.push(peer, sub, None).await
                } else {
                    self.diff_leaf(peer, sub).await
                }
            })
            .buffer_unordered(PARALLEL_LEAVES)
            .collect()
            .await;
        for m in moved {
            st.add(m?);
        }
        Ok(st)
    }

    /// The leaves where `peer`'s tree of `local`'s range (same shape) differs
    /// from `local`, each with the peer's hash, walking both top-down.
    pub(super) async fn differing_leaves(
        &self,
        peer: &Member,
        local: &Tree,
        st: &mut SyncStats,
    ) -> Result<Vec<(u32, u64)>, RepairError> {
        let client = self.client();
        let (pid, paddr) = (peer.node_id.as_str(), peer.internode_addr.as_str());
        let (range, levels) = (local.range, local.levels);
        let remote = client
            .merkle_tree(
                pid,
                paddr,
                pb::MerkleTreeRequest {
                    range: Some(range_pb(range)),
                    levels,
                },
            )
            .await?;
        st.digest_bytes += 32;
        if remote.root == local.root() {
            return Ok(Vec::new());
        }
        st.differed = true;
        // Walk down: `diff` holds differing node indexes at `depth`, with the
        // peer's hash of each.
        let mut diff: Vec<(u32, u64)> = vec![(0, remote.root)];
        for depth in 0..levels {
            let parents: Vec<u32> = diff.iter().map(|(i, _)| *i).collect();
            let resp = client
                .merkle_nodes(
                    pid,
                    paddr,
                    pb::MerkleNodesRequest {
                        tree_id: remote.tree_id,
                        depth,
                        parents: parents.clone(),
                    },
                )
                .await?;
            st.digest_bytes += 4 * parents.len() as u64 + 8 * resp.hashes.len() as u64;
            if resp.hashes.len() != parents.len() * ARITY {
                return Err(RepairError::Peer(format!(
                    "{pid} sent {} hashes for {} parents",
                    resp.hashes.len(),
                    parents.len()
                )));
            }
            let mine = &local.nodes[depth as usize + 1];
            let mut next = Vec::new();
            for (k, p) in parents.iter().enumerate() {
                for c in 0..ARITY {
                    let idx = *p as usize * ARITY + c;
                    let theirs = resp.hashes[k * ARITY + c];
                    if mine[idx] != theirs {
                        next.push((idx as u32, theirs));
                    }
                }
            }
            diff = next;
        }
        Ok(diff)
    }

    /// Key-level diff of one leaf: pull what differs or only the peer has,
    /// then push (after merging) what differs or only we have.
    async fn diff_leaf(&self, peer: &Member, sub: TokenRange) -> Result<SyncStats, RepairError> {
        let mut st = SyncStats::default();
        let theirs = self
            .client()
            .range_digest(
                &peer.node_id,
                &peer.internode_addr,
                pb::RangeDigestRequest {
                    range: Some(range_pb(sub)),
                },
            )
            .await?;
        st.digest_bytes += theirs
            .keys
            .iter()
            .map(|k| k.key.len() as u64 + 8)
            .sum::<u64>();
        let ours = self.digest(sub).await?;
        let theirs: HashMap<Bytes, u64> =
            theirs.keys.into_iter().map(|k| (k.key, k.hash)).collect();
        let mut pull = Vec::new();
        let mut push = Vec::new();
        for (k, h) in &theirs {
            match ours.get(k) {
                Some(mine) if mine == h => {}
                _ => pull.push(k.clone()),
            }
        }
        for k in ours.keys() {
            if !theirs.contains_key(k) {
                push.push(k.clone());
            }
        }
        if !pull.is_empty() {
            st.add(self.pull(peer, sub, pull.clone()).await?);
            // After the merge, send back only what the peer's copy lacks:
            // usually its version superseded ours and nothing goes back.
            let merged = self.hashes_of(pull).await?;
            push.extend(
                merged
                    .into_iter()
                    .filter(|(k, h)| theirs.get(k) != Some(h))
                    .map(|(k, _)| k),
            );
        }
        if !push.is_empty() {
            st.add(self.push(peer, sub, Some(push)).await?);
        }
        Ok(st)
    }

    /// Item hashes of these keys here (absent keys are left out).
    async fn hashes_of(&self, keys: Vec<Bytes>) -> Result<Vec<(Bytes, u64)>, RepairError> {
        self.blocking(move |s| {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let ek = crate::replica::engine_key(&k);
                if let Some(v) = s.read_engine_key_blocking(&ek)? {
                    out.push((k, item_hash(&ek, &v)));
                }
            }
            Ok(out)
        })
        .await
    }

    /// (user key, item hash) of every key of `sub` here.
    pub(super) async fn digest(&self, sub: TokenRange) -> Result<HashMap<Bytes, u64>, RepairError> {
        self.blocking(move |s| {
            let mut out = HashMap::new();
            for (lo, hi) in sub.intervals() {
                s.scan_tokens_blocking(lo, hi, |ek, v| {
                    out.insert(Bytes::copy_from_slice(user_key(ek)), item_hash(ek, v));
                    true
                })?;
            }
            Ok(out)
        })
        .await
    }

    /// Fetches `sub` (or just `keys`) from the peer and merges it here.
    async fn pull(
        &self,
        peer: &Member,
        sub: TokenRange,
        keys: Vec<Bytes>,
    ) -> Result<SyncStats, RepairError> {
        let mut st = SyncStats::default();
        let mut stream = self
            .client()
            .fetch_range(
                &peer.node_id,
                &peer.internode_addr,
                pb::FetchRangeRequest {
                    range: Some(range_pb(sub)),
                    keys,
                },
            )
            .await?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|s| RepairError::Peer(format!("{}: {s}", peer.node_id)))?;
            let bytes = rec_bytes(&batch.items);
            self.limiter.acquire(bytes).await;
            let mut items = Vec::with_capacity(batch.items.len());
            for it in batch.items {
                let rec = it.record.ok_or_else(|| {
                    RepairError::Peer(format!("{}: record missing", peer.node_id))
                })?;
                let rec = Record::from_proto(rec)
                    .map_err(|e| RepairError::Peer(format!("{}: {e}", peer.node_id)))?;
                items.push((it.key, rec));
            }
            st.keys += items.len() as u64;
            st.bytes += bytes;
            self.replica.apply_batch(items).await?;
        }
        Ok(st)
    }

    /// Sends our records of `sub` (or just `keys`) to the peer, which merges them.
    pub(crate) async fn push(
        &self,
        peer: &Member,
        sub: TokenRange,
        keys: Option<Vec<Bytes>>,
    ) -> Result<SyncStats, RepairError> {
        let mut st = SyncStats::default();
        let mut batches = self.read_records(sub, keys);
        while let Some(items) = batches.recv().await {
            let items = items?;
            let bytes = rec_bytes(&items);
            self.limiter.acquire(bytes).await;
            st.keys += items.len() as u64;
            st.bytes += bytes;
            self.client()
                .write_batch(&peer.node_id, &peer.internode_addr, items)
                .await?;
        }
        Ok(st)
    }

    /// Our records of `sub` (or just `keys`), in batches of about 1 MiB,
    /// read by a blocking task as the receiver consumes them: a range of
    /// any size streams in bounded memory (two batches queued at most).
    fn read_records(
        &self,
        sub: TokenRange,
        keys: Option<Vec<Bytes>>,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<pb::KeyRecord>, RepairError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
        let store = self.replica.store().clone();
        tokio::task::spawn_blocking(move || {
            let mut batch: Vec<pb::KeyRecord> = Vec::new();
            let mut size = 0usize;
            // False once the receiver is gone (the peer hung up): stop reading.
            let mut add = |k: &[u8], v: &[u8]| -> Result<bool, crate::replica::StorageError> {
                // A stored record that does not decode (or that the peer
                // would refuse) is skipped, counted and logged, never sent
                // and never allowed to stop the range: every other key must
                // move.
                let rec = match Record::decode_for_peer(v) {
                    Ok(r) => r.to_proto(),
                    Err(e) => {
                        store.note_undecodable(&crate::replica::engine_key(k), &e);
                        return Ok(true);
                    }
                };
                size += k.len() + v.len();
                batch.push(pb::KeyRecord {
                    key: Bytes::copy_from_slice(k),
                    record: Some(rec),
                });
                if size >= BATCH_BYTES {
                    size = 0;
                    return Ok(tx.blocking_send(Ok(std::mem::take(&mut batch))).is_ok());
                }
                Ok(true)
            };
            let res = scan_records(&store, sub, keys, &mut add);
            let last = match res {
                Ok(()) if batch.is_empty() => return,
                Ok(()) => Ok(batch),
                Err(e) => Err(RepairError::from(e)),
            };
            let _ = tx.blocking_send(last);
        });
        rx
    }

    // --- the peer's side ---

    pub async fn serve_tree(
        &self,
        range: TokenRange,
        levels: u32,
    ) -> Result<pb::MerkleTreeResponse, RepairError> {
        let t = self.local_tree(range, levels).await?;
        let (root, keys) = (t.root(), t.keys);
        let tree_id = self.trees.lock().insert(t);
        Ok(pb::MerkleTreeResponse {
            tree_id,
            root,
            keys,
        })
    }

    pub fn serve_nodes(&self, req: &pb::MerkleNodesRequest) -> Result<Vec<u64>, RepairError> {
        let t = self
            .trees
            .lock()
            .get(req.tree_id)
            .ok_or(RepairError::TreeGone(req.tree_id))?;
        t.children(req.depth, &req.parents)
            .ok_or(RepairError::Invalid("no such tree nodes"))
    }

    pub async fn serve_digest(
        &self,
        range: TokenRange,
    ) -> Result<pb::RangeDigestResponse, RepairError> {
        let d = self.digest(range).await?;
        Ok(pb::RangeDigestResponse {
            keys: d
                .into_iter()
                .map(|(key, hash)| pb::KeyDigest { key, hash })
                .collect(),
        })
    }

    /// Our records of `range` (or of `keys` in it), as a stream of batches.
    pub fn serve_fetch(
        &self,
        range: TokenRange,
        keys: Vec<Bytes>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<pb::KeyRecord>, RepairError>>, RepairError>
    {
        let keys = if keys.is_empty() {
            None
        } else {
            if keys
                .iter()
                .any(|k| !range.contains(engine_key_token(&crate::replica::engine_key(k))))
            {
                return Err(RepairError::Invalid("a requested key is outside the range"));
            }
            Some(keys)
        };
        Ok(self.read_records(range, keys))
    }
}
