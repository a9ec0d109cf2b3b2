//! The background threads: flush, compaction and periodic WAL sync.

use std::sync::Arc;
use std::time::Instant;

use crate::compaction::{self, Compaction};
use crate::error::IoContext;
use crate::manifest::VersionEdit;
use crate::options::SyncPolicy;
use crate::space::{self, Backoff};
use crate::version::{TableFile, table_name};

use super::recovery::{parse_number, write_level0};
use super::{Inner, add};

impl Inner {
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

pub(super) fn flush_loop(inner: Arc<Inner>) {
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

pub(super) fn compaction_loop(inner: Arc<Inner>) {
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

pub(super) fn sync_loop(inner: Arc<Inner>) {
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
