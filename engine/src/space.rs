//! Running out of disk space without going read-only for good.
//!
//! Background work that fails because the disk is full (or over quota) —
//! a WAL append or sync, a flush, a compaction, a manifest edit — marks its
//! part *stalled* here and retries with back-off, instead of setting the
//! sticky background error that other I/O errors set. While the WAL, a
//! flush or the periodic sync is stalled, new writes are refused at once
//! with `Error::NoSpace` (nothing of them is appended), and writes already
//! appended wait unacknowledged until their group is durable. A stalled
//! compaction alone refuses nothing until level 0 reaches its stop trigger.
//! Once a retry succeeds its part is cleared, and writes are taken again
//! when no part is stalled.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::Error;

pub(crate) const WAL: u8 = 1;
pub(crate) const FLUSH: u8 = 2;
pub(crate) const COMPACTION: u8 = 4;
pub(crate) const SYNC: u8 = 8;
/// Parts whose stall refuses new writes.
const REFUSING: u8 = WAL | FLUSH | SYNC;

#[derive(Default)]
pub(crate) struct Space {
    stalled: AtomicU8,
    /// The last no-space error, for the refusals.
    reason: Mutex<String>,
    pub(crate) retries: AtomicU64,
}

impl Space {
    /// Marks `part` stalled by `e` (a no-space error).
    pub(crate) fn stall(&self, part: u8, e: &Error) {
        *self.reason.lock() = match e {
            Error::NoSpace(m) => m.clone(),
            e => e.to_string(),
        };
        self.stalled.fetch_or(part, Ordering::AcqRel);
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn clear(&self, part: u8) {
        if self.stalled.load(Ordering::Acquire) & part != 0 {
            self.stalled.fetch_and(!part, Ordering::AcqRel);
        }
    }

    pub(crate) fn is(&self, part: u8) -> bool {
        self.stalled.load(Ordering::Acquire) & part != 0
    }

    /// New writes are refused.
    pub(crate) fn refusing(&self) -> bool {
        self.stalled.load(Ordering::Acquire) & REFUSING != 0
    }

    pub(crate) fn error(&self) -> Error {
        Error::NoSpace(self.reason.lock().clone())
    }
}

/// Waits between retries: 50 ms, doubling up to 2 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }

    /// The next wait.
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        d
    }
}
