//! `ringkv bench`: a closed-loop load generator against a running cluster.
//! C clients each issue one request at a time, spread over a few HTTP/2
//! connections per node; reads and writes mix at --read-ratio over uniform
//! or zipfian keys. Writes carry the newest context any client has seen for
//! the key (read-modify-write), so siblings do not pile up as they would with
//! blind writes. Latency goes into HdrHistograms (µs).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringkv_client::{Client, Context, PutOptions};
use ringkv_node::ring::SplitMix64;
use tokio::sync::Mutex;

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Client gRPC addresses to spread clients over (comma-separated); default: --addr.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// HTTP/2 connections per target.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured duration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Fraction of requests that are reads (0..=1).
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Key space size.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// uniform or zipfian (theta 0.99, hot keys scattered over the ring).
    #[arg(long, default_value = "uniform")]
    dist: String,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Read / write consistency (empty = cluster default).
    #[arg(long, default_value = "")]
    r: String,
    #[arg(long, default_value = "")]
    w: String,
    /// Write every key once before measuring.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefill: bool,
}

/// YCSB's Zipfian generator (Gray et al.), ranks scrambled by a hash.
struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }
    fn next(&self, rng: &mut SplitMix64) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        // Scatter: hot ranks must not sit next to each other on the ring.
        let mut h = SplitMix64::new(rank.min(self.n - 1));
        h.next_u64() % self.n
    }
}

enum Keys {
    Uniform(u64),
    Zipf(Zipf),
}

impl Keys {
    fn next(&self, rng: &mut SplitMix64) -> u64 {
        match self {
            Keys::Uniform(n) => rng.below(*n),
            Keys::Zipf(z) => z.next(rng),
        }
    }
}

fn key_name(i: u64) -> String {
    format!("bench-{i:010}")
}

struct Stats {
    get: Histogram<u64>,
    put: Histogram<u64>,
    errors: u64,
    conflicts: u64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            get: Histogram::new(3).expect("histogram"),
            put: Histogram::new(3).expect("histogram"),
            errors: 0,
            conflicts: 0,
        }
    }
}

/// Newest context seen per key, sharded to keep lock contention low.
struct Contexts(Vec<Mutex<HashMap<u64, Context>>>);

impl Contexts {
    fn shard(&self, k: u64) -> &Mutex<HashMap<u64, Context>> {
        &self.0[(k % self.0.len() as u64) as usize]
    }
}

pub async fn run(
    a: BenchArgs,
    opts: ringkv_client::ConnectOptions,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    if !(0.0..=1.0).contains(&a.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    if a.keys == 0 || a.clients == 0 {
        return Err("--keys and --clients must be positive".into());
    }
    let keys = Arc::new(match a.dist.as_str() {
        "uniform" => Keys::Uniform(a.keys),
        "zipfian" | "zipf" => Keys::Zipf(Zipf::new(a.keys, 0.99)),
        other => return Err(format!("unknown --dist {other:?}: use uniform or zipfian").into()),
    });
    let targets = if a.targets.is_empty() {
        vec![std::env::var("RINGKV_ADDR").unwrap_or_else(|_| "http://127.0.0.1:7070".into())]
    } else {
        a.targets.clone()
    };
    let mut conns = Vec::new();
    for t in &targets {
        for _ in 0..a.connections.max(1) {
            // Token-aware: each request goes straight to a replica of its key.
            conns.push(Client::connect_cluster_with(&[t.as_str()], &opts).await?);
        }
    }
    let value = bytes::Bytes::from(vec![b'x'; a.value_size]);
    let ctxs = Arc::new(Contexts(
        (0..256).map(|_| Mutex::new(HashMap::new())).collect(),
    ));

    if a.prefill {
        let t = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..a.clients.min(64) {
            let (mut client, next, value, ctxs, w) = (
                conns[c % conns.len()].clone(),
                next.clone(),
                value.clone(),
                ctxs.clone(),
                a.w.clone(),
            );
            let total = a.keys;
            tasks.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= total {
                        return;
                    }
                    if let Ok(r) = client
                        .put_with(
                            key_name(k),
                            value.clone(),
                            PutOptions::default().w(w.clone()),
                        )
                        .await
                    {
                        ctxs.shard(k).lock().await.insert(k, r.context);
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        eprintln!("prefilled {} keys in {:.1?}", a.keys, t.elapsed());
    }

    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut client = conns[c % conns.len()].clone();
        let (keys, value, ctxs, args) = (keys.clone(), value.clone(), ctxs.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                SplitMix64::new((0xbe4c_0000 + c as u64) ^ SplitMix64::from_entropy().next_u64());
            let mut st = Stats::new();
            loop {
                let now = Instant::now();
                if now >= end {
                    return st;
                }
                let k = keys.next(&mut rng);
                let read = rng.next_f64() < args.read_ratio;
                let t = Instant::now();
                let ok = if read {
                    match client.get_with(key_name(k), &args.r).await {
                        Ok(g) => {
                            if g.has_conflict() {
                                st.conflicts += 1;
                            }
                            ctxs.shard(k).lock().await.insert(k, g.context);
                            true
                        }
                        Err(_) => false,
                    }
                } else {
                    let ctx = ctxs
                        .shard(k)
                        .lock()
                        .await
                        .get(&k)
                        .cloned()
                        .unwrap_or_default();
                    let opts = PutOptions {
                        context: ctx,
                        ttl: None,
                        w: args.w.clone(),
                    };
                    match client.put_with(key_name(k), value.clone(), opts).await {
                        Ok(r) => {
                            ctxs.shard(k).lock().await.insert(k, r.context);
                            true
                        }
                        Err(_) => false,
                    }
                };
                let us = t.elapsed().as_micros() as u64;
                if t >= measure_from {
                    if !ok {
                        st.errors += 1;
                    } else if read {
                        let _ = st.get.record(us.max(1));
                    } else {
                        let _ = st.put.record(us.max(1));
                    }
                }
            }
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        let s = t.await?;
        total.get.add(&s.get)?;
        total.put.add(&s.put)?;
        total.errors += s.errors;
        total.conflicts += s.conflicts;
    }
    let secs = a.duration.as_secs_f64();
    let ops = total.get.len() + total.put.len();
    let mut all = total.get.clone();
    all.add(&total.put)?;
    println!(
        "clients={} read_ratio={} dist={} keys={} value={}B duration={:?} targets={}",
        a.clients,
        a.read_ratio,
        a.dist,
        a.keys,
        a.value_size,
        a.duration,
        targets.len()
    );
    println!(
        "throughput: {:.0} ops/s ({ops} ops, {} errors, {} reads saw siblings)",
        ops as f64 / secs,
        total.errors,
        total.conflicts
    );
    println!(
        "{:<6} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "op", "count", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    for (name, h) in [("get", &total.get), ("put", &total.put), ("all", &all)] {
        if h.is_empty() {
            continue;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<6} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            name,
            h.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(if total.errors > 0 && ops == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
