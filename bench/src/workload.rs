//! Keys, values and the timed workloads.

use std::time::{Duration, Instant};

use crate::engines::Engine;

pub const KEY_BYTES: usize = 16;

/// A 64-bit mixer (splitmix64): scatters sequential indexes over the key space.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Key number `i`: 16 bytes, random order across `i`.
pub fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A value of `len` bytes, half random and half zeros (compressible about
/// 2:1, like db_bench's default).
pub fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = mix(i ^ 0xA5A5);
    while v.len() < len / 2 {
        x = mix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len / 2);
    v.resize(len, 0);
    v
}

/// Small deterministic generator for operation choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in [0, 1): the top 53 bits as a fraction.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
}

impl Measured {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn timed(ops: u64, f: impl FnOnce()) -> Measured {
    let t = Instant::now();
    f();
    Measured {
        ops,
        elapsed: t.elapsed(),
    }
}

/// Insert keys `0..n` (random order in key space).
pub fn fill(e: &dyn Engine, n: u64, value_len: usize) -> Measured {
    timed(n, || {
        for i in 0..n {
            e.put(&key(i), &value(i, value_len));
        }
    })
}

/// `threads` writers, `per_thread` writes each, on disjoint keys.
pub fn fill_concurrent(
    e: &dyn Engine,
    threads: u64,
    per_thread: u64,
    value_len: usize,
) -> Measured {
    timed(threads * per_thread, || {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    for j in 0..per_thread {
                        let i = t * per_thread + j;
                        e.put(&key(i), &value(i, value_len));
                    }
                });
            }
        });
    })
}

/// Random point reads of keys `0..n` (all present). Panics if any is missing,
/// so a broken engine cannot look fast.
pub fn read_present(e: &dyn Engine, n: u64, reads: u64, seed: u64) -> Measured {
    let mut r = Rng::new(seed);
    timed(reads, || {
        for _ in 0..reads {
            let i = r.below(n);
            assert!(e.get(&key(i)), "present key {i} not found");
        }
    })
}

/// Random point reads of keys that were never written.
pub fn read_absent(e: &dyn Engine, n: u64, reads: u64, seed: u64) -> Measured {
    let mut r = Rng::new(seed);
    timed(reads, || {
        for _ in 0..reads {
            let i = n + r.below(n);
            assert!(!e.get(&key(i)), "absent key {i} found");
        }
    })
}

/// 50% reads, 50% overwrites of random present keys.
pub fn read_write(e: &dyn Engine, n: u64, ops: u64, value_len: usize, seed: u64) -> Measured {
    let mut r = Rng::new(seed);
    timed(ops, || {
        for _ in 0..ops {
            let x = r.next_u64();
            let i = (x >> 1) % n;
            if x & 1 == 0 {
                assert!(e.get(&key(i)));
            } else {
                e.put(&key(i), &value(i ^ x, value_len));
            }
        }
    })
}

/// `scans` range scans of `len` entries from random start keys; counts entries.
pub fn scan(e: &dyn Engine, n: u64, scans: u64, len: usize, seed: u64) -> Measured {
    let mut r = Rng::new(seed);
    let mut entries = 0;
    let t = Instant::now();
    for _ in 0..scans {
        entries += e.scan(&key(r.below(n)), len) as u64;
    }
    Measured {
        ops: entries,
        elapsed: t.elapsed(),
    }
}

/// Bytes this process has passed to write(2)/pwrite(2) so far (`wchar` in
/// /proc/self/io): what an engine writes, whether or not it fsyncs.
pub fn bytes_written() -> u64 {
    proc_field("/proc/self/io", "wchar:").unwrap_or(0)
}

/// Peak resident memory of this process, in KiB.
pub fn peak_rss_kib() -> u64 {
    proc_field("/proc/self/status", "VmHWM:").unwrap_or(0)
}

fn proc_field(path: &str, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Wait until background work stops writing (at most `max`).
pub fn quiesce(max: Duration) {
    let t = Instant::now();
    let mut last = bytes_written();
    while t.elapsed() < max {
        std::thread::sleep(Duration::from_millis(500));
        let now = bytes_written();
        if now == last {
            return;
        }
        last = now;
    }
}
