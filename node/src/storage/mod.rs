//! A replica's local store of records on top of ringkv-engine.
//!
//! Engine key = 8-byte big-endian ring token ++ user key, so one token range
//! is one contiguous engine scan (Merkle trees and range streaming need that).
//! Engine value = the encoded `Record`. Read-merge-write of one key runs under
//! a striped lock so concurrent merges on a replica never lose an update.
//! Engine calls block (fsync), so the async wrappers run them on the blocking
//! pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_engine::{Db, Options, SyncPolicy};

use crate::config::SyncMode;
use crate::ring::key_token;
use crate::version::Record;

const STRIPES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine: {0}")]
    Engine(#[from] ringkv_engine::Error),
    #[error("stored record for a key is corrupt: {0}")]
    Corrupt(String),
    #[error("storage task failed: {0}")]
    Task(String),
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
    db: Db,
    stripes: Vec<Mutex<()>>,
    grace_ms: u64,
    /// Stored records that did not decode (skipped; see `read_blocking`).
    undecodable: std::sync::atomic::AtomicU64,
    undecodable_log: crate::ratelimit::LogEvery,
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
                db,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                grace_ms: tombstone_grace.as_millis() as u64,
                undecodable: Default::default(),
                undecodable_log: crate::ratelimit::LogEvery::new(Duration::from_secs(10)),
            }),
        })
    }

    /// A stored record that does not decode reads as absent (counted and
    /// logged): the key stays writable, read repair and anti-entropy
    /// overwrite it with the other replicas' copy, and no scan stops at it.
    fn read_blocking(inner: &Inner, ekey: &[u8]) -> Result<Option<Record>, StorageError> {
        match inner.db.get(ekey)? {
            None => Ok(None),
            Some(bytes) => match Record::decode(&bytes) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    note_undecodable(inner, ekey, &e);
                    Ok(None)
                }
            },
        }
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

    /// This replica's record of `key`.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let inner = self.inner.clone();
        let ekey = engine_key(key);
        tokio::task::spawn_blocking(move || Self::read_blocking(&inner, &ekey))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
    }

    /// Atomically replaces the record of `key` with `f(current)` and returns
    /// what was written. `f` runs under the key's lock.
    pub async fn update<F>(&self, key: &[u8], f: F) -> Result<Record, StorageError>
    where
        F: FnOnce(Option<Record>) -> Record + Send + 'static,
    {
        let inner = self.inner.clone();
        let ekey = engine_key(key);
        tokio::task::spawn_blocking(move || {
            let stripe = (xxhash_rust::xxh3::xxh3_64(&ekey) as usize) % STRIPES;
            let _g = inner.stripes[stripe].lock();
            let current = Self::read_blocking(&inner, &ekey)?;
            let next = f(current.clone());
            if current.as_ref() != Some(&next) {
                inner
                    .db
                    .put_expiring(&ekey, &next.encode(), next.engine_expiry(inner.grace_ms))?;
            }
            Ok(next)
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
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
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut stripes: Vec<usize> = items
                .iter()
                .map(|(k, _)| (xxhash_rust::xxh3::xxh3_64(&engine_key(k)) as usize) % STRIPES)
                .collect();
            stripes.sort_unstable();
            stripes.dedup();
            let _guards: Vec<_> = stripes.iter().map(|&i| inner.stripes[i].lock()).collect();
            // Later items for the same key merge into earlier results.
            let mut merged: std::collections::BTreeMap<Vec<u8>, Record> = Default::default();
            let mut changed: std::collections::BTreeSet<Vec<u8>> = Default::default();
            let mut bytes = 0u64;
            for (k, rec) in items {
                let ek = engine_key(&k);
                bytes += k.len() as u64;
                let cur = match merged.remove(&ek) {
                    Some(r) => Some(r),
                    None => Self::read_blocking(&inner, &ek)?,
                };
                let next = match &cur {
                    Some(c) => c.merge(&rec),
                    None => rec,
                };
                if cur.as_ref() != Some(&next) {
                    changed.insert(ek.clone());
                }
                merged.insert(ek, next);
            }
            let mut batch = ringkv_engine::WriteBatch::new();
            for (ek, rec) in &merged {
                if changed.contains(ek) {
                    let v = rec.encode();
                    bytes += v.len() as u64;
                    batch.put_expiring(ek, &v, rec.engine_expiry(inner.grace_ms));
                }
            }
            if !batch.is_empty() {
                inner.db.write(batch)?;
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
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
