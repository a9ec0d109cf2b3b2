//! The closed-loop load generator shared by every system: C clients, each
//! with one request in flight at a time, over a fixed pool of connections;
//! a warm-up, then a measured window. Latencies go into HdrHistograms (µs).
//! A system plugs in through [`Driver`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::error::{BenchError, OpError};
use crate::workload::{Rng, mix, value};
use crate::zipf::{KeyChooser, KeyDist};

/// The same key names on every system: 16 bytes, `bench-0000004711`.
pub fn key_name(i: u64) -> String {
    format!("bench-{i:010}")
}

/// The value every write of a point stores (half random, half zeros: about
/// 2:1 compressible, like db_bench's default).
pub fn value_of(len: usize) -> Bytes {
    Bytes::from(value(0x5eed, len))
}

/// One client's handle on the system (a clone of a pooled connection plus
/// whatever per-system state it needs).
pub trait Session: Send + 'static {
    /// Reads key `key`; returns how many values it holds (0: not found;
    /// more than 1: concurrent siblings).
    fn get(&mut self, key: u64) -> impl Future<Output = Result<usize, OpError>> + Send;
    /// Writes `value` to key `key`.
    fn put(&mut self, key: u64, value: Bytes) -> impl Future<Output = Result<(), OpError>> + Send;
}

/// A system under test, connected.
pub trait Driver: Send + Sync + 'static {
    type Session: Session;
    /// The handle of client number `client` (clients share connections).
    fn session(&self, client: usize) -> Self::Session;
}

/// One measured point's load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub clients: usize,
    /// Fraction of requests that are reads.
    pub read_ratio: f64,
    pub keys: u64,
    pub dist: KeyDist,
    pub value_bytes: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// A request taking longer counts as an error (the client then moves on).
    pub op_timeout: Duration,
    pub seed: u64,
}

/// What the clients saw in the measured window.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub gets: Histogram<u64>,
    pub puts: Histogram<u64>,
    /// Failed requests (not in the histograms).
    pub errors: u64,
    /// Of which timed out.
    pub timeouts: u64,
    /// Reads of a prefilled key that found nothing.
    pub missing: u64,
    /// Reads that returned more than one value.
    pub siblings: u64,
    pub last_error: Option<String>,
    pub window: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid histogram")
}

impl Outcome {
    fn empty(window: Duration) -> Outcome {
        Outcome {
            gets: histogram(),
            puts: histogram(),
            errors: 0,
            timeouts: 0,
            missing: 0,
            siblings: 0,
            last_error: None,
            window,
        }
    }

    fn merge(&mut self, o: Outcome) {
        // Same bounds and auto-resize: adding cannot fail.
        let _ = self.gets.add(&o.gets);
        let _ = self.puts.add(&o.puts);
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.missing += o.missing;
        self.siblings += o.siblings;
        if o.last_error.is_some() {
            self.last_error = o.last_error;
        }
    }

