//! Durable hints: writes meant for a replica that could not take them, kept
//! (in their own engine directory, apart from the node's data) until gossip
//! sees the replica again, then handed off and deleted.
//!
//! Engine key = target node id ++ 0x00 ++ created unix ms (8 bytes BE) ++
//! sequence (8 bytes BE) ++ user key, so one target's hints are one
//! contiguous scan, oldest first. Node ids never contain 0x00 (config
//! validation), so the separator is unambiguous. Value = the encoded record.
//!
//! A per-key index lets a sloppy read find what this node holds for a key
//! as a substitute: engine key = 0x00 ++ user key (no node id is empty, so
//! no hint key starts with 0x00), value = how many hints for the key are
//! held (4 bytes BE) ++ the merge of their records. It is written in the
//! same batch as the hints and deleted with the last of them, so it lives
//! no longer than a hint (`max_hint_window`, far below tombstone grace).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_engine::{Db, Options, SyncPolicy, WriteBatch};

use super::keyed::{self, KeyLocks};
use super::store::StorageError;
use crate::config::SyncMode;
use crate::version::Record;

/// One stored hint.
#[derive(Debug, Clone)]
pub struct Hint {
    /// Engine key (the handle to delete it by).
    pub id: Vec<u8>,
    pub target: String,
    pub created_ms: u64,
    pub key: Bytes,
    pub record: Record,
}

#[derive(Debug, Clone)]
pub struct HintStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Db>,
    seq: AtomicU64,
    /// Hints held per target (kept in memory; rebuilt by a scan at open).
    pending: Mutex<BTreeMap<String, u64>>,
    /// Serialises read-modify-writes of one key's index entry.
    locks: KeyLocks,
}

const STRIPES: usize = 64;

fn index_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// The user key of a hint's engine key (`None` if malformed).
fn key_of(id: &[u8]) -> Option<&[u8]> {
    let sep = id.iter().position(|&b| b == 0)?;
    id.get(sep + 17..)
}

fn decode_index(v: &[u8]) -> Option<(u32, Record)> {
    let count = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    let rec = Record::decode(&v[4..]).ok()?;
    Some((count, rec))
}

fn encode_index(count: u32, rec: &Record) -> Vec<u8> {
    let mut v = count.to_be_bytes().to_vec();
    v.extend_from_slice(&rec.encode());
    v
}

fn prefix(target: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(target.len() + 1);
    p.extend_from_slice(target.as_bytes());
    p.push(0);
    p
}

