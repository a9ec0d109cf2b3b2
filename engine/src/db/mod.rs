//! The database: open and recovery, reads and scans, and the background
//! flush, compaction and sync threads. The write path is in `write.rs`.
//! This file holds the `Db` API and its shared state; recovery, the
//! manifest, the read path, back-pressure, the background threads and
//! stats are in the submodules below.
//!
//! Concurrency in brief:
//! - Writers append to the active memtable and to the group the commit
//!   thread writes next (one WAL record, one fsync for all under
//!   `SyncPolicy::Always`); the commit thread then publishes their sequence
//!   numbers. Only the commit thread rotates memtables, so a batch always
//!   lands in the memtable whose WAL holds it.
//! - Readers load the current `SuperVersion` (memtables + tables) without
//!   locks, then the visible sequence number; what they see is a prefix of
//!   history, so batches are atomic and scans are consistent snapshots.
//! - `state` guards the file set, the manifest and the memtable list. Flush
//!   and compaction run on their own threads and hold it only to install
//!   results.

mod background;
mod backpressure;
mod manifest_io;
mod read;
mod recovery;
mod stats;

use std::collections::VecDeque;
use std::fs::File;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use crate::batch::{Op, WriteBatch};
use crate::cache::BlockCache;
use crate::entry::Entry;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{VersionEdit, sync_dir};
use crate::memtable::Memtable;
use crate::options::{Options, SyncPolicy};
use crate::record::LogWriter;
use crate::space::{self, Space};
use crate::version::{NUM_LEVELS, SuperVersion, Version, wal_name};
use crate::write::{Commit, Pipeline};

use background::{compaction_loop, flush_loop, sync_loop};
use recovery::recover;

pub(crate) use manifest_io::{read_manifest, write_snapshot_manifest};
pub use read::Scan;
pub(crate) use read::lookup_in;
pub(crate) use recovery::{parse_number, replay_logs};
pub use stats::Stats;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) user_bytes: AtomicU64,
    pub(crate) wal_bytes: AtomicU64,
    flush_bytes: AtomicU64,
    compaction_written: AtomicU64,
    compaction_read: AtomicU64,
    manifest_bytes: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    pub(crate) write_groups: AtomicU64,
    stalls: AtomicU64,
    stall_micros: AtomicU64,
    slowdowns: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

pub(crate) struct State {
    mem: Arc<Memtable>,
    /// Immutable memtables waiting for flush, oldest first.
    imm: VecDeque<Arc<Memtable>>,
    pub(crate) version: Arc<Version>,
    manifest: LogWriter,
    manifest_number: u64,
    pub(crate) next_file: u64,
    pub(crate) bg_error: Option<Error>,
    /// A manifest write failed: the edit may or may not be on disk and the
    /// file may end in a torn record, so the next edit starts a new
    /// manifest (a snapshot) instead of appending.
    manifest_broken: bool,
    /// Tables written by edits that failed while the manifest was broken:
    /// deleted once a new manifest (which does not name them) is current.
    orphans: Vec<u64>,
    /// Compaction failed for lack of space: not before this instant.
    compaction_retry_at: Option<Instant>,
    shutdown: bool,
    rotations: u64,
    flushed: u64,
    manual_requested: u64,
    manual_done: u64,
    pointers: [Vec<u8>; NUM_LEVELS],
}

impl State {
    pub(crate) fn new_file(&mut self) -> u64 {
        let n = self.next_file;
        self.next_file += 1;
        n
    }
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) cache: Arc<BlockCache>,
    sv: ArcSwap<SuperVersion>,
    pub(crate) state: Mutex<State>,
    /// Wakes the background threads.
    bg_cv: Condvar,
    /// Wakes stalled writers and `flush`/`compact` callers.
    done_cv: Condvar,
    pub(crate) pipeline: Pipeline,
    /// Background work stalled for lack of disk space.
    pub(crate) space: Space,
    /// Only the commit thread appends; the syncer borrows a handle.
    pub(crate) wal: Mutex<LogWriter>,
    pub(crate) last_seq: AtomicU64,
    pub(crate) visible_seq: AtomicU64,
    closed: AtomicBool,
    pub(crate) stats: Counters,
    _lock: File,
}

/// An open database. `Send + Sync`: share it with `Arc`. Dropping it stops the
/// background threads (unflushed writes stay in the WAL); `close` also
/// flushes.
pub struct Db {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// The answer of [`Db::get_cached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The value (`None`: no live value), found without touching disk.
    Value(Option<Vec<u8>>),
    /// Answering needs a block read from disk.
    NeedsIo,
}

pub(crate) fn insert_ops<'a>(
    mem: &Memtable,
    first_seq: u64,
    write_time: u64,
    ops: impl Iterator<Item = Op<'a>>,
) -> u64 {
    let mut seq = first_seq;
    mem.insert(ops.map(|op| {
        let s = seq;
        seq += 1;
        match op {
            Op::Put {
                key,
                value,
                expires_at,
            } => (key, s, Entry::Put { value, expires_at }),
            Op::Delete { key } => (
                key,
                s,
                Entry::Delete {
                    deleted_at: write_time,
                },
            ),
        }
    }));
    seq - first_seq
}

