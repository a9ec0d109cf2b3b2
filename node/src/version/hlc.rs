//! Hybrid logical clock (Kulkarni et al.): 48 bits of wall-clock milliseconds,
//! 16 bits of logical counter. Monotonic per node, and it moves past every
//! timestamp it observes, so last-write-wins follows causality where it can.
//!
//! **Persistence.** A clock that only lives in memory starts again from the
//! wall clock after a restart; if that clock was set back (or ran ahead
//! before), the node's next writes get timestamps below writes it already
//! acknowledged and lose to them. So a persistent clock keeps a *ceiling* in
//! the data directory: every timestamp this node issues or accepts lies
//! below it, and a restart continues from it. The ceiling is written ahead
//! of need (`MARGIN_MS` past the clock) in the background, so the hot path
//! only waits for the file when the clock jumps past it (an idle node's first
//! write, or a peer timestamp far ahead). A restart therefore moves the clock
//! at most `MARGIN_MS` ahead of where it stood.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringkv_engine::{Clock, SystemClock};

/// How far ahead of the clock the persisted ceiling is written.
pub const MARGIN_MS: u64 = 1000;

#[derive(Debug)]
pub struct Hlc {
    last: AtomicU64,
    clock: Arc<dyn Clock>,
    ceiling: Option<Arc<Ceiling>>,
}

impl Default for Hlc {
    fn default() -> Self {
        Hlc::with_clock(Arc::new(SystemClock))
    }
}

/// The persisted upper bound of every timestamp used so far.
#[derive(Debug)]
struct Ceiling {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    /// Wall milliseconds the file covers: every timestamp whose millisecond
    /// part is below this may be issued or accepted.
    until_ms: AtomicU64,
    /// One writer of the file at a time.
    write: tokio::sync::Mutex<()>,
    /// A background extension is under way.
    extending: AtomicBool,
}

impl Ceiling {
    /// Writes a ceiling past `need_ms` (and past the clock) unless one is
    /// already there, and waits until it is durable.
    async fn extend(&self, need_ms: u64) -> std::io::Result<()> {
        let _one = self.write.lock().await;
        if self.until_ms.load(Ordering::Acquire) > need_ms.saturating_add(MARGIN_MS / 2) {
            return Ok(());
        }
        let target = self.clock.now_unix_ms().max(need_ms) + MARGIN_MS;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_ceiling(&path, target))
            .await
            .map_err(std::io::Error::other)??;
        self.until_ms.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

fn write_ceiling(path: &Path, until_ms: u64) -> std::io::Result<()> {
    crate::durable::write_file(path, format!("{until_ms}\n").as_bytes())
}

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn wall_ms() -> u64 {
    SystemClock.now_unix_ms()
}

impl Hlc {
    /// A clock on the system wall clock that lives in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock on `clock` that lives in memory only.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Hlc {
            last: AtomicU64::new(0),
            clock,
            ceiling: None,
        }
    }

    /// A clock that continues above every timestamp an earlier run with the
    /// same `path` issued or accepted, whatever `clock` says now. Writes the
    /// first ceiling before returning. A file that does not hold a number is
    /// refused: starting from the wall clock could reuse timestamps.
    pub fn persistent(path: &Path, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let stored = crate::durable::read_u64(path)?.unwrap_or(0);
        let first = clock.now_unix_ms().max(stored) + MARGIN_MS;
        write_ceiling(path, first)?;
        Ok(Hlc {
            last: AtomicU64::new(stored << 16),
            ceiling: Some(Arc::new(Ceiling {
                path: path.to_path_buf(),
                clock: clock.clone(),
                until_ms: AtomicU64::new(first),
                write: tokio::sync::Mutex::new(()),
                extending: AtomicBool::new(false),
            })),
            clock,
        })
    }

    /// A timestamp greater than every one issued or observed before.
    pub fn now(&self) -> u64 {
        // 48 bits of ms last until the year 10889; `min` keeps the shift total.
        let phys = self.clock.now_unix_ms().min((1 << 48) - 1) << 16;
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

    /// The wall clock this hybrid clock runs on, in milliseconds.
    pub fn wall_ms(&self) -> u64 {
        self.clock.now_unix_ms()
    }

    /// Makes sure a persistent clock's ceiling lies above `ts`, so no
    /// timestamp up to `ts` is issued again after a restart; call it before
    /// a record carrying `ts` is acknowledged. Waits for the file only when
    /// `ts` is past the ceiling; when it comes close, extends it in the
    /// background. A clock that lives in memory returns at once.
    pub async fn cover(&self, ts: u64) -> std::io::Result<()> {
        let Some(c) = &self.ceiling else {
            return Ok(());
        };
        let ms = Self::millis(ts);
        let until = c.until_ms.load(Ordering::Acquire);
        if ms.saturating_add(MARGIN_MS / 2) < until {
            return Ok(());
        }
        if ms < until {
            if !c.extending.swap(true, Ordering::AcqRel) {
                let c = c.clone();
                tokio::spawn(async move {
                    if let Err(e) = c.extend(ms).await {
                        tracing::warn!(error = %e, path = %c.path.display(), "extending the hybrid clock's persisted ceiling");
                    }
                    c.extending.store(false, Ordering::Release);
                });
            }
            return Ok(());
        }
        c.extend(ms).await
    }

    /// Wall-clock milliseconds of a timestamp.
    pub fn millis(ts: u64) -> u64 {
        ts >> 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_engine::ManualClock;

    #[tokio::test]
    async fn a_restart_continues_above_everything_covered_even_with_the_clock_set_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("hlc");
        let clock = Arc::new(ManualClock::new(1_000_000));
        let h = Hlc::persistent(&path, clock.clone()).unwrap();
        let mut issued = 0;
        for _ in 0..50 {
            let t = h.now();
            h.cover(t).await.unwrap();
            issued = t;
            clock.advance(std::time::Duration::from_millis(97));
        }
        // A peer's timestamp, accepted.
        let peer = (clock.now_unix_ms() + 3_000) << 16;
        h.observe(peer);
        h.cover(peer).await.unwrap();
        drop(h);
        // Restarted with the clock a minute back.
        clock.set(1_000_000 - 60_000);
        let h = Hlc::persistent(&path, clock.clone()).unwrap();
        let next = h.now();
        assert!(next > issued && next > peer, "{next} <= {issued} / {peer}");
        // And at most the margin past the highest covered timestamp.
        assert!(Hlc::millis(next) <= Hlc::millis(peer) + MARGIN_MS + 1);
    }

    #[tokio::test]
    async fn a_memory_only_clock_starts_from_the_wall_clock() {
        let clock = Arc::new(ManualClock::new(5_000));
        let h = Hlc::with_clock(clock.clone());
        h.cover(h.now() + (1 << 40)).await.unwrap();
        let h = Hlc::with_clock(clock);
        assert_eq!(Hlc::millis(h.now()), 5_000);
    }

    #[test]
    fn an_unreadable_ceiling_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("hlc");
        std::fs::write(&path, "??").unwrap();
        let e = Hlc::persistent(&path, Arc::new(SystemClock)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
