//! Options chosen when a database is opened.

use std::sync::Arc;
use std::time::Duration;

/// When the write-ahead log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before a write is acknowledged; concurrent writers share one
    /// fsync (group commit).
    Always,
    /// fsync in the background at this interval; a machine crash loses at most
    /// about this much. A process crash loses nothing (every write reaches the OS).
    Periodic(Duration),
    /// Never fsync the log explicitly; the OS decides. A process crash loses
    /// nothing, a machine crash may lose recent writes.
    Never,
}

/// Block compression of SSTables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
}

/// Source of "now" for expiry and tombstone grace, in unix milliseconds.
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

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(now_unix_ms: u64) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(now_unix_ms))
    }
    pub fn set(&self, now_unix_ms: u64) {
        self.0
            .store(now_unix_ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Options chosen at open. Memory used by the engine is bounded by
/// `memtable_bytes * (1 + max_immutable_memtables) + block_cache_bytes`
/// plus small per-file metadata, whatever the data size.
#[derive(Debug, Clone)]
pub struct Options {
    /// Create the directory and an empty database if none exists.
    pub create_if_missing: bool,
    pub sync: SyncPolicy,
    /// Size at which the active memtable becomes immutable and is flushed.
    pub memtable_bytes: usize,
    /// Immutable memtables waiting for flush before writers stall.
    pub max_immutable_memtables: usize,
    /// Memory budget of the block cache (data, index and filter blocks).
    pub block_cache_bytes: usize,
    /// Uncompressed size of an SSTable data block.
    pub block_bytes: usize,
    /// Bloom filter bits per key (10 gives about 1% false positives).
    pub bloom_bits_per_key: u32,
    pub compression: Compression,
    /// Number of L0 files that triggers an L0 -> L1 compaction.
    pub l0_compaction_trigger: usize,
    /// Number of L0 files at which each write group is delayed a little.
    pub l0_slowdown_trigger: usize,
    /// Number of L0 files at which writes wait for compaction.
    pub l0_stop_trigger: usize,
    /// Target size of level 1; each further level is `level_multiplier` times larger.
    pub l1_target_bytes: u64,
    pub level_multiplier: u64,
    /// Target size of one SSTable written by compaction.
    pub target_file_bytes: u64,
    /// How long a delete's tombstone is kept before compaction may drop it.
    pub tombstone_grace: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            sync: SyncPolicy::Always,
            memtable_bytes: 64 << 20,
            max_immutable_memtables: 2,
            block_cache_bytes: 64 << 20,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            compression: Compression::Lz4,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 12,
            l0_stop_trigger: 20,
            l1_target_bytes: 256 << 20,
            level_multiplier: 10,
            target_file_bytes: 64 << 20,
            tombstone_grace: Duration::ZERO,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_string()));
        if self.memtable_bytes < 1024 {
            return bad("memtable_bytes must be at least 1024");
        }
        if self.max_immutable_memtables == 0 {
            return bad("max_immutable_memtables must be at least 1");
        }
        if self.block_bytes < 256 || self.block_bytes > (4 << 20) {
            return bad("block_bytes must be between 256 and 4 MiB");
        }
        if self.bloom_bits_per_key > 64 {
            return bad("bloom_bits_per_key must be at most 64");
        }
        if self.l0_compaction_trigger < 1
            || self.l0_slowdown_trigger < self.l0_compaction_trigger
            || self.l0_stop_trigger < self.l0_slowdown_trigger
        {
            return bad(
                "need 1 <= l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger",
            );
        }
        if self.level_multiplier < 2 {
            return bad("level_multiplier must be at least 2");
        }
        if self.target_file_bytes < 1024 || self.l1_target_bytes < 1024 {
            return bad("target_file_bytes and l1_target_bytes must be at least 1024");
        }
        if let SyncPolicy::Periodic(d) = self.sync
            && d.is_zero()
        {
            return bad("periodic sync interval must be positive");
        }
        Ok(())
    }
}