impl Db {
    /// Open (or create) the database in `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        opts.validate()?;
        let dir = path.as_ref().to_path_buf();
        if !dir.is_dir() {
            if !opts.create_if_missing {
                return Err(Error::InvalidArgument(format!(
                    "no database at {}",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(&dir).ctx(&dir)?;
        }
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(lock_path, e)),
        }

        let mut rec = recover(&dir, &opts)?;
        let mut next_file = rec.next_file;
        let wal_number = next_file;
        let manifest_number = next_file + 1;
        next_file += 2;
        let wal = LogWriter::create(&dir.join(wal_name(wal_number)))?;
        // Logs still holding what no table has stay live (first one on).
        let mem = match rec.unflushed.take() {
            Some(m) => Arc::new(m),
            None => Arc::new(Memtable::new(wal_number)),
        };
        let version = Version::default().apply(
            &VersionEdit {
                added: rec
                    .files
                    .iter()
                    .map(|(l, f)| (*l, f.meta.clone()))
                    .collect(),
                ..Default::default()
            },
            &rec.files
                .iter()
                .map(|(_, f)| Arc::clone(f))
                .collect::<Vec<_>>(),
        );
        let manifest = write_snapshot_manifest(
            &dir,
            manifest_number,
            &version,
            mem.wal_number,
            next_file,
            rec.last_seq,
        )?;
        for p in &rec.obsolete {
            let _ = std::fs::remove_file(p);
        }
        sync_dir(&dir)?;

        let version = Arc::new(version);
        let sv = SuperVersion {
            mem: Arc::clone(&mem),
            imm: Vec::new(),
            version: Arc::clone(&version),
        };
        let inner = Arc::new(Inner {
            cache: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            sv: ArcSwap::from_pointee(sv),
            state: Mutex::new(State {
                mem: Arc::clone(&mem),
                imm: VecDeque::new(),
                version,
                manifest,
                manifest_number,
                next_file,
                bg_error: None,
                manifest_broken: false,
                orphans: Vec::new(),
                compaction_retry_at: None,
                shutdown: false,
                rotations: 0,
                flushed: 0,
                manual_requested: 0,
                manual_done: 0,
                pointers: Default::default(),
            }),
            bg_cv: Condvar::new(),
            done_cv: Condvar::new(),
            pipeline: Pipeline::new(Arc::clone(&mem), rec.last_seq),
            space: Space::default(),
            wal: Mutex::new(wal),
            last_seq: AtomicU64::new(rec.last_seq),
            visible_seq: AtomicU64::new(rec.last_seq),
            closed: AtomicBool::new(false),
            stats: Counters::default(),
            _lock: lock,
            dir,
            opts,
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: fn(Arc<Inner>), inner: &Arc<Inner>| {
            let inner = Arc::clone(inner);
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || f(inner))
                .map_err(|e| Error::io(PathBuf::from(name), e))
        };
        threads.push(spawn("ringkv-commit", crate::write::commit_loop, &inner)?);
        threads.push(spawn("ringkv-flush", flush_loop, &inner)?);
        threads.push(spawn("ringkv-compact", compaction_loop, &inner)?);
        if let SyncPolicy::Periodic(_) = inner.opts.sync {
            threads.push(spawn("ringkv-wal-sync", sync_loop, &inner)?);
        }
        Ok(Db {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// The directory this database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(key.len() + value.len() + 12);
        b.put(key, value);
        self.write(b)
    }

    /// Like `put`, invisible from `expires_at_unix_ms` on (0 = never).
    pub fn put_expiring(&self, key: &[u8], value: &[u8], expires_at_unix_ms: u64) -> Result<()> {
        let mut b = WriteBatch::with_capacity(key.len() + value.len() + 20);
        b.put_expiring(key, value, expires_at_unix_ms);
        self.write(b)
    }

    /// Write a tombstone for `key`.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(key.len() + 6);
        b.delete(key);
        self.write(b)
    }

    /// Apply a batch atomically. With `SyncPolicy::Always` it is durable when
    /// this returns. Blocks the calling thread until then; async callers use
    /// [`Db::write_async`].
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        if let Some(m) = &batch.invalid {
            return Err(Error::InvalidArgument(m.clone()));
        }
        if batch.is_empty() {
            return self.check_open();
        }
        self.check_open()?;
        self.inner.write_blocking(&batch)
    }

    /// [`Db::write`] for async callers: the batch is appended to the
    /// memtable and the next WAL group on the calling task (when the future
    /// is first polled), and the future completes once the commit thread
    /// has written (and, under `SyncPolicy::Always`, synced) that group — no
    /// thread is parked meanwhile. A future dropped after its first poll
    /// does not undo the write. It only waits on a thread's work when the
    /// memtable is full and must be rotated first.
    pub fn write_async(
        &self,
        batch: WriteBatch,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let append = self.append(batch);
        async move { append.await?.await }
    }

    /// The first half of [`Db::write_async`]: appends the batch (in order
    /// with every other write) and returns its [`Commit`], to be awaited
    /// later. Until the commit completes the batch is invisible to readers
    /// and not durable; the caller can do other work meanwhile (a replica
    /// sends the write to its peers while its own fsync runs).
    pub fn append(
        &self,
        batch: WriteBatch,
    ) -> impl std::future::Future<Output = Result<Commit>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            if let Some(m) = &batch.invalid {
                return Err(Error::InvalidArgument(m.clone()));
            }
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if batch.is_empty() {
                return Ok(Commit::done(inner));
            }
            crate::write::append(inner, batch).await
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The value of `key`, if it has a live one.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.lookup(key, true)? {
            Cached::Value(v) => Ok(v),
            Cached::NeedsIo => unreachable!("a lookup with I/O allowed never asks for it"),
        }
    }

    /// [`Db::get`] that never blocks on disk: answered from the memtables,
    /// pinned filters and the block cache, or `Cached::NeedsIo` when a block
    /// would have to be read (then call `get` where blocking is fine). Lets
    /// an async caller serve hot reads and filter misses on its own task.
    pub fn get_cached(&self, key: &[u8]) -> Result<Cached> {
        self.lookup(key, false)
    }

    fn lookup(&self, key: &[u8], io: bool) -> Result<Cached> {
        self.check_open()?;
        let inner = &*self.inner;
        let sv = inner.sv.load();
        let seq = inner.visible_seq.load(Ordering::Acquire);
        let now = inner.opts.clock.now_unix_ms();
        lookup_in(&sv, seq, &inner.cache, &inner.dir, now, key, io)
    }

    /// Ordered scan over a consistent snapshot taken now; writes made after
    /// this call are not seen.
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Scan> {
        self.check_open()?;
        let inner = &*self.inner;
        let sv = inner.sv.load_full();
        let seq = inner.visible_seq.load(Ordering::Acquire);
        Scan::new(
            sv,
            seq,
            &inner.cache,
            &inner.dir,
            inner.opts.clock.now_unix_ms(),
            range,
        )
    }

    /// Scan of every key.
    pub fn iter(&self) -> Result<Scan> {
        self.scan::<&[u8], _>(..)
    }

    /// Write everything in memory to tables and wait for it.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.inner.rotate_blocking(true)?;
        let st = self.inner.state.lock();
        let target = st.rotations;
        self.inner
            .wait_background(st, space::FLUSH, |st| st.flushed >= target)
    }

