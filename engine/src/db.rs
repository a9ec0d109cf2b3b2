//! The database: open and recovery, reads and scans, and the background
//! flush, compaction and sync threads. The write path is in `write.rs`.
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

use std::collections::VecDeque;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::batch::{MAX_KEY_BYTES, Op, WriteBatch, decode_group, plausible_successor};
use crate::cache::BlockCache;
use crate::compaction::{self, Compaction};
use crate::entry::Entry;
use crate::error::{Error, IoContext, Result};
use crate::iter::{LevelSource, MemSource, Merge, Source};
use crate::manifest::{VersionEdit, manifest_name, read_current, set_current, sync_dir};
use crate::memtable::Memtable;
use crate::options::{Options, SyncPolicy};
use crate::record::{LogWriter, read_log};
use crate::space::{self, Backoff, Space};
use crate::sst::bloom;
use crate::sst::table::{BuildOptions, FileMeta, Probe, TableBuilder, TableIter};
use crate::version::{NUM_LEVELS, SuperVersion, TableFile, Version, table_name, wal_name};
use crate::write::{Commit, Pipeline};

/// Rewrite the manifest as a snapshot when it grows past this.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

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

/// What recovery found.
struct Recovered {
    files: Vec<(usize, Arc<TableFile>)>,
    next_file: u64,
    last_seq: u64,
    obsolete: Vec<PathBuf>,
    /// What the logs held that no table has, with the logs kept for it
    /// (its `wal_number` is the first of them): a restart writes no table,
    /// so it needs next to no free space.
    unflushed: Option<Memtable>,
}

pub(crate) fn parse_number(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

/// Write a memtable's newest versions as a level-0 table; `None` if empty.
fn write_level0(
    dir: &Path,
    mem: &Memtable,
    number: u64,
    opts: &Options,
) -> Result<Option<FileMeta>> {
    let path = dir.join(table_name(number));
    let mut b = TableBuilder::create(
        &path,
        number,
        BuildOptions {
            block_bytes: opts.block_bytes,
            compression: opts.compression,
            bloom_bits_per_key: opts.bloom_bits_per_key,
        },
    )?;
    let res = mem.for_each_latest(|k, v| b.add(k, v));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    if b.entries() == 0 {
        drop(b);
        std::fs::remove_file(&path).ctx(&path)?;
        return Ok(None);
    }
    match b.finish() {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
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

/// The file set a manifest describes.
#[derive(Debug, Default)]
pub(crate) struct ManifestState {
    pub(crate) metas: Vec<(usize, FileMeta)>,
    pub(crate) next_file: u64,
    pub(crate) last_seq: u64,
    pub(crate) log_number: u64,
}

/// Replays the manifest `CURRENT` names; `None` when there is no `CURRENT`.
/// Reads only.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<ManifestState>> {
    let Some(name) = read_current(dir)? else {
        return Ok(None);
    };
    let mut st = ManifestState {
        next_file: 1,
        ..Default::default()
    };
    let path = dir.join(&name);
    let contents = match read_log(&path, |p, _| VersionEdit::decode(p).is_some()) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                0,
                format!("names missing manifest {name}"),
            ));
        }
        other => other?,
    };
    // The first record is a snapshot, durable before CURRENT named
    // this file: if it is unreadable the file set is unknown, and
    // treating it as a torn tail would make every table an orphan.
    if contents.records.is_empty() {
        return Err(Error::corruption(
            &path,
            0,
            "manifest has no readable snapshot record",
        ));
    }
    for (off, payload) in contents.payloads() {
        let edit = VersionEdit::decode(payload)
            .ok_or_else(|| Error::corruption(&path, off, "undecodable manifest edit"))?;
        for (l, n) in &edit.deleted {
            st.metas.retain(|(ml, m)| !(ml == l && m.number == *n));
        }
        st.metas.extend(edit.added);
        st.log_number = edit.log_number.unwrap_or(st.log_number);
        st.next_file = edit.next_file.unwrap_or(st.next_file);
        st.last_seq = edit.last_seq.unwrap_or(st.last_seq);
    }
    Ok(Some(st))
}