    /// Successful requests completed in the window.
    pub fn ops(&self) -> u64 {
        self.gets.len() + self.puts.len()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops() as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Reads and writes together.
    pub fn all(&self) -> Histogram<u64> {
        let mut h = self.gets.clone();
        let _ = h.add(&self.puts);
        h
    }
}

async fn one_op<S: Session>(
    s: &mut S,
    read: bool,
    key: u64,
    value: &Bytes,
    timeout: Duration,
) -> Result<usize, OpError> {
    let r = if read {
        tokio::time::timeout(timeout, s.get(key)).await
    } else {
        tokio::time::timeout(timeout, async {
            s.put(key, value.clone()).await.map(|()| 1)
        })
        .await
    };
    r.unwrap_or(Err(OpError::Timeout))
}

/// After a failed request a client pauses this long, so a system that
/// refuses connections is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Runs `spec` against `driver`. `sample` is called once when the measured
/// window opens and once when it closes (CPU counters); both samples are
/// returned with the outcome.
pub async fn run<D: Driver, S>(
    driver: &D,
    spec: &LoadSpec,
    mut sample: impl FnMut() -> S,
) -> Result<(Outcome, S, S), BenchError> {
    if spec.clients == 0 || spec.keys == 0 || !(0.0..=1.0).contains(&spec.read_ratio) {
        return Err(BenchError::Args(format!(
            "clients and keys must be positive and the read ratio in 0..=1 (got {} clients, {} keys, ratio {})",
            spec.clients, spec.keys, spec.read_ratio
        )));
    }
    let keys = Arc::new(KeyChooser::new(spec.dist, spec.keys));
    let value = value_of(spec.value_bytes);
    let start = Instant::now();
    let from = start + spec.warmup;
    let end = from + spec.duration;
    let mut tasks = Vec::with_capacity(spec.clients);
    for c in 0..spec.clients {
        let mut session = driver.session(c);
        let (keys, value, spec) = (keys.clone(), value.clone(), spec.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(mix(spec.seed ^ (c as u64 + 1)));
            let mut out = Outcome::empty(spec.duration);
            while Instant::now() < end {
                let key = keys.next(&mut rng);
                let read = rng.next_f64() < spec.read_ratio;
                let t0 = Instant::now();
                let r = one_op(&mut session, read, key, &value, spec.op_timeout).await;
                let t1 = Instant::now();
                let counted = t1 >= from && t1 <= end;
                match r {
                    Ok(n) if counted => {
                        let us = (t1 - t0).as_micros().max(1) as u64;
                        if read {
                            let _ = out.gets.record(us);
                            match n {
                                0 => out.missing += 1,
                                1 => {}
                                _ => out.siblings += 1,
                            }
                        } else {
                            let _ = out.puts.record(us);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if counted {
                            out.errors += 1;
                            if e == OpError::Timeout {
                                out.timeouts += 1;
                            }
                            out.last_error = Some(e.to_string());
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep_until(from.into()).await;
    let before = sample();
    tokio::time::sleep_until(end.into()).await;
    let after = sample();
    let mut total = Outcome::empty(spec.duration);
    for t in tasks {
        total.merge(t.await.map_err(|e| BenchError::Task(e.to_string()))?);
    }
    Ok((total, before, after))
}

/// Writes every key `0..keys` once with `concurrency` clients (each key
/// tried up to 3 times); fails if any key could not be written.
pub async fn prefill<D: Driver>(
    driver: &D,
    keys: u64,
    value_bytes: usize,
    concurrency: usize,
    op_timeout: Duration,
) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let value = value_of(value_bytes);
    let mut tasks = Vec::new();
    for c in 0..concurrency.max(1) {
        let (mut s, next, value) = (driver.session(c), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let (mut failed, mut last) = (0u64, String::new());
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return (failed, last);
                }
                let mut ok = false;
                for _ in 0..3 {
                    match one_op(&mut s, false, k, &value, op_timeout).await {
                        Ok(_) => {
                            ok = true;
                            break;
                        }
                        Err(e) => {
                            last = e.to_string();
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                if !ok {
                    failed += 1;
                }
            }
        }));
    }
    let (mut failed, mut last) = (0, String::new());
    for task in tasks {
        let (f, l) = task.await.map_err(|e| BenchError::Task(e.to_string()))?;
        failed += f;
        if f > 0 {
            last = l;
        }
    }
    if failed > 0 {
        return Err(BenchError::Prefill { failed, keys, last });
    }
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory "system": a map behind a lock, each request taking
    /// `delay`, or failing / hanging on demand.
    #[derive(Clone)]
    struct Fake {
        map: Arc<Mutex<HashMap<u64, Bytes>>>,
        delay: Duration,
        mode: Mode,
        calls: Arc<AtomicU64>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Ok,
        Fail,
        Hang,
    }

    impl Fake {
        fn new(mode: Mode) -> Fake {
            Fake {
                map: Default::default(),
                delay: Duration::from_millis(1),
                mode,
                calls: Default::default(),
            }
        }
        async fn act(&self) -> Result<(), OpError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.mode {
                Mode::Ok => {
                    tokio::time::sleep(self.delay).await;
                    Ok(())
                }
                Mode::Fail => Err(OpError::Failed("refused".into())),
                Mode::Hang => std::future::pending().await,
            }
        }
    }

    impl Session for Fake {
        async fn get(&mut self, key: u64) -> Result<usize, OpError> {
            self.act().await?;
            Ok(self.map.lock().unwrap().get(&key).map_or(0, |_| 1))
        }
        async fn put(&mut self, key: u64, value: Bytes) -> Result<(), OpError> {
            self.act().await?;
            self.map.lock().unwrap().insert(key, value);
            Ok(())
        }
    }

    impl Driver for Fake {
        type Session = Fake;
        fn session(&self, _client: usize) -> Fake {
            self.clone()
        }
    }

    fn spec(read_ratio: f64) -> LoadSpec {
        LoadSpec {
            clients: 4,
            read_ratio,
            keys: 200,
            dist: KeyDist::Uniform,
            value_bytes: 100,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            op_timeout: Duration::from_millis(200),
            seed: 1,
        }
    }

    #[tokio::test]
    async fn mixed_load_counts_reads_and_writes_in_the_window() {
        let f = Fake::new(Mode::Ok);
        prefill(&f, 200, 100, 8, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(f.map.lock().unwrap().len(), 200);
        assert!(f.map.lock().unwrap().values().all(|v| v.len() == 100));
        let (o, t0, t1) = run(&f, &spec(0.5), Instant::now).await.unwrap();
        // The samples bracket the measured window.
        let w = t1 - t0;
        assert!(w >= Duration::from_millis(390), "window {w:?}");
        assert!(o.ops() > 0 && o.errors == 0 && o.missing == 0);
        let (g, p) = (o.gets.len() as f64, o.puts.len() as f64);
        assert!((g / (g + p) - 0.5).abs() < 0.2, "{g} gets, {p} puts");
        // Each request sleeps >= 1 ms.
        assert!(o.all().value_at_quantile(0.5) >= 1000);
        // Four clients, one request each in flight, >= 1 ms per request.
        assert!(
            o.ops_per_sec() <= 4.0 * 1000.0 * 1.05,
            "{}",
            o.ops_per_sec()
        );
        // Warm-up requests are not counted: fewer than all calls.
        assert!(o.ops() < f.calls.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn pure_mixes_and_missing_keys() {
        let f = Fake::new(Mode::Ok);
        let (o, _, _) = run(&f, &spec(1.0), || ()).await.unwrap();
        assert_eq!(o.puts.len(), 0);
        // Nothing was prefilled: every read misses.
        assert_eq!(o.missing, o.gets.len());
        assert!(o.missing > 0);
        let (o, _, _) = run(&f, &spec(0.0), || ()).await.unwrap();
        assert_eq!(o.gets.len(), 0);
        assert!(!o.puts.is_empty());
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_errors_not_latencies() {
        let f = Fake::new(Mode::Fail);
        let (o, _, _) = run(&f, &spec(0.5), || ()).await.unwrap();
        assert_eq!(o.ops(), 0);
        assert!(o.errors > 0);
        assert_eq!(o.last_error.as_deref(), Some("refused"));
        // Each failure pauses the client: 4 clients x 500 ms / 10 ms at most.
        assert!(f.calls.load(Ordering::Relaxed) <= 4 * 50 + 8);
        let err = prefill(&f, 10, 100, 2, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BenchError::Prefill {
                    failed: 10,
                    keys: 10,
                    ..
                }
            ),
            "{err}"
        );

        let h = Fake::new(Mode::Hang);
        let (o, _, _) = run(&h, &spec(0.5), || ()).await.unwrap();
        assert_eq!(o.ops(), 0);
        assert!(o.timeouts > 0 && o.timeouts == o.errors);
    }

    #[tokio::test]
    async fn bad_specs_are_refused() {
        let f = Fake::new(Mode::Ok);
        let mut s = spec(0.5);
        s.clients = 0;
        assert!(matches!(run(&f, &s, || ()).await, Err(BenchError::Args(_))));
        let s = spec(1.5);
        assert!(matches!(run(&f, &s, || ()).await, Err(BenchError::Args(_))));
    }

    #[test]
    fn keys_are_sixteen_bytes() {
        assert_eq!(key_name(4711), "bench-0000004711");
        assert_eq!(key_name(9_999).len(), 16);
        assert_eq!(value_of(10 * 1024).len(), 10 * 1024);
    }
}
