//! Hybrid logical clock (Kulkarni et al.): 48 bits of wall-clock milliseconds,
//! 16 bits of logical counter. Monotonic per node, and it moves past every
//! timestamp it observes, so last-write-wins follows causality where it can.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// A timestamp greater than every one issued or observed before.
    pub fn now(&self) -> u64 {
        // 48 bits of ms last until the year 10889; `min` keeps the shift total.
        let phys = wall_ms().min((1 << 48) - 1) << 16;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            // Observed timestamps are bounded by record validation (at most a
            // day ahead), so this cannot saturate in practice.
            let next = phys.max(cur.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::AcqRel);
    }

    /// Wall-clock milliseconds of a timestamp.
    pub fn millis(ts: u64) -> u64 {
        ts >> 16
    }
}