fn recover(dir: &Path, opts: &Options) -> Result<Recovered> {
    let mut tables = Vec::new();
    let mut wals = Vec::new();
    let mut obsolete = Vec::new();
    let mut max_number = 0;
    for entry in std::fs::read_dir(dir).ctx(dir)? {
        let entry = entry.ctx(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = parse_number(&name, ".sst") {
            tables.push(n);
            max_number = max_number.max(n);
        } else if let Some(n) = parse_number(&name, ".log") {
            wals.push(n);
            max_number = max_number.max(n);
        } else if let Some(n) = name
            .strip_prefix("MANIFEST-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            max_number = max_number.max(n);
            obsolete.push(entry.path());
        } else if name == "CURRENT.tmp" {
            obsolete.push(entry.path());
        }
    }
    let m = read_manifest(dir)?;
    if m.is_none() && (!tables.is_empty() || !wals.is_empty()) {
        return Err(Error::corruption(
            dir.join("CURRENT"),
            0,
            "CURRENT is missing but the directory holds tables or logs",
        ));
    }
    let ManifestState {
        metas,
        mut next_file,
        mut last_seq,
        log_number,
    } = m.unwrap_or_default();
    next_file = next_file.max(max_number + 1);
    let mut files = Vec::new();
    for (level, meta) in metas {
        let n = meta.number;
        if !tables.contains(&n) {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                0,
                format!("table {} named by the manifest is missing", table_name(n)),
            ));
        }
        files.push((level, TableFile::open(dir, meta)?));
    }
    // Tables the manifest does not name are leftovers of interrupted work.
    for n in tables {
        if !files.iter().any(|(_, f)| f.meta.number == n) {
            obsolete.push(dir.join(table_name(n)));
        }
    }
    // Replay logs the manifest has not yet seen flushed, oldest first.
    wals.sort_unstable();
    let live: Vec<u64> = wals.iter().copied().filter(|&n| n >= log_number).collect();
    obsolete.extend(
        wals.iter()
            .filter(|&&n| n < log_number)
            .map(|&n| dir.join(wal_name(n))),
    );
    // Kept in memory (with its logs) up to what a running database may
    // hold in memtables; beyond that, written to level 0 as it is replayed.
    let keep = opts.memtable_bytes * (1 + opts.max_immutable_memtables);
    let mut flushed_any = false;
    let mut mem = Memtable::new(live.first().copied().unwrap_or(0));
    let flush = |mem: &Memtable,
                 files: &mut Vec<(usize, Arc<TableFile>)>,
                 next_file: &mut u64|
     -> Result<()> {
        let n = *next_file;
        *next_file += 1;
        if let Some(m) = write_level0(dir, mem, n, opts)? {
            files.push((0, TableFile::open(dir, m)?));
        }
        Ok(())
    };
    for (i, &n) in live.iter().enumerate() {
        let path = dir.join(wal_name(n));
        let contents = read_log(&path, plausible_successor)?;
        if i + 1 < live.len() && (contents.valid_end as usize) < contents.data.len() {
            // Logs are synced before a new one starts, so only the newest can be torn.
            return Err(Error::corruption(
                &path,
                contents.valid_end,
                "damaged record in a log that is not the newest",
            ));
        }
        for (off, payload) in contents.payloads() {
            let g = decode_group(payload)
                .ok_or_else(|| Error::corruption(&path, off, "undecodable log record"))?;
            let count = insert_ops(&mem, g.first_seq, g.write_time, g.ops.into_iter());
            last_seq = last_seq.max(g.first_seq + count.saturating_sub(1));
            if mem.size() >= keep {
                flush(&mem, &mut files, &mut next_file)?;
                mem = Memtable::new(0);
                flushed_any = true;
            }
        }
        // The next log starts after this one's last complete record: cut a
        // torn tail off (which needs no space), or recovery would later see
        // damage in a log that is not the newest.
        if i + 1 == live.len() && (contents.valid_end as usize) < contents.data.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .ctx(&path)?;
            f.set_len(contents.valid_end).ctx(&path)?;
            f.sync_all().ctx(&path)?;
        }
    }
    let unflushed = if flushed_any {
        // Part of it is in tables already: write the rest, retire every log.
        if !mem.is_empty() {
            flush(&mem, &mut files, &mut next_file)?;
        }
        obsolete.extend(live.iter().map(|&n| dir.join(wal_name(n))));
        None
    } else if mem.is_empty() {
        obsolete.extend(live.iter().map(|&n| dir.join(wal_name(n))));
        None
    } else {
        Some(mem)
    };
    Ok(Recovered {
        files,
        next_file,
        last_seq,
        obsolete,
        unflushed,
    })
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
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let target = st.rotations;
        loop {
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            if st.flushed >= target {
                return Ok(());
            }
            if inner.space.is(space::FLUSH) {
                return Err(inner.space.error());
            }
            if st.shutdown {
                return Err(Error::Closed);
            }
            inner.done_cv.wait_for(&mut st, Duration::from_millis(100));
        }
    }

    /// Flush, then compact every table into the deepest level, dropping
    /// everything dead; waits for it.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        st.manual_requested += 1;
        let target = st.manual_requested;
        inner.bg_cv.notify_all();
        loop {
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            if st.manual_done >= target {
                return Ok(());
            }
            if inner.space.is(space::COMPACTION) {
                return Err(inner.space.error());
            }
            if st.shutdown {
                return Err(Error::Closed);
            }
            inner.done_cv.wait_for(&mut st, Duration::from_millis(100));
        }
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

