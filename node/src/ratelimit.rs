//! A token bucket shared by background work (hint delivery, repair and range
//! streaming) so it cannot starve client traffic.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    /// Units per second; 0 = unlimited.
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `rate` units per second with one second of burst; 0 = unlimited.
    pub fn new(rate: u64) -> RateLimiter {
        RateLimiter {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Waits until `n` units may be spent, then spends them. A request larger
    /// than the burst goes through once the bucket is full (and leaves it in
    /// debt), so big items are slowed, never stuck.
    pub async fn acquire(&self, n: u64) {
        if self.rate <= 0.0 {
            return;
        }
        let wait = {
            let mut st = self.state.lock();
            let now = Instant::now();
            let (tokens, last) = *st;
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
            let left = refilled - n as f64;
            *st = (left, now);
            if left >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-left / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Lets a repeated log line through at most once per period, and says how
/// many were held back (so a flood of bad input cannot flood the log).
#[derive(Debug)]
pub struct LogEvery {
    period: Duration,
    /// (last allowed, suppressed since).
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl LogEvery {
    pub fn new(period: Duration) -> LogEvery {
        LogEvery {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last one)` when this occurrence may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut st = self.state.lock();
        match st.0 {
            Some(last) if now.duration_since(last) < self.period => {
                st.1 = st.1.saturating_add(1);
                None
            }
            _ => {
                let suppressed = st.1;
                *st = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_to_the_rate_after_the_burst() {
        let r = RateLimiter::new(1000);
        let t = Instant::now();
        r.acquire(1000).await; // the burst
        r.acquire(250).await;
        r.acquire(250).await;
        let e = t.elapsed();
        // Slow machines only add time.
        assert!(e >= Duration::from_millis(450), "{e:?}");
        let u = RateLimiter::new(0);
        u.acquire(1 << 40).await;
    }

    #[test]
    fn log_every_lets_one_through_per_period_and_counts_the_rest() {
        let l = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = LogEvery::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }
}
