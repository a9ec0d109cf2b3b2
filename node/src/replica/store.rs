//! A replica's local store of records on top of ringkv-engine.
//!
//! Engine key = 8-byte big-endian ring token ++ user key, so one token range
//! is one contiguous engine scan (Merkle trees and range streaming need that).
//! Engine value = the encoded `Record`. Read-merge-write of one key runs under
//! a striped async lock so concurrent merges on a replica never lose an
//! update.
//!
//! Nothing on the request path leaves the async runtime: writes append to
//! the engine on the calling task and await its group commit
//! (`Db::write_async`), and reads answered from memtables, pinned filters
//! or the block cache (`Db::get_cached`) stay on the task too. Only a read
//! that must touch disk goes to the blocking pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use bytes::Bytes;
use ringkv_engine::{Db, Options, SyncPolicy, WriteBatch};

use crate::config::SyncMode;
use crate::ring::key_token;
use crate::version::Record;

use super::keyed::{self, KeyLocks};

const STRIPES: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage engine: {0}")]
    Engine(#[from] ringkv_engine::Error),
    #[error("stored record for a key is corrupt: {0}")]
    Corrupt(String),
    #[error("storage task failed: {0}")]
    Task(String),
    /// An LWW record from a node whose clock runs ahead of this one's.
    #[error(
        "refused: the record's hybrid-clock timestamp is {ahead_ms} ms ahead of this node's clock (max_clock_skew = {}); check the nodes' clock synchronisation (NTP)",
        humantime::format_duration(*max)
    )]
    ClockSkew {
        ahead_ms: u64,
        max: std::time::Duration,
    },
    /// The hybrid clock's persisted ceiling could not be written.
    #[error("hybrid clock: cannot persist its ceiling: {0}")]
    Clock(std::io::Error),
}

impl StorageError {
    /// The disk is full or over quota: writes are refused until space
    /// returns (the engine recovers by itself).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Engine(e) if e.is_no_space())
    }
}

impl From<StorageError> for tonic::Status {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::ClockSkew { .. } => tonic::Status::failed_precondition(e.to_string()),
            e if e.is_no_space() => tonic::Status::resource_exhausted(e.to_string()),
            e => tonic::Status::internal(e.to_string()),
        }
    }
}

pub fn engine_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&key_token(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Db>,
    locks: KeyLocks,
    grace_ms: u64,
    /// This node's writer id, never pruned from a record (`set_writer`).
    writer: std::sync::OnceLock<String>,
    /// Stored records that did not decode (skipped; see `decode`).
    undecodable: std::sync::atomic::AtomicU64,
    undecodable_log: crate::ratelimit::LogEvery,
}

/// The commit of an update whose record is already known: completes once
/// the record is durable (per the sync mode). The key stays locked until
/// then, so the next update of the key starts from this record.
pub type Commit = std::pin::Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

/// A stored record that does not decode reads as absent (counted and
/// logged): the key stays writable, read repair and anti-entropy overwrite
/// it with the other replicas' copy, and no scan stops at it.
fn decode(inner: &Inner, ekey: &[u8], bytes: Option<Vec<u8>>) -> Option<Record> {
    match Record::decode(&bytes?) {
        Ok(r) => Some(r),
        Err(e) => {
            note_undecodable(inner, ekey, &e);
            None
        }
    }
}

fn note_undecodable(inner: &Inner, ekey: &[u8], err: &dyn std::fmt::Display) {
    inner
        .undecodable
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(suppressed) = inner.undecodable_log.allow() {
        let key = &ekey[ekey.len().min(8)..];
        tracing::warn!(
            key = %String::from_utf8_lossy(&key[..key.len().min(64)]),
            error = %err,
            suppressed,
            "stored record does not decode; skipped (the other replicas' copy replaces it)"
        );
    }
}