impl Drop for Db {
    fn drop(&mut self) {
        if !self.inner.closed.load(Ordering::Acquire) {
            let _ = self.shutdown();
        }
    }
}

/// The live value of `key` in `sv` at sequence `seq`, expiry judged at `now`.
pub(crate) fn lookup_in(
    sv: &SuperVersion,
    seq: u64,
    cache: &BlockCache,
    dir: &Path,
    now: u64,
    key: &[u8],
    io: bool,
) -> Result<Cached> {
    if key.len() > MAX_KEY_BYTES {
        return Ok(Cached::Value(None));
    }
    let mut buf = Vec::with_capacity(key.len() + 8);
    for mem in sv.memtables() {
        if let Some(v) = mem.get(key, seq, &mut buf, |e| {
            Entry::decode(e)
                .and_then(|e| e.live_value(now))
                .map(<[u8]>::to_vec)
        }) {
            return Ok(Cached::Value(v));
        }
    }
    // Found(None): an entry that does not decode (bytes that passed their
    // checksum but are not ours — reported, never served).
    let found = sv.version.get(cache, key, bloom::hash(key), io, |e| {
        Entry::decode(e).map(|entry| entry.live_value(now).map(<[u8]>::to_vec))
    })?;
    match found {
        Probe::Found(Some(value)) => Ok(Cached::Value(value)),
        Probe::Found(None) => Err(Error::corruption(
            dir,
            0,
            format!("undecodable stored entry for key {key:?}"),
        )),
        Probe::Absent => Ok(Cached::Value(None)),
        Probe::NeedsIo => Ok(Cached::NeedsIo),
    }
}

pub(crate) fn write_snapshot_manifest(
    dir: &Path,
    number: u64,
    version: &Version,
    log_number: u64,
    next_file: u64,
    last_seq: u64,
) -> Result<LogWriter> {
    let m = write_manifest_file(dir, number, version, log_number, next_file, last_seq)?;
    set_current(dir, &manifest_name(number))?;
    Ok(m)
}

