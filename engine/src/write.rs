//! The write path: writers append on their own thread (or async task), one
//! commit thread per database makes their appends durable.
//!
//! - A writer, under the `pending` lock, takes the next sequence numbers,
//!   copies its batch into the group being built and inserts it into the
//!   active memtable. Nothing is visible yet: readers only see sequence
//!   numbers up to `visible_seq`.
//! - The commit thread takes the whole group at once, writes it as one WAL
//!   record (so recovery sees it whole or as a torn tail), fsyncs it under
//!   `SyncPolicy::Always`, publishes its sequence numbers and wakes every
//!   writer in it. Writers arriving meanwhile form the next group, so one
//!   fsync serves everyone who came during the previous one.
//! - A writer that finds the memtable full asks for a rotation and waits; no
//!   writer appends until the commit thread has written what was appended
//!   and rotated, so a batch always lands in the memtable whose WAL holds it.
//!
//! Waiting is either blocking (a condition variable: `Db::write`) or async
//! (a `Waker`: `Db::write_async`), so an async caller never parks a thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::batch::{WriteBatch, encode_group_header};
use crate::db::{Inner, insert_ops};
use crate::error::{Error, Result};
use crate::manifest::sync_dir;
use crate::memtable::Memtable;
use crate::options::SyncPolicy;
use crate::record::LogWriter;
use crate::space::{self, Backoff};
use crate::version::wal_name;

/// The group being built, and what writers need to append to it.
pub(crate) struct Pending {
    /// The memtable appends go into (the active one).
    pub(crate) mem: Arc<Memtable>,
    payload: Vec<u8>,
    count: u32,
    first_seq: u64,
    write_time: u64,
    /// Last sequence number handed out.
    next_seq: u64,
    /// A rotation is wanted (`Some(force)`); nobody appends until it is done.
    rotate: Option<bool>,
    shutdown: bool,
}

/// Waiters for a counter to reach a value: async ones by `Waker`, blocking
/// ones on the condition variable.
#[derive(Default)]
struct Waiters {
    list: Mutex<Vec<(u64, Waker)>>,
    cv: Condvar,
}

