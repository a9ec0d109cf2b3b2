//! ringkv-engine: the LSM storage engine of a ringkv node. It knows nothing of
//! clusters: keys and values are opaque bytes, keys ordered lexicographically.
//!
//! NOTE: the API here is final; the body is a temporary in-memory stand-in
//! while the real LSM lands (issue 2).

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Errors of the engine. Corruption always names the file and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption { file: PathBuf, offset: u64, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the database is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When the write-ahead log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before a write is acknowledged; concurrent writers share one fsync (group commit).
    Always,
    /// fsync in the background at this interval; a crash loses at most about this much.
    Periodic(Duration),
    /// Never fsync the log explicitly (the OS decides); a crash may lose recent writes.
    Never,
}

/// Block compression of SSTables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
}

/// Source of "now" for expiry and tombstone grace (unix milliseconds).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_unix_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Options chosen at open.
#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// Size at which the active memtable becomes immutable and is flushed.
    pub memtable_bytes: usize,
    /// Memory budget of the block cache.
    pub block_cache_bytes: usize,
    /// How long a delete's tombstone is kept before compaction may drop it.
    pub tombstone_grace: Duration,
    pub compression: Compression,
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            memtable_bytes: 32 << 20,
            block_cache_bytes: 64 << 20,
            tombstone_grace: Duration::ZERO,
            compression: Compression::Lz4,
            clock: Arc::new(SystemClock),
        }
    }
}

/// An atomic group of writes: all of them become visible (and durable) together or none.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<(Vec<u8>, u64)>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.put_expiring(key, value, 0)
    }
    /// `expires_at_unix_ms == 0` means never.
    pub fn put_expiring(&mut self, key: &[u8], value: &[u8], expires_at_unix_ms: u64) -> &mut Self {
        self.ops.push((key.to_vec(), Some((value.to_vec(), expires_at_unix_ms))));
        self
    }
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push((key.to_vec(), None));
        self
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

type Map = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// An open database. `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct Db {
    map: Mutex<Option<Map>>,
    clock: Arc<dyn Clock>,
}

impl Db {
    pub fn open(_path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        Ok(Db { map: Mutex::new(Some(Map::new())), clock: opts.clock })
    }
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(WriteBatch::new().put(key, value).clone())
    }
    /// Like `put`, invisible from `expires_at_unix_ms` on (0 = never).
    pub fn put_expiring(&self, key: &[u8], value: &[u8], expires_at_unix_ms: u64) -> Result<()> {
        self.write(WriteBatch::new().put_expiring(key, value, expires_at_unix_ms).clone())
    }
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.write(WriteBatch::new().delete(key).clone())
    }
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut g = self.map.lock();
        let m = g.as_mut().ok_or(Error::Closed)?;
        for (k, op) in batch.ops {
            match op {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.clock.now_unix_ms();
        let g = self.map.lock();
        let m = g.as_ref().ok_or(Error::Closed)?;
        Ok(m.get(key).filter(|(_, e)| *e == 0 || *e > now).map(|(v, _)| v.clone()))
    }
    /// Ordered scan of a consistent snapshot taken now.
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Scan> {
        let now = self.clock.now_unix_ms();
        let g = self.map.lock();
        let m = g.as_ref().ok_or(Error::Closed)?;
        let conv = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let items: Vec<_> = m
            .range((conv(range.start_bound()), conv(range.end_bound())))
            .filter(|(_, (_, e))| *e == 0 || *e > now)
            .map(|(k, (v, _))| Ok((k.clone(), v.clone())))
            .collect();
        Ok(Scan { inner: items.into_iter() })
    }
    /// Scan of every key.
    pub fn iter(&self) -> Result<Scan> {
        self.scan::<&[u8], _>(..)
    }
    /// Make everything written so far durable in SSTables.
    pub fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Compact every level now and wait for it.
    pub fn compact(&self) -> Result<()> {
        Ok(())
    }
    /// Flush and stop background work; later calls return `Error::Closed`.
    pub fn close(&self) -> Result<()> {
        self.map.lock().take();
        Ok(())
    }
}

/// Iterator over a snapshot; yields `(key, value)` in key order.
pub struct Scan {
    inner: std::vec::IntoIter<Result<(Vec<u8>, Vec<u8>)>>,
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}