/// A new manifest holding a snapshot of `version`, synced, not yet named
/// by `CURRENT`. On failure the partial file is removed.
fn write_manifest_file(
    dir: &Path,
    number: u64,
    version: &Version,
    log_number: u64,
    next_file: u64,
    last_seq: u64,
) -> Result<LogWriter> {
    let path = dir.join(manifest_name(number));
    let edit = VersionEdit {
        log_number: Some(log_number),
        next_file: Some(next_file),
        last_seq: Some(last_seq),
        added: version.files().map(|(l, f)| (l, f.meta.clone())).collect(),
        deleted: Vec::new(),
    };
    let written = LogWriter::create(&path).and_then(|mut m| {
        m.append(&edit.encode())?;
        m.sync()?;
        sync_dir(dir)?;
        Ok(m)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    written
}

impl Inner {
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

    fn wait_stalled(&self, st: &mut MutexGuard<'_, State>) {
        let t = Instant::now();
        add(&self.stats.stalls, 1);
        self.bg_cv.notify_all();
        self.done_cv.wait_for(st, Duration::from_millis(50));
        add(&self.stats.stall_micros, t.elapsed().as_micros() as u64);
    }

    /// Back-pressure before a write group: refuses after a background
    /// error, waits while level 0 is at its stop trigger and slows down (one
    /// millisecond per group) while it is past the slowdown trigger.
    pub(crate) fn throttle(&self) -> Result<()> {
        let opts = &self.opts;
        let mut st = self.state.lock();
        loop {
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            let l0 = st.version.levels[0].len();
            // After shutdown compaction no longer runs: write what is left.
            if st.shutdown || l0 < opts.l0_slowdown_trigger {
                return Ok(());
            }
            if l0 < opts.l0_stop_trigger {
                add(&self.stats.slowdowns, 1);
                drop(st);
                std::thread::sleep(Duration::from_millis(1));
                return Ok(());
            }
            // Compaction cannot run for lack of space: refuse, don't wait.
            if self.space.is(space::COMPACTION) {
                return Err(self.space.error());
            }
            self.wait_stalled(&mut st);
        }
    }

    /// `part` works again: clears its stall, and lets a compaction waiting
    /// for space try again now rather than after its back-off.
    pub(crate) fn space_back(&self, part: u8) {
        if !self.space.is(part) {
            return;
        }
        self.space.clear(part);
        let mut st = self.state.lock();
        st.compaction_retry_at = None;
        self.bg_cv.notify_all();
    }

    /// Ensure the active memtable has room (rotating it when full, or when
    /// `force` and it is not empty), stalling while flush or compaction is
    /// behind. Returns the memtable the next write group goes into. Called
    /// by the commit thread only, with no append in flight.
    pub(crate) fn make_room(&self, mut force: bool) -> Result<Arc<Memtable>> {
        let opts = &self.opts;
        let mut st = self.state.lock();
        let mut slowed = false;
        loop {
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            if st.shutdown {
                return Err(Error::Closed);
            }
            let l0 = st.version.levels[0].len();
            if l0 >= opts.l0_stop_trigger {
                if self.space.is(space::COMPACTION) {
                    return Err(self.space.error());
                }
                self.wait_stalled(&mut st);
                continue;
            }
            if !slowed && l0 >= opts.l0_slowdown_trigger {
                slowed = true;
                add(&self.stats.slowdowns, 1);
                MutexGuard::unlocked(&mut st, || std::thread::sleep(Duration::from_millis(1)));
                continue;
            }
            let full = if force {
                !st.mem.is_empty()
            } else {
                st.mem.size() >= opts.memtable_bytes
            };
            if !full {
                return Ok(Arc::clone(&st.mem));
            }
            if st.imm.len() >= opts.max_immutable_memtables {
                if self.space.is(space::FLUSH) {
                    return Err(self.space.error());
                }
                self.wait_stalled(&mut st);
                continue;
            }
            let n = st.new_file();
            let new_wal = LogWriter::create(&self.dir.join(wal_name(n)))?;
            if opts.sync != SyncPolicy::Never {
                sync_dir(&self.dir)?;
            }
            {
                let mut wal = self.wal.lock();
                // Sync the finished log: recovery treats damage in any log
                // but the newest as corruption.
                wal.sync()?;
                *wal = new_wal;
            }
            let old = std::mem::replace(&mut st.mem, Arc::new(Memtable::new(n)));
            st.imm.push_back(old);
            st.rotations += 1;
            self.install(&st);
            self.bg_cv.notify_all();
            force = false;
        }
    }

    /// Record an edit durably in the manifest, then install the new version.
    fn log_and_apply(
        &self,
        st: &mut State,
        mut edit: VersionEdit,
        opened: &[Arc<TableFile>],
    ) -> Result<()> {
        if st.manifest_broken {
            self.rewrite_manifest(st)?;
        }
        edit.next_file = Some(st.next_file);
        edit.last_seq = Some(self.last_seq.load(Ordering::Relaxed));
        let payload = edit.encode();
        let logged = st
            .manifest
            .append(&payload)
            .and_then(|()| st.manifest.sync());
        if let Err(e) = logged {
            st.manifest_broken = true;
            return Err(e);
        }
        add(&self.stats.manifest_bytes, payload.len() as u64);
        let old = Arc::clone(&st.version);
        let new = old.apply(&edit, opened);
        for (level, number) in &edit.deleted {
            let moved = edit.added.iter().any(|(_, m)| m.number == *number);
            if !moved && let Some(f) = old.levels[*level].iter().find(|f| f.meta.number == *number)
            {
                f.mark_obsolete();
            }
        }
        st.version = Arc::new(new);
        if st.manifest.len() > MAX_MANIFEST_BYTES {
            // The edit is durable already; a failed rewrite is tried again
            // later (and marks the manifest broken if `CURRENT` may have
            // moved).
            let _ = self.rewrite_manifest(st);
        }
        Ok(())
    }

    /// Starts a new manifest holding a snapshot of the current version and
    /// makes it current; then deletes the old one and the orphaned tables.
    fn rewrite_manifest(&self, st: &mut State) -> Result<()> {
        let n = st.new_file();
        let log_number = st.imm.front().map_or(st.mem.wal_number, |m| m.wal_number);
        let m = write_manifest_file(
            &self.dir,
            n,
            &st.version,
            log_number,
            st.next_file,
            self.last_seq.load(Ordering::Relaxed),
        )?;
        if let Err(e) = set_current(&self.dir, &manifest_name(n)) {
            // `CURRENT` may name either file now: only a later manifest
            // named in full settles it.
            st.manifest_broken = true;
            return Err(e);
        }
        let old_path = self.dir.join(manifest_name(st.manifest_number));
        st.manifest = m;
        st.manifest_number = n;
        st.manifest_broken = false;
        let _ = std::fs::remove_file(old_path);
        for t in std::mem::take(&mut st.orphans) {
            let _ = std::fs::remove_file(self.dir.join(table_name(t)));
        }
        Ok(())
    }

    /// Deletes every log numbered below `next_log` (their memtables are
    /// flushed): the first log of a memtable, and any started after a failed
    /// append.
    fn remove_logs_below(&self, next_log: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if let Some(n) = parse_number(&name.to_string_lossy(), ".log")
                && n < next_log
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn flush_loop(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        let mut st = inner.state.lock();
        while (st.imm.is_empty() || st.bg_error.is_some()) && !st.shutdown {
            inner.bg_cv.wait(&mut st);
        }
        if st.imm.is_empty() || st.bg_error.is_some() {
            return;
        }
        let mem = Arc::clone(st.imm.front().expect("not empty"));
        let number = st.new_file();
        drop(st);
        let written = write_level0(&inner.dir, &mem, number, &inner.opts).and_then(|meta| {
            let opened = match meta {
                Some(m) => vec![TableFile::open(&inner.dir, m)?],
                None => Vec::new(),
            };
            Ok(opened)
        });
        let mut st = inner.state.lock();
        // Logs before the next memtable's are no longer needed.
        let next_log = st.imm.get(1).map_or(st.mem.wal_number, |m| m.wal_number);
        let res = match written {
            Err(e) => {
                let _ = std::fs::remove_file(inner.dir.join(table_name(number)));
                Err(e)
            }
            Ok(opened) => {
                let size: u64 = opened.iter().map(|f| f.meta.size).sum();
                let edit = VersionEdit {
                    log_number: Some(next_log),
                    added: opened.iter().map(|f| (0, f.meta.clone())).collect(),
                    ..Default::default()
                };
                match inner.log_and_apply(&mut st, edit, &opened) {
                    Ok(()) => Ok(size),
                    Err(e) => {
                        // The manifest may name the table after all: keep it
                        // until a new manifest (which does not) is current.
                        if st.manifest_broken {
                            st.orphans.push(number);
                        } else {
                            let _ = std::fs::remove_file(inner.dir.join(table_name(number)));
                        }
                        Err(e)
                    }
                }
            }
        };
        match res {
            Ok(size) => {
                st.imm.pop_front();
                st.flushed += 1;
                inner.install(&st);
                drop(st);
                inner.remove_logs_below(next_log);
                add(&inner.stats.flushes, 1);
                add(&inner.stats.flush_bytes, size);
                backoff = Backoff::new();
                inner.space_back(space::FLUSH);
                inner.bg_cv.notify_all();
                inner.done_cv.notify_all();
            }
            Err(e) if e.is_no_space() => {
                // Writers are refused meanwhile; the same memtable is tried
                // again after the back-off.
                inner.space.stall(space::FLUSH, &e);
                inner.pipeline_room_changed();
                inner.done_cv.notify_all();
                let wait = backoff.next();
                if !st.shutdown {
                    inner.bg_cv.wait_for(&mut st, wait);
                }
                if st.shutdown {
                    return;
                }
            }
            Err(e) => inner.set_bg_error(&mut st, e),
        }
    }
}

fn compaction_loop(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        let mut st = inner.state.lock();
        let (job, manual): (Option<Compaction>, bool) = loop {
            if st.shutdown {
                return;
            }
            let waiting = st
                .compaction_retry_at
                .map(|t| t.saturating_duration_since(Instant::now()))
                .filter(|d| !d.is_zero());
            if st.bg_error.is_none() && waiting.is_none() {
                if st.manual_requested > st.manual_done {
                    break (compaction::full(&st.version), true);
                }
                if let Some(c) = compaction::pick(&st.version, &inner.opts, &st.pointers) {
                    break (Some(c), false);
                }
            }
            match waiting {
                Some(d) => {
                    inner.bg_cv.wait_for(&mut st, d);
                }
                None => inner.bg_cv.wait(&mut st),
            }
        };
        let Some(c) = job else {
            st.manual_done = st.manual_requested;
            inner.done_cv.notify_all();
            continue;
        };
        let version = Arc::clone(&st.version);
        let target = st.manual_requested;
        drop(st);
        let res = compaction::run(&c, &version, &inner.dir, &inner.opts, &inner.cache, || {
            inner.state.lock().new_file()
        });
        let pointer = match c.inputs.first() {
            Some((level, f)) if *level > 0 && !manual => Some((*level, f.meta.largest.clone())),
            _ => None,
        };
        let trivial_move = c.trivial_move;
        // The replaced tables are deleted when their last reference goes; drop
        // this job's references now so that happens when the new version is
        // installed, before a manual `compact()` is told it is done.
        drop(c);
        drop(version);
        let mut st = inner.state.lock();
        let applied =
            res.and_then(
                |o| match inner.log_and_apply(&mut st, o.edit.clone(), &o.outputs) {
                    Ok(()) => Ok(o),
                    Err(e) => {
                        if !trivial_move {
                            if st.manifest_broken {
                                // The manifest may name them after all.
                                st.orphans.extend(o.outputs.iter().map(|f| f.meta.number));
                            } else {
                                o.outputs.iter().for_each(|f| f.mark_obsolete());
                            }
                        }
                        Err(e)
                    }
                },
            );
        match applied {
            Ok(o) => {
                if let Some((level, largest)) = pointer {
                    st.pointers[level] = largest;
                }
                add(&inner.stats.compactions, 1);
                add(&inner.stats.compaction_written, o.bytes_written);
                add(&inner.stats.compaction_read, o.bytes_read);
                inner.install(&st);
                if manual {
                    st.manual_done = st.manual_done.max(target);
                }
                backoff = Backoff::new();
                if inner.space.is(space::COMPACTION) {
                    inner.space.clear(space::COMPACTION);
                }
            }
            Err(e) if e.is_no_space() => {
                inner.space.stall(space::COMPACTION, &e);
                st.compaction_retry_at = Some(Instant::now() + backoff.next());
                // A manual compaction is not retried: its caller is told.
                if manual {
                    st.manual_done = st.manual_done.max(target);
                }
                // Writers stalled on level 0 are refused now, not left waiting.
                inner.pipeline_room_changed();
            }
            Err(e) => inner.set_bg_error(&mut st, e),
        }
        inner.done_cv.notify_all();
        inner.bg_cv.notify_all();
    }
}

fn sync_loop(inner: Arc<Inner>) {
    let SyncPolicy::Periodic(every) = inner.opts.sync else {
        return;
    };
    loop {
        {
            let mut st = inner.state.lock();
            if st.shutdown {
                return;
            }
            inner.bg_cv.wait_for(&mut st, every);
            if st.shutdown {
                return;
            }
        }
        let handle = inner.wal.lock().sync_handle();
        match handle.and_then(|f| f.sync_data().ctx(&inner.dir)) {
            Ok(()) => inner.space_back(space::SYNC),
            // Writes are refused until a later sync gets through.
            Err(e) if e.is_no_space() => {
                inner.space.stall(space::SYNC, &e);
                inner.pipeline_room_changed();
            }
            Err(e) => {
                let mut st = inner.state.lock();
                inner.set_bg_error(&mut st, e);
                return;
            }
        }
    }
}

/// Iterator over a snapshot; yields `(key, value)` in key order. Owns what
/// it reads (tables stay on disk while it lives), so it can outlive borrows
/// of the `Db` and move between threads.
pub struct Scan {
    merge: Merge,
    end: Bound<Vec<u8>>,
    now: u64,
    dir: PathBuf,
    pending: Option<Error>,
    done: bool,
    _sv: Arc<SuperVersion>,
}

impl Scan {
    /// A scan of `range` over the memtables and tables of `sv`, seeing
    /// sequence numbers up to `seq`, expiry judged at `now`.
    pub(crate) fn new<K: AsRef<[u8]>, R: RangeBounds<K>>(
        sv: Arc<SuperVersion>,
        seq: u64,
        cache: &Arc<BlockCache>,
        dir: &Path,
        now: u64,
        range: R,
    ) -> Result<Scan> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for m in sv.memtables() {
            sources.push(Box::new(MemSource::new(Arc::clone(m), seq)));
        }
        for f in &sv.version.levels[0] {
            sources.push(Box::new(TableIter::new(
                Arc::clone(f),
                Arc::clone(cache),
                true,
            )));
        }
        for level in &sv.version.levels[1..] {
            if !level.is_empty() {
                sources.push(Box::new(LevelSource::new(
                    level.clone(),
                    Arc::clone(cache),
                    true,
                )));
            }
        }
        let mut merge = Merge::new(sources);
        match range.start_bound() {
            Bound::Included(k) => merge.seek(k.as_ref())?,
            Bound::Excluded(k) => {
                merge.seek(k.as_ref())?;
                if merge.valid() && merge.key() == k.as_ref() {
                    merge.next()?;
                }
            }
            Bound::Unbounded => merge.seek_to_first()?,
        }
        let end = match range.end_bound() {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(Scan {
            merge,
            end,
            now,
            dir: dir.to_path_buf(),
            pending: None,
            done: false,
            _sv: sv,
        })
    }

    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
            Bound::Unbounded => false,
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        while !self.done {
            if !self.merge.valid() || self.past_end(self.merge.key()) {
                self.done = true;
                return None;
            }
            let item = match Entry::decode(self.merge.value()) {
                None => Some(Err(Error::corruption(
                    &self.dir,
                    0,
                    format!("undecodable stored entry for key {:?}", self.merge.key()),
                ))),
                Some(e) => e
                    .live_value(self.now)
                    .map(|v| Ok((self.merge.key().to_vec(), v.to_vec()))),
            };
            if let Err(e) = self.merge.next() {
                self.pending = Some(e);
            }
            if let Some(Err(_)) = &item {
                self.done = true;
            }
            if item.is_some() {
                return item;
            }
            if let Some(e) = self.pending.take() {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }
}