    /// Flush, then compact every table into the deepest level, dropping
    /// everything dead; waits for it.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let mut st = self.inner.state.lock();
        st.manual_requested += 1;
        let target = st.manual_requested;
        self.inner.bg_cv.notify_all();
        self.inner
            .wait_background(st, space::COMPACTION, |st| st.manual_done >= target)
    }

    /// Flush and stop background work; later calls return `Error::Closed`.
    /// Closing twice is fine.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let flushed = self.flush();
        let stopped = self.shutdown();
        flushed.and(stopped)
    }

    fn shutdown(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::Release);
        // The commit thread writes what was appended, then exits.
        inner.stop_pipeline();
        {
            let mut st = inner.state.lock();
            st.shutdown = true;
            inner.bg_cv.notify_all();
            inner.done_cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        if inner.opts.sync != SyncPolicy::Never {
            inner.wal.lock().sync()?;
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.inner.closed.load(Ordering::Acquire) {
            let _ = self.shutdown();
        }
    }
}

impl Inner {
    /// Waits until the background threads have done what `done` checks,
    /// failing on their error, on running out of space for that `part` of
    /// their work, or on shutdown.
    fn wait_background(
        &self,
        mut st: parking_lot::MutexGuard<'_, State>,
        part: u8,
        done: impl Fn(&State) -> bool,
    ) -> Result<()> {
        loop {
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            if done(&st) {
                return Ok(());
            }
            if self.space.is(part) {
                return Err(self.space.error());
            }
            if st.shutdown {
                return Err(Error::Closed);
            }
            self.done_cv.wait_for(&mut st, Duration::from_millis(100));
        }
    }

    fn install(&self, st: &State) {
        self.sv.store(Arc::new(SuperVersion {
            mem: Arc::clone(&st.mem),
            imm: st.imm.iter().rev().cloned().collect(),
            version: Arc::clone(&st.version),
        }));
    }

    pub(crate) fn set_bg_error(&self, st: &mut State, e: Error) {
        if st.bg_error.is_none() {
            st.bg_error = Some(e);
        }
        self.bg_cv.notify_all();
        self.done_cv.notify_all();
    }
}
