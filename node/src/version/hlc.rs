//! Hybrid logical clock (Kulkarni et al.): 48 bits of wall-clock milliseconds,
//! 16 bits of logical counter. Monotonic per node, and it moves past every
//! timestamp it observes, so last-write-wins follows causality where it can.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

fn wall_ms() -> u64 {
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
        let phys = wall_ms() << 16;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = phys.max(cur + 1);
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