impl Waiters {
    /// Wakes everyone waiting for a value `<= reached` (all when `None`).
    fn wake(&self, reached: Option<u64>) {
        let mut l = self.list.lock();
        let mut i = 0;
        while i < l.len() {
            if reached.is_none_or(|r| l[i].0 <= r) {
                l.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
        self.cv.notify_all();
    }
}

pub(crate) struct Pipeline {
    pending: Mutex<Pending>,
    /// Wakes the commit thread.
    work: Condvar,
    /// Last sequence number written (and synced, under `Always`).
    durable: AtomicU64,
    durable_waiters: Waiters,
    /// Bumped after every rotation (writers waiting for room watch it).
    rotations: AtomicU64,
    room_waiters: Waiters,
    /// Set when a WAL write failed for good (or the database closed while
    /// a group waited for space): nothing more is acknowledged.
    failed: AtomicBool,
    /// After a WAL append or sync failed for lack of space: the length to
    /// cut the log back to (its last complete record) before the next
    /// attempt, which goes into a fresh log file.
    wal_reset: Mutex<Option<u64>>,
}

/// The outcome of one attempt to append.
enum Append {
    /// Appended; durable once `durable` reaches this.
    Seq(u64),
    /// The memtable is full: wait for the rotation after this many.
    NeedRoom(u64),
}

impl Pipeline {
    pub(crate) fn new(mem: Arc<Memtable>, last_seq: u64) -> Pipeline {
        Pipeline {
            pending: Mutex::new(Pending {
                mem,
                payload: Vec::new(),
                count: 0,
                first_seq: 0,
                write_time: 0,
                next_seq: last_seq,
                rotate: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            durable: AtomicU64::new(last_seq),
            durable_waiters: Waiters::default(),
            rotations: AtomicU64::new(0),
            room_waiters: Waiters::default(),
            failed: AtomicBool::new(false),
            wal_reset: Mutex::new(None),
        }
    }
}

impl Inner {
    fn failure(&self) -> Error {
        match &self.state.lock().bg_error {
            Some(e) => Error::Background(e.to_string()),
            None => Error::Closed,
        }
    }

    fn try_append(&self, batch: &WriteBatch) -> Result<Append> {
        let pl = &self.pipeline;
        let mut p = pl.pending.lock();
        if pl.failed.load(Ordering::Acquire) {
            drop(p);
            return Err(self.failure());
        }
        if p.shutdown {
            return Err(Error::Closed);
        }
        // Out of space: refused before anything is appended.
        if self.space.refusing() {
            return Err(self.space.error());
        }
        if p.rotate.is_some() || p.mem.size() >= self.opts.memtable_bytes {
            let seen = pl.rotations.load(Ordering::Acquire);
            p.rotate.get_or_insert(false);
            pl.work.notify_one();
            return Ok(Append::NeedRoom(seen));
        }
        if p.count == 0 {
            p.first_seq = p.next_seq + 1;
            p.write_time = self.opts.clock.now_unix_ms();
        }
        let first = p.next_seq + 1;
        p.next_seq += u64::from(batch.count);
        p.count += batch.count;
        p.payload.extend_from_slice(&batch.rep);
        insert_ops(&p.mem, first, p.write_time, crate::batch::ops(batch));
        let last = p.next_seq;
        drop(p);
        pl.work.notify_one();
        Ok(Append::Seq(last))
    }

    fn durable_or_failed(&self, seq: u64) -> Option<Result<()>> {
        if self.pipeline.durable.load(Ordering::Acquire) >= seq {
            Some(Ok(()))
        } else if self.pipeline.failed.load(Ordering::Acquire) {
            Some(Err(self.failure()))
        } else {
            None
        }
    }

    fn room_or_failed(&self, seen: u64) -> Option<Result<()>> {
        let pl = &self.pipeline;
        if pl.rotations.load(Ordering::Acquire) > seen {
            Some(Ok(()))
        } else if pl.failed.load(Ordering::Acquire) || pl.pending.lock().shutdown {
            Some(Err(self.failure()))
        } else if self.space.refusing() {
            Some(Err(self.space.error()))
        } else {
            None
        }
    }

    /// Blocks until `done` says so, re-checking after every wake-up.
    fn wait_blocking(&self, w: &Waiters, done: impl Fn() -> Option<Result<()>>) -> Result<()> {
        let mut l = w.list.lock();
        loop {
            if let Some(r) = done() {
                return r;
            }
            w.cv.wait_for(&mut l, Duration::from_millis(100));
        }
    }

    /// Applies `batch` (validated and non-empty), blocking until durable.
    pub(crate) fn write_blocking(&self, batch: &WriteBatch) -> Result<()> {
        loop {
            match self.try_append(batch)? {
                Append::Seq(s) => {
                    return self.wait_blocking(&self.pipeline.durable_waiters, || {
                        self.durable_or_failed(s)
                    });
                }
                Append::NeedRoom(seen) => {
                    self.wait_blocking(&self.pipeline.room_waiters, || self.room_or_failed(seen))?
                }
            }
        }
    }

    /// Asks for a rotation (`force`: even if the memtable is not full) and
    /// waits for it.
    pub(crate) fn rotate_blocking(&self, force: bool) -> Result<()> {
        let pl = &self.pipeline;
        let seen = {
            let mut p = pl.pending.lock();
            if p.shutdown {
                return Err(Error::Closed);
            }
            let seen = pl.rotations.load(Ordering::Acquire);
            p.rotate = Some(p.rotate.unwrap_or(false) || force);
            pl.work.notify_one();
            seen
        };
        self.wait_blocking(&pl.room_waiters, || self.room_or_failed(seen))
    }

    /// Stops the commit thread once everything appended is written.
    pub(crate) fn stop_pipeline(&self) {
        self.pipeline.pending.lock().shutdown = true;
        self.pipeline.work.notify_all();
    }

    fn fail_pipeline(&self, e: Error) {
        {
            let mut st = self.state.lock();
            self.set_bg_error(&mut st, e);
        }
        self.abandon_pipeline();
    }

    /// Writers waiting for room re-check (they may now be refused).
    pub(crate) fn pipeline_room_changed(&self) {
        self.pipeline.room_waiters.wake(None);
    }

    /// Gives up on everything not yet committed (waiters get the
    /// background error, or `Closed`).
    fn abandon_pipeline(&self) {
        self.pipeline.failed.store(true, Ordering::Release);
        self.pipeline.durable_waiters.wake(None);
        self.pipeline.room_waiters.wake(None);
    }

    /// Marks `part` stalled for lack of space, lets refused writers know,
    /// and waits the next back-off. False when the database is closing.
    fn stall_and_wait(&self, part: u8, e: &Error, backoff: &mut Backoff) -> bool {
        self.space.stall(part, e);
        self.pipeline.room_waiters.wake(None);
        let mut p = self.pipeline.pending.lock();
        if p.shutdown {
            return false;
        }
        self.pipeline.work.wait_for(&mut p, backoff.next());
        !p.shutdown
    }
}

/// Waits (async) for `done` to say so; registers its waker with `w` first
/// and re-checks, so a wake between the check and the registration is not
/// lost.
struct Wait<'a, F> {
    waiters: &'a Waiters,
    target: u64,
    done: F,
}

impl<F: Fn() -> Option<Result<()>> + Unpin> Future for Wait<'_, F> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(r) = (self.done)() {
            return Poll::Ready(r);
        }
        let mut l = self.waiters.list.lock();
        if let Some(r) = (self.done)() {
            return Poll::Ready(r);
        }
        match l.iter_mut().find(|(_, w)| w.will_wake(cx.waker())) {
            Some(slot) => slot.0 = self.target,
            None => l.push((self.target, cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// A batch appended to the memtable and the next WAL group, not yet
/// committed; await it for the commit (durable under `SyncPolicy::Always`,
/// visible to readers). Dropping it does not undo the write.
#[must_use = "a write is acknowledged only once its commit completes"]
pub struct Commit {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit").field("seq", &self.seq).finish()
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let seq = self.seq;
        let inner = &self.inner;
        let mut wait = Wait {
            waiters: &inner.pipeline.durable_waiters,
            target: seq,
            done: || inner.durable_or_failed(seq),
        };
        Pin::new(&mut wait).poll(cx)
    }
}

impl Commit {
    /// A commit that is already complete (nothing was appended).
    pub(crate) fn done(inner: Arc<Inner>) -> Commit {
        Commit { inner, seq: 0 }
    }
}

/// `Db::append`: appends on the caller's task (waiting, without blocking a
/// thread, while the memtable is rotated), and returns the commit to await.
pub(crate) async fn append(inner: Arc<Inner>, batch: WriteBatch) -> Result<Commit> {
    loop {
        match inner.try_append(&batch)? {
            Append::Seq(seq) => return Ok(Commit { inner, seq }),
            Append::NeedRoom(seen) => {
                Wait {
                    waiters: &inner.pipeline.room_waiters,
                    // Woken by a full wake (`None`) after the rotation.
                    target: 0,
                    done: || inner.room_or_failed(seen),
                }
                .await?
            }
        }
    }
}

/// The commit thread.
pub(crate) fn commit_loop(inner: Arc<Inner>) {
    let pl = &inner.pipeline;
    let mut payload = Vec::new();
    loop {
        let (first, count, write_time, rotate) = {
            let mut p = pl.pending.lock();
            while p.count == 0 && p.rotate.is_none() && !p.shutdown {
                pl.work.wait(&mut p);
            }
            if p.count == 0 && p.rotate.is_none() {
                return; // shut down with nothing left to write
            }
            payload.clear();
            std::mem::swap(&mut payload, &mut p.payload);
            let taken = (p.first_seq, p.count, p.write_time, p.rotate);
            p.count = 0;
            taken
        };
        if count > 0 {
            // Out of space, the group is retried until it is durable (its
            // writers wait, unacknowledged) while new writes are refused.
            let mut backoff = Backoff::new();
            loop {
                match inner.commit_group(first, count, write_time, &payload) {
                    Ok(()) => break,
                    Err(e) if e.is_no_space() => {
                        if !inner.stall_and_wait(space::WAL, &e, &mut backoff) {
                            // Closed meanwhile: the group was never acknowledged.
                            inner.abandon_pipeline();
                            return;
                        }
                    }
                    Err(e) => {
                        inner.fail_pipeline(e);
                        return;
                    }
                }
            }
            inner.space_back(space::WAL);
            // Don't keep a huge buffer around after one big group.
            if payload.capacity() > (4 << 20) {
                payload = Vec::new();
            }
        }
        if let Some(force) = rotate {
            // Nobody appends while `rotate` is set, and everything appended
            // before it is now in the WAL: the memtable can be swapped.
            let mut backoff = Backoff::new();
            loop {
                match inner.make_room(force) {
                    Ok(mem) => {
                        let mut p = pl.pending.lock();
                        p.mem = mem;
                        p.rotate = None;
                        pl.rotations.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                    // Closing: waiters see the shutdown and give up.
                    Err(Error::Closed) => {
                        pl.room_waiters.wake(None);
                        return;
                    }
                    Err(e) if e.is_no_space() => {
                        if !inner.stall_and_wait(space::WAL, &e, &mut backoff) {
                            inner.abandon_pipeline();
                            return;
                        }
                    }
                    Err(e) => {
                        inner.fail_pipeline(e);
                        return;
                    }
                }
            }
            inner.space_back(space::WAL);
            pl.room_waiters.wake(None);
        }
    }
}

impl Inner {
    /// Writes one group as one WAL record, syncs it if required, then
    /// publishes it and wakes its writers.
    fn commit_group(&self, first: u64, count: u32, write_time: u64, payload: &[u8]) -> Result<()> {
        self.throttle()?;
        let reset = self.pipeline.wal_reset.lock().take();
        if let Some(len) = reset
            && let Err(e) = self.restart_wal(len)
        {
            *self.pipeline.wal_reset.lock() = Some(len);
            return Err(e);
        }
        let written = {
            let mut wal = self.wal.lock();
            let before = wal.len();
            let res = wal
                .append_with(|rec| {
                    encode_group_header(rec, first, write_time, count);
                    rec.extend_from_slice(payload);
                })
                .and_then(|n| {
                    if self.opts.sync == SyncPolicy::Always {
                        wal.sync()?;
                    }
                    Ok(n)
                });
            match res {
                Ok(n) => n,
                Err(e) => {
                    // The record may be partly on disk: cut it off and
                    // write the group again into a fresh log.
                    *self.pipeline.wal_reset.lock() = Some(before);
                    return Err(e);
                }
            }
        };
        let last = first + u64::from(count) - 1;
        self.last_seq.store(last, Ordering::Release);
        self.visible_seq.store(last, Ordering::Release);
        self.pipeline.durable.store(last, Ordering::Release);
        self.pipeline.durable_waiters.wake(Some(last));
        crate::db::add(&self.stats.write_groups, 1);
        crate::db::add(&self.stats.user_bytes, payload.len() as u64);
        crate::db::add(&self.stats.wal_bytes, written as u64);
        Ok(())
    }

    /// After a failed append: cuts the current log back to `len` (its last
    /// complete record, synced — recovery accepts a torn record only at the
    /// end of the newest log) and starts a new log for what follows. The
    /// memtable's entries then span both logs; recovery replays every log
    /// the manifest has not seen flushed, in order.
    fn restart_wal(&self, len: u64) -> Result<()> {
        self.wal.lock().truncate(len)?;
        let n = self.state.lock().new_file();
        let fresh = LogWriter::create(&self.dir.join(wal_name(n)))?;
        if self.opts.sync != SyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        *self.wal.lock() = fresh;
        Ok(())
    }
}