fn parse(id: &[u8], value: &[u8]) -> Result<Hint, StorageError> {
    let corrupt = |why: &str| StorageError::Corrupt(format!("hint: {why}"));
    let sep = id
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt("no target"))?;
    let rest = &id[sep + 1..];
    if rest.len() < 16 {
        return Err(corrupt("short key"));
    }
    let target = std::str::from_utf8(&id[..sep])
        .map_err(|_| corrupt("target is not UTF-8"))?
        .to_string();
    let created_ms = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let record = Record::decode(value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(Hint {
        id: id.to_vec(),
        target,
        created_ms,
        key: Bytes::copy_from_slice(&rest[16..]),
        record,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
}

impl HintStore {
    /// A crash-consistent checkpoint of the hints in `dir` (see
    /// `Db::checkpoint`). Blocking.
    pub fn checkpoint_blocking(
        &self,
        dir: &Path,
    ) -> Result<ringkv_engine::Checkpoint, StorageError> {
        Ok(self.inner.db.checkpoint(dir)?)
    }

    /// Decodes one stored hint (engine key and value), e.g. read from a
    /// checkpoint of the hint store.
    pub fn parse_entry(id: &[u8], value: &[u8]) -> Result<Hint, StorageError> {
        parse(id, value)
    }
    pub fn open(dir: &Path, sync: SyncMode) -> Result<HintStore, StorageError> {
        let opts = Options {
            sync: match sync {
                SyncMode::Always => SyncPolicy::Always,
                SyncMode::Periodic(d) => SyncPolicy::Periodic(d),
                SyncMode::Never => SyncPolicy::Never,
            },
            memtable_bytes: 8 << 20,
            ..Options::default()
        };
        let db = Db::open(dir, opts)?;
        let mut pending: BTreeMap<String, u64> = BTreeMap::new();
        for item in db.iter()? {
            let (k, _) = item?;
            if k.first() == Some(&0) {
                continue; // the per-key index
            }
            if let Some(sep) = k.iter().position(|&b| b == 0) {
                let t = String::from_utf8_lossy(&k[..sep]).to_string();
                *pending.entry(t).or_default() += 1;
            }
        }
        Ok(HintStore {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                seq: AtomicU64::new(0),
                pending: Mutex::new(pending),
                locks: KeyLocks::new(STRIPES),
            }),
        })
    }

    /// The merge of every hint this node holds for `key` (for any target):
    /// what a sloppy read finds on a substitute.
    pub async fn lookup(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        if self.pending_total() == 0 {
            return Ok(None);
        }
        let v = self.get(index_key(key)).await?;
        Ok(v.as_deref().and_then(decode_index).map(|(_, r)| r))
    }

    /// Keys in the per-key index (0 once every hint is gone).
    pub async fn indexed_keys(&self) -> Result<usize, StorageError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut n = 0;
            for item in inner.db.scan([0u8].as_slice()..[1u8].as_slice())? {
                item?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    /// An engine read that leaves the runtime only when it needs the disk.
    async fn get(&self, k: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        keyed::get(&self.inner.db, &k).await
    }

    /// Applies `delta` hints of `key` (merging `rec` when adding) to the
    /// index entry, into `b`. The caller holds the key's stripe.
    async fn index_update(
        &self,
        b: &mut WriteBatch,
        key: &[u8],
        delta: i64,
        rec: Option<&Record>,
    ) -> Result<(), StorageError> {
        let ik = index_key(key);
        let cur = self.get(ik.clone()).await?;
        let (count, merged) = match cur.as_deref().and_then(decode_index) {
            Some((n, r)) => (n as i64, Some(r)),
            None => (0, None),
        };
        let count = count + delta;
        let merged = match (merged, rec) {
            (Some(m), Some(r)) => Some(m.merge(r)),
            (m, r) => m.or_else(|| r.cloned()),
        };
        match merged {
            Some(m) if count > 0 => {
                b.put(&ik, &encode_index(count as u32, &m));
            }
            _ => {
                b.delete(&ik);
            }
        }
        Ok(())
    }

    /// Deletes hints by engine key, with their index entries.
    async fn delete(&self, ids: Vec<Vec<u8>>) -> Result<(), StorageError> {
        let mut per_key: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for id in &ids {
            if let Some(k) = key_of(id) {
                *per_key.entry(k.to_vec()).or_default() -= 1;
            }
        }
        let _guards = self
            .inner
            .locks
            .lock_all(per_key.keys().map(|k| k.as_slice()))
            .await;
        let mut b = WriteBatch::new();
        for id in &ids {
            b.delete(id);
        }
        for (k, d) in &per_key {
            self.index_update(&mut b, k, *d, None).await?;
        }
        self.inner.db.write_async(b).await?;
        let mut pending = self.inner.pending.lock();
        for id in &ids {
            let Some(sep) = id.iter().position(|&b| b == 0) else {
                continue;
            };
            let t = String::from_utf8_lossy(&id[..sep]).to_string();
            if let Some(n) = pending.get_mut(&t) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    pending.remove(&t);
                }
            }
        }
        Ok(())
    }

    /// Stores a hint for `target`; durable when this returns (per the sync policy).
    pub async fn store(
        &self,
        target: &str,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let mut id = prefix(target);
        id.extend_from_slice(&now_ms.to_be_bytes());
        // Sequence: unique within this process; the created time keeps ids
        // from an earlier run apart.
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        id.extend_from_slice(&seq.to_be_bytes());
        id.extend_from_slice(key);
        let _guard = self.inner.locks.lock(key).await;
        let mut b = WriteBatch::new();
        b.put(&id, &record.encode());
        self.index_update(&mut b, key, 1, Some(record)).await?;
        self.inner.db.write_async(b).await?;
        *self
            .inner
            .pending
            .lock()
            .entry(target.to_string())
            .or_default() += 1;
        Ok(())
    }

    /// Up to `limit` of `target`'s oldest hints. A hint that does not
    /// decode is deleted (and logged) here: it could never be delivered,
    /// and it must not hold back every later hint for its target.
    pub async fn oldest(&self, target: &str, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let inner = self.inner.clone();
        let p = prefix(target);
        let t = target.to_string();
        let (out, bad) = blocking(move || {
            let mut end = p.clone();
            *end.last_mut().expect("prefix") = 1;
            let mut out = Vec::new();
            let mut bad = Vec::new();
            for item in inner.db.scan(p.as_slice()..end.as_slice())? {
                let (k, v) = item?;
                match parse(&k, &v) {
                    Ok(h) => out.push(h),
                    Err(e) => {
                        tracing::warn!(target = %t, error = %e, "undecodable hint dropped");
                        bad.push(k);
                    }
                }
                if out.len() >= limit || bad.len() >= limit {
                    break;
                }
            }
            Ok((out, bad))
        })
        .await?;
        if !bad.is_empty() {
            self.delete(bad).await?;
        }
        Ok(out)
    }

    /// Deletes hints (delivered or dropped).
    pub async fn remove(&self, hints: &[Hint]) -> Result<(), StorageError> {
        if hints.is_empty() {
            return Ok(());
        }
        self.delete(hints.iter().map(|h| h.id.clone()).collect())
            .await
    }

    /// Hints held per target.
    pub fn pending(&self) -> BTreeMap<String, u64> {
        self.inner.pending.lock().clone()
    }

    pub fn pending_total(&self) -> u64 {
        self.inner.pending.lock().values().sum()
    }

    pub async fn flush(&self) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        blocking(move || inner.db.flush().map_err(StorageError::from)).await
    }

    pub async fn close(&self) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        blocking(move || inner.db.close().map_err(StorageError::from)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{LwwValue, Value};

    fn rec(v: &str) -> Record {
        Record::Lww(LwwValue {
            hlc: 1,
            writer: "w".into(),
            value: Value {
                data: Some(Bytes::from(v.to_string())),
                expires_at_ms: 0,
                written_at_ms: 1,
            },
        })
    }

    #[tokio::test]
    async fn hints_survive_reopen_and_are_kept_per_target_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = HintStore::open(dir.path(), SyncMode::Always).unwrap();
            h.store("b", b"k2", &rec("2"), 20).await.unwrap();
            h.store("b", b"k1", &rec("1"), 10).await.unwrap();
            h.store("bb", b"x", &rec("x"), 5).await.unwrap();
            h.close().await.unwrap();
        }
        let h = HintStore::open(dir.path(), SyncMode::Always).unwrap();
        assert_eq!(h.pending().get("b"), Some(&2));
        assert_eq!(h.pending().get("bb"), Some(&1));
        let got = h.oldest("b", 10).await.unwrap();
        let keys: Vec<&[u8]> = got.iter().map(|x| x.key.as_ref()).collect();
        assert_eq!(
            keys,
            vec![b"k1".as_ref(), b"k2".as_ref()],
            "oldest first, no bb"
        );
        assert_eq!(got[0].record, rec("1"));
        assert_eq!(got[0].created_ms, 10);
        h.remove(&got[..1]).await.unwrap();
        assert_eq!(h.pending_total(), 2);
        assert_eq!(h.oldest("b", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_key_index_holds_the_merge_of_held_hints_until_the_last_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mut newer = rec("2");
        if let Record::Lww(l) = &mut newer {
            l.hlc = 2;
        }
        {
            let h = HintStore::open(dir.path(), SyncMode::Always).unwrap();
            assert_eq!(h.lookup(b"k").await.unwrap(), None);
            h.store("a", b"k", &rec("1"), 10).await.unwrap();
            h.store("b", b"k", &newer, 11).await.unwrap();
            h.store("a", b"other", &rec("o"), 12).await.unwrap();
            assert_eq!(h.lookup(b"k").await.unwrap(), Some(newer.clone()));
            assert_eq!(h.indexed_keys().await.unwrap(), 2);
            h.close().await.unwrap();
        }
        // The index survives a restart and is not counted as a hint.
        let h = HintStore::open(dir.path(), SyncMode::Always).unwrap();
        assert_eq!(h.pending_total(), 3);
        assert_eq!(h.lookup(b"k").await.unwrap(), Some(newer.clone()));
        let a = h.oldest("a", 10).await.unwrap();
        assert_eq!(a.len(), 2, "no index entry among a's hints");
        h.remove(&a).await.unwrap();
        // b's hint of k is still held: k stays readable, `other` is gone.
        assert_eq!(h.lookup(b"k").await.unwrap(), Some(newer));
        assert_eq!(h.lookup(b"other").await.unwrap(), None);
        let b = h.oldest("b", 10).await.unwrap();
        h.remove(&b).await.unwrap();
        assert_eq!(h.indexed_keys().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_undecodable_hint_is_dropped_and_does_not_hold_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let h = HintStore::open(dir.path(), SyncMode::Never).unwrap();
        h.store("b", b"k2", &rec("2"), 20).await.unwrap();
        // The poisoned record (a counter wrapped to 0), oldest of all.
        let mut id = prefix("b");
        id.extend_from_slice(&1u64.to_be_bytes());
        id.extend_from_slice(&0u64.to_be_bytes());
        id.extend_from_slice(b"k0");
        let poisoned = ringkv_proto::v1::Record {
            kind: Some(ringkv_proto::v1::record::Kind::Causal(
                ringkv_proto::v1::CausalRecord {
                    entries: vec![ringkv_proto::v1::DvvEntry {
                        node: "node-0".into(),
                        counter: 0,
                        values: vec![Default::default()],
                    }],
                },
            )),
        };
        h.inner
            .db
            .put(&id, &prost::Message::encode_to_vec(&poisoned))
            .unwrap();
        *h.inner.pending.lock().get_mut("b").unwrap() += 1;
        let got = h.oldest("b", 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key.as_ref(), b"k2");
        assert_eq!(h.pending().get("b"), Some(&1));
        // Gone for good.
        assert_eq!(h.oldest("b", 10).await.unwrap().len(), 1);
    }
}
