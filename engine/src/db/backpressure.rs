//! Write back-pressure and memtable rotation: writers wait for flush and compaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::manifest::sync_dir;
use crate::memtable::Memtable;
use crate::options::SyncPolicy;
use crate::record::LogWriter;
use crate::space;
use crate::version::wal_name;

use super::{Inner, State, add};

impl Inner {
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
}
