//! The `Stats` snapshot: the counters and shape of a database.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::compaction;
use crate::version::NUM_LEVELS;

use super::Db;

/// Counters and shape of a database, for metrics and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Keys and values accepted by writes (the batch encoding).
    pub user_bytes_written: u64,
    pub wal_bytes_written: u64,
    pub flush_bytes_written: u64,
    pub compaction_bytes_written: u64,
    pub compaction_bytes_read: u64,
    pub manifest_bytes_written: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// WAL records written by the commit thread: each holds every batch
    /// appended while the previous one was being written (and synced).
    pub write_groups: u64,
    /// Times a write waited for flush or compaction, and for how long in all.
    pub write_stalls: u64,
    pub write_stall_micros: u64,
    /// Write groups delayed because L0 was filling up.
    pub write_slowdowns: u64,
    pub level_files: Vec<usize>,
    pub level_bytes: Vec<u64>,
    pub memtable_bytes: usize,
    pub immutable_memtables: usize,
    pub block_cache_bytes: u64,
    /// Bytes above the size targets of levels 1.. (compaction backlog).
    pub compaction_pending_bytes: u64,
    pub last_sequence: u64,
    /// Writes are refused for lack of disk space right now (background work
    /// retries; they resume by themselves once space is freed).
    pub no_space: bool,
    /// Background operations (WAL, flush, compaction, sync) that failed for
    /// lack of space and were retried.
    pub no_space_retries: u64,
}

impl Stats {
    /// Bytes written to disk per byte of user data.
    pub fn write_amplification(&self) -> f64 {
        let disk = self.wal_bytes_written
            + self.flush_bytes_written
            + self.compaction_bytes_written
            + self.manifest_bytes_written;
        disk as f64 / self.user_bytes_written.max(1) as f64
    }
}

impl Db {
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let c = &inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = inner.state.lock();
        Stats {
            user_bytes_written: l(&c.user_bytes),
            wal_bytes_written: l(&c.wal_bytes),
            flush_bytes_written: l(&c.flush_bytes),
            compaction_bytes_written: l(&c.compaction_written),
            compaction_bytes_read: l(&c.compaction_read),
            manifest_bytes_written: l(&c.manifest_bytes),
            flushes: l(&c.flushes),
            compactions: l(&c.compactions),
            write_groups: l(&c.write_groups),
            write_stalls: l(&c.stalls),
            write_stall_micros: l(&c.stall_micros),
            write_slowdowns: l(&c.slowdowns),
            level_files: st.version.levels.iter().map(Vec::len).collect(),
            level_bytes: (0..NUM_LEVELS).map(|i| st.version.level_bytes(i)).collect(),
            memtable_bytes: st.mem.size() + st.imm.iter().map(|m| m.size()).sum::<usize>(),
            immutable_memtables: st.imm.len(),
            block_cache_bytes: inner.cache.used_bytes(),
            compaction_pending_bytes: compaction::pending_bytes(&st.version, &inner.opts),
            last_sequence: inner.visible_seq.load(Ordering::Relaxed),
            no_space: inner.space.refusing(),
            no_space_retries: l(&inner.space.retries),
        }
    }
}