impl Store {
    pub fn open(
        dir: &Path,
        sync: SyncMode,
        tombstone_grace: Duration,
    ) -> Result<Store, StorageError> {
        let opts = Options {
            sync: match sync {
                SyncMode::Always => SyncPolicy::Always,
                SyncMode::Periodic(d) => SyncPolicy::Periodic(d),
                SyncMode::Never => SyncPolicy::Never,
            },
            tombstone_grace,
            ..Options::default()
        };
        let db = Db::open(dir, opts)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                locks: KeyLocks::new(STRIPES),
                grace_ms: tombstone_grace.as_millis() as u64,
                writer: std::sync::OnceLock::new(),
                undecodable: Default::default(),
                undecodable_log: crate::ratelimit::LogEvery::new(Duration::from_secs(10)),
            }),
        })
    }

    /// Names the writer id this node mints under: every record this store
    /// writes drops the empty entries of retired writer ids (see
    /// `version::prune`), never this one. Set once, by the replica.
    pub fn set_writer(&self, writer: &str) {
        let _ = self.inner.writer.set(writer.to_string());
    }

    /// What is written for `rec`: without the retired writers' empty entries.
    fn pruned(&self, rec: Record) -> Record {
        let keep = self.inner.writer.get().map_or("", String::as_str);
        rec.prune_retired(keep, super::now_ms(), self.inner.grace_ms)
    }

    /// The engine value of `ekey`: from memory on this task when it can be,
    /// else from disk on the blocking pool.
    async fn get(&self, ekey: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        keyed::get(&self.inner.db, ekey).await
    }

    /// This replica's record of `key`.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let ekey = engine_key(key);
        let bytes = self.get(&ekey).await?;
        Ok(decode(&self.inner, &ekey, bytes))
    }

    /// Counts and reports a stored record that did not decode.
    pub fn note_undecodable(&self, ekey: &[u8], err: &dyn std::fmt::Display) {
        note_undecodable(&self.inner, ekey, err);
    }

    /// Stored records found undecodable since start (skipped, not served).
    pub fn undecodable_records(&self) -> u64 {
        self.inner
            .undecodable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Atomically replaces the record of `key` with `f(current)` and returns
    /// what was written (durable, per the sync mode, when this returns).
    /// `f` runs under the key's lock.
    pub async fn update<F>(&self, key: &[u8], f: F) -> Result<Record, StorageError>
    where
        F: FnOnce(Option<Record>) -> Record,
    {
        let (rec, commit) = self.update_then(key, f).await?;
        commit.await?;
        Ok(rec)
    }

    /// `update` in two halves: returns the new record as soon as it is
    /// appended, with the commit to await for its durability. The caller
    /// can use the record meanwhile (a coordinator sends it to the other
    /// replicas while its own fsync runs).
    pub async fn update_then<F>(&self, key: &[u8], f: F) -> Result<(Record, Commit), StorageError>
    where
        F: FnOnce(Option<Record>) -> Record,
    {
        let ekey = engine_key(key);
        let guard = self.inner.locks.lock(&ekey).await;
        let bytes = self.get(&ekey).await?;
        let current = decode(&self.inner, &ekey, bytes);
        let next = self.pruned(f(current.clone()));
        if current.as_ref() == Some(&next) {
            return Ok((next, Box::pin(async { Ok(()) })));
        }
        let mut b = WriteBatch::new();
        b.put_expiring(
            &ekey,
            &next.encode(),
            next.engine_expiry(self.inner.grace_ms),
        );
        let commit = self.inner.db.append(b).await?;
        Ok((
            next,
            Box::pin(async move {
                let _locked = guard;
                commit.await.map_err(StorageError::from)
            }),
        ))
    }

    /// Merges `incoming` into this replica's record (the version sync).
    pub async fn merge(&self, key: &[u8], incoming: Record) -> Result<Record, StorageError> {
        self.update(key, move |cur| match cur {
            Some(c) => c.merge(&incoming),
            None => incoming,
        })
        .await
    }

    /// Merges many records (the version sync, key by key) and writes them
    /// in one engine batch. Every key's stripe is held across its
    /// read-merge-write; stripes are taken in ascending order, so this never
    /// deadlocks against single-key updates. Returns the bytes merged.
    pub async fn merge_batch(&self, items: Vec<(Bytes, Record)>) -> Result<u64, StorageError> {
        if items.is_empty() {
            return Ok(0);
        }
        let ekeys: Vec<Vec<u8>> = items.iter().map(|(k, _)| engine_key(k)).collect();
        let _guards = self
            .inner
            .locks
            .lock_all(ekeys.iter().map(Vec::as_slice))
            .await;
        // Later items for the same key merge into earlier results.
        let mut merged: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
        let mut changed: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut bytes = 0u64;
        for (ek, (k, rec)) in ekeys.into_iter().zip(items) {
            bytes += k.len() as u64;
            let cur = match merged.remove(&ek) {
                Some(r) => Some(r),
                None => {
                    let bytes = self.get(&ek).await?;
                    decode(&self.inner, &ek, bytes)
                }
            };
            let next = self.pruned(match &cur {
                Some(c) => c.merge(&rec),
                None => rec,
            });
            if cur.as_ref() != Some(&next) {
                changed.insert(ek.clone());
            }
            merged.insert(ek, next);
        }
        let mut batch = WriteBatch::new();
        for (ek, rec) in &merged {
            if changed.contains(ek) {
                let v = rec.encode();
                bytes += v.len() as u64;
                batch.put_expiring(ek, &v, rec.engine_expiry(self.inner.grace_ms));
            }
        }
        if !batch.is_empty() {
            self.inner.db.write_async(batch).await?;
        }
        Ok(bytes)
    }

    /// Deletes every engine key of `ekeys` whose stored value `unchanged`
    /// accepts, holding the keys' stripes (in ascending order, as
    /// `merge_batch`) from the check to the delete: a record merged meanwhile
    /// is kept. Cleanup drops what it verified is on the replicas this way.
    /// Returns the keys and bytes deleted.
    pub async fn remove_if_unchanged(
        &self,
        ekeys: Vec<Vec<u8>>,
        unchanged: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<(u64, u64), StorageError> {
        let _guards = self
            .inner
            .locks
            .lock_all(ekeys.iter().map(Vec::as_slice))
            .await;
        let mut batch = WriteBatch::new();
        let (mut keys, mut bytes) = (0u64, 0u64);
        for ek in &ekeys {
            if let Some(v) = self.get(ek).await?
                && unchanged(ek, &v)
            {
                batch.delete(ek);
                keys += 1;
                bytes += (ek.len() + v.len()) as u64;
            }
        }
        if !batch.is_empty() {
            self.inner.db.write_async(batch).await?;
        }
        Ok((keys, bytes))
    }

    /// Visits, in token order, every stored (engine key, encoded record) whose
    /// token lies in the inclusive interval `[lo, hi]`, until `f` returns
    /// false. Blocking: call from the blocking pool.
    pub fn scan_tokens_blocking(
        &self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let lower = lo.to_be_bytes().to_vec();
        let scan = if hi == u64::MAX {
            self.inner.db.scan(lower..)?
        } else {
            self.inner.db.scan(lower..(hi + 1).to_be_bytes().to_vec())?
        };
        for item in scan {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Reads a record by engine key. Blocking.
    pub fn read_engine_key_blocking(&self, ekey: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.db.get(ekey)?)
    }

    /// Number of records stored (a full scan; for status and tests).
    pub async fn count(&self) -> Result<u64, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for item in inner.db.iter()? {
                item?;
                n += 1;
            }
            Ok(n)
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
    }

    /// The engine's counters and shape (levels, backlog, stalls).
    pub fn stats(&self) -> ringkv_engine::Stats {
        self.inner.db.stats()
    }

    /// A crash-consistent checkpoint of the records in `dir` (hard-linked
    /// tables; see `Db::checkpoint`). Blocking: flushes first.
    pub fn checkpoint_blocking(
        &self,
        dir: &Path,
    ) -> Result<ringkv_engine::Checkpoint, StorageError> {
        Ok(self.inner.db.checkpoint(dir)?)
    }

    pub async fn flush(&self) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.db.flush().map_err(StorageError::from))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
    }

    pub async fn close(&self) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.db.close().map_err(StorageError::from))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
    }
}
