//! Peer benchmark: a 3-node ringkv, a 3-member etcd and a single Redis,
//! started one at a time on loopback and driven by the same closed-loop load
//! generator. Writes a Markdown report, the raw rows as JSON and an SVG plot
//! of the client sweep under bench/results/, and prints the report.
//!
//! ```sh
//! bench/peers.sh                     # builds, installs etcd/redis if missing, runs everything
//! bench/peers.sh --quick             # same matrix, short points
//! bench/peers.sh --systems ringkv,etcd --workloads write-only,95-5
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use ringkv_bench::drivers::{etcd::EtcdDriver, redis::RedisDriver, ringkv::RingkvDriver};
use ringkv_bench::load::{self, Driver, LoadSpec};
use ringkv_bench::matrix::{MatrixSpec, Point, Workload, estimate};
use ringkv_bench::report::{self, Row};
use ringkv_bench::servers::which;
use ringkv_bench::systems::{self, System, SystemKind};
use ringkv_bench::zipf::KeyDist;
use ringkv_bench::{BenchError, cpu, plot};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "peer-bench",
    about = "ringkv (3 nodes) vs etcd (3 members) vs Redis (1 node), one system at a time, same load"
)]
struct Args {
    /// Systems to run, in this order.
    #[arg(long, value_delimiter = ',', default_values_t = SystemKind::ALL.to_vec())]
    systems: Vec<SystemKind>,
    /// Workloads: write-only, 50-50, 95-5, read-only.
    #[arg(long, value_delimiter = ',', default_values_t = Workload::ALL.to_vec())]
    workloads: Vec<Workload>,
    /// Key distributions: uniform, zipfian (YCSB, theta 0.99, ranks scrambled).
    #[arg(long, value_delimiter = ',', default_values_t = KeyDist::ALL.to_vec())]
    dists: Vec<KeyDist>,
    /// Value sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 10240])]
    values: Vec<usize>,
    /// Concurrent clients of the table's points.
    #[arg(long, value_delimiter = ',', default_values_t = vec![32, 128])]
    clients: Vec<usize>,
    /// Client counts of the sweep (the plot).
    #[arg(long, value_delimiter = ',', default_values_t = vec![8, 16, 32, 64, 128, 256])]
    sweep: Vec<usize>,
    /// Skip the sweep.
    #[arg(long)]
    no_sweep: bool,
    /// Workload of the sweep (uniform keys, smallest value).
    #[arg(long, default_value_t = Workload::WriteOnly)]
    sweep_workload: Workload,
    /// Every workload at every distribution and value size (longer than 15 min).
    #[arg(long)]
    full: bool,
    /// Short points (1 s warm-up, 2 s measured) to check the setup.
    #[arg(long)]
    quick: bool,
    /// Measured time per point.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up per point (not measured).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keys, all written before the first point of each value size.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Connections the load generator opens to each server.
    #[arg(long, default_value_t = 4)]
    connections_per_server: usize,
    /// A request slower than this counts as an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    op_timeout: Duration,
    /// ringkv's WAL sync mode.
    #[arg(long, default_value = "always")]
    ringkv_sync: String,
    /// The ringkv-node binary (default: next to this executable).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Where the systems' data directories go (default: the system temp dir).
    /// fsync cost depends on this disk.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the data directories and server logs after the run.
    #[arg(long)]
    keep_data: bool,
    /// Where the report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// File name stem of the report (default: peers, or peers-quick with --quick).
    #[arg(long)]
    name: Option<String>,
}

fn shell(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Date, commit and machine, for the report's header.
fn environment() -> String {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let date = shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"], here).unwrap_or_default();
    let rev = shell("git", &["rev-parse", "--short", "HEAD"], here).unwrap_or("unknown".into());
    let dirty = shell(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        here,
    )
    // Results of earlier runs do not make the code under test "changed".
    .is_some_and(|s| s.lines().any(|l| !l.contains("bench/results/")));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kib| (kib + (1 << 19)) >> 20);
    let kernel = shell("uname", &["-r"], here).unwrap_or_default();
    format!(
        "{date}, ringkv commit {rev}{}; machine: {cores} cores ({model}), {mem_gib} GiB RAM, Linux {kernel}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

struct Runner {
    a: Args,
    points: Vec<Point>,
    hz: u64,
}

impl Runner {
    fn spec(&self, p: &Point, seed: u64) -> LoadSpec {
        LoadSpec {
            clients: p.clients,
            read_ratio: p.workload.read_ratio(),
            keys: self.a.keys,
            dist: p.dist,
            value_bytes: p.value_bytes,
            warmup: self.a.warmup,
            duration: self.a.duration,
            op_timeout: self.a.op_timeout,
            seed,
        }
    }

    /// Every point on one started system; rows as they complete.
    async fn points<D: Driver>(
        &self,
        sys: &mut System,
        driver: &D,
        rows: &mut Vec<Row>,
    ) -> Result<(), BenchError> {
        let me = std::process::id();
        let pids = sys.servers.pids();
        let mut filled: Option<usize> = None;
        for (i, p) in self.points.iter().enumerate() {
            if filled != Some(p.value_bytes) {
                let t = load::prefill(driver, self.a.keys, p.value_bytes, 64, self.a.op_timeout)
                    .await?;
                eprintln!(
                    "  prefilled {} keys of {} B in {:.1?}",
                    self.a.keys, p.value_bytes, t
                );
                filled = Some(p.value_bytes);
            }
            sys.servers.check()?;
            let sample = || (cpu::total_ticks(&pids).ok(), cpu::process_ticks(me).ok());
            let (o, before, after) = load::run(driver, &self.spec(p, i as u64 + 1), sample).await?;
            // A server that died mid-point makes the point meaningless.
            sys.servers.check()?;
            let ops = o.ops();
            let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => cpu::us_per_op(b.saturating_sub(a), self.hz, ops),
                _ => None,
            };
            let all = o.all();
            let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q);
            let row = Row {
                system: sys.kind,
                point: *p,
                ops,
                ops_per_sec: o.ops_per_sec(),
                p50_us: q(&all, 0.5),
                p99_us: q(&all, 0.99),
                p999_us: q(&all, 0.999),
                put_p50_us: (!o.puts.is_empty()).then(|| q(&o.puts, 0.5)),
                put_p99_us: (!o.puts.is_empty()).then(|| q(&o.puts, 0.99)),
                server_cpu_us_per_op: delta(before.0, after.0),
                client_cpu_us_per_op: delta(before.1, after.1),
                errors: o.errors,
                missing: o.missing,
                siblings: o.siblings,
                last_error: o.last_error.clone(),
            };
            eprintln!(
                "  [{}/{}] {p}: {} ops/s, p50 {} p99 {} p999 {} ms, server CPU {} µs/op, client CPU {} µs/op{}{}",
                i + 1,
                self.points.len(),
                report::fmt_ops(row.ops_per_sec),
                report::fmt_ms(row.p50_us),
                report::fmt_ms(row.p99_us),
                report::fmt_ms(row.p999_us),
                report::fmt_cpu(row.server_cpu_us_per_op),
                report::fmt_cpu(row.client_cpu_us_per_op),
                if o.errors > 0 {
                    format!(
                        ", {} errors (last: {})",
                        o.errors,
                        o.last_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                },
                if o.missing + o.siblings > 0 {
                    format!(
                        ", {} reads found nothing, {} saw siblings",
                        o.missing, o.siblings
                    )
                } else {
                    String::new()
                },
            );
            rows.push(row);
        }
        Ok(())
    }

    async fn system(
        &self,
        kind: SystemKind,
        bins: &Bins,
        root: &Path,
        rows: &mut Vec<Row>,
    ) -> Result<String, BenchError> {
        let dir = systems::data_dir(root, kind);
        let per = self.a.connections_per_server;
        let mut sys = match kind {
            SystemKind::Ringkv => {
                systems::start_ringkv(&bins.node, &dir, &self.a.ringkv_sync).await?
            }
            SystemKind::Etcd => {
                systems::start_etcd(bins.etcd.as_deref().unwrap_or(Path::new("etcd")), &dir).await?
            }
            SystemKind::Redis => {
                systems::start_redis(
                    bins.redis.as_deref().unwrap_or(Path::new("redis-server")),
                    &dir,
                )
                .await?
            }
        };
        eprintln!("  {}", sys.description);
        let r = match kind {
            SystemKind::Ringkv => {
                let d = RingkvDriver::connect(&sys.endpoints, per).await?;
                self.points(&mut sys, &d, rows).await
            }
            SystemKind::Etcd => {
                let d = EtcdDriver::connect(&sys.endpoints, per).await?;
                self.points(&mut sys, &d, rows).await
            }
            SystemKind::Redis => {
                let d = RedisDriver::connect(&sys.endpoints, per).await?;
                self.points(&mut sys, &d, rows).await
            }
        };
        let killed = sys.servers.stop(Duration::from_secs(15));
        if !killed.is_empty() {
            eprintln!(
                "  {kind}: {} did not stop in 15 s and were killed",
                killed.join(", ")
            );
        }
        r.map(|()| sys.description.clone())
    }
}

struct Bins {
    node: PathBuf,
    etcd: Option<PathBuf>,
    redis: Option<PathBuf>,
}

fn find_bins(a: &Args) -> Result<Bins, BenchError> {
    let node = match &a.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(BenchError::io("locating peer-bench"))?
            .with_file_name("ringkv-node"),
    };
    let need = |k: SystemKind, bin: &str, pkg: &str| -> Result<Option<PathBuf>, BenchError> {
        if !a.systems.contains(&k) {
            return Ok(None);
        }
        which(bin).map(Some).ok_or_else(|| BenchError::Start {
            system: k.name().into(),
            reason: format!(
                "`{bin}` is not on PATH: install Debian's {pkg} (bench/peers.sh does it), or leave {k} out with --systems"
            ),
        })
    };
    Ok(Bins {
        node,
        etcd: need(SystemKind::Etcd, "etcd", "etcd-server")?,
        redis: need(SystemKind::Redis, "redis-server", "redis-server")?,
    })
}

fn markdown(
    a: &Args,
    env: &str,
    systems: &[(SystemKind, String)],
    rows: &[Row],
    svg: Option<&str>,
) -> String {
    let mut m = String::from("# ringkv vs etcd vs Redis (peer benchmark)\n\n");
    m += &format!("Run {env}.\n\n");
    m += &format!(
        "Command: `peer-bench {}`\n\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    m += "Systems, each started alone on loopback with its own data directory and stopped before the next:\n\n";
    for (k, d) in systems {
        m += &format!("- **{k}**: {d}\n");
    }
    m += &format!(
        "\nLoad: one closed-loop generator for all systems (same process, same code, a driver per system): C clients, \
         each with one request in flight, over {} connections per server (HTTP/2 for ringkv and etcd, multiplexed RESP \
         for Redis); {} keys of 16 bytes, all written before the first point of each value size; values half random, \
         half zeros; {:?} warm-up then {:?} measured per point. ringkv writes carry the newest causal context seen for \
         the key; etcd and Redis writes are plain puts/SETs. Latency: HdrHistogram, µs, every successful request \
         completed in the window (reads and writes together; `write p99` is writes alone); failed requests are counted \
         as errors, not latencies.\n\n",
        a.connections_per_server, a.keys, a.warmup, a.duration
    );
    m += "CPU: **server CPU µs/op** is the user+system time of the system's **server processes only** (every ringkv \
          node, every etcd member, redis-server; all threads, plus reaped children such as an AOF rewrite) from \
          `/proc/<pid>/stat` over the measured window, divided by the operations completed in it. **client CPU µs/op** \
          is the load generator's own. The generator shares the machine with the servers, and other work on the \
          machine adds noise to absolute numbers; compare ratios from the same run.\n\n";
    m += "## Throughput and ringkv's ratio to each peer\n\n";
    m += &report::summary_table(rows);
    m += "\n## Latency and CPU per operation\n\n";
    m += &report::detail_table(rows);
    if let Some(svg) = svg {
        m += &format!(
            "\n## Client sweep\n\n{} with uniform keys, clients {}: throughput vs p99 latency (log-log), each point labelled with its client count.\n\n![throughput vs p99]({svg})\n",
            a.sweep_workload.label(),
            a.sweep
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let odd: Vec<&Row> = rows
        .iter()
        .filter(|r| r.errors > 0 || r.missing > 0 || r.siblings > 0)
        .collect();
    if !odd.is_empty() {
        m += "\n## Errors, misses and siblings\n\n";
        for r in odd {
            m += &format!(
                "- {} {}: errors: {}{}; reads that found nothing: {}; reads that saw siblings: {}\n",
                r.system,
                r.point,
                r.errors,
                r.last_error
                    .as_ref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default(),
                r.missing,
                r.siblings
            );
        }
    }
    m
}

async fn run(mut a: Args) -> Result<bool, BenchError> {
    if a.quick {
        a.warmup = Duration::from_secs(1);
        a.duration = Duration::from_secs(2);
    }
    if a.duration.is_zero() || a.keys < 2 || a.connections_per_server == 0 {
        return Err(BenchError::Args(
            "--duration must be positive, --keys at least 2, --connections-per-server at least 1"
                .into(),
        ));
    }
    a.systems.dedup();
    let spec = MatrixSpec {
        workloads: a.workloads.clone(),
        dists: a.dists.clone(),
        values: a.values.clone(),
        clients: a.clients.clone(),
        sweep: if a.no_sweep {
            Vec::new()
        } else {
            a.sweep.clone()
        },
        sweep_workload: a.sweep_workload,
        full: a.full,
    };
    let points = spec.points();
    if points.is_empty() {
        return Err(BenchError::Args(
            "the selection leaves no point to run".into(),
        ));
    }
    let bins = find_bins(&a)?;
    let per_system = estimate(&points, a.warmup, a.duration);
    eprintln!(
        "peer-bench: {} points x {} systems ({}), about {:.0?} per system, {:.0?} in all",
        points.len(),
        a.systems.len(),
        a.systems
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        per_system,
        per_system * a.systems.len() as u32
    );
    let base = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)
        .map_err(BenchError::io(format!("creating {}", base.display())))?;
    let root = tempfile::Builder::new()
        .prefix("ringkv-peer-bench-")
        .tempdir_in(&base)
        .map_err(BenchError::io(format!(
            "creating a directory in {}",
            base.display()
        )))?;
    std::fs::create_dir_all(&a.out)
        .map_err(BenchError::io(format!("creating {}", a.out.display())))?;
    let stem = a.name.clone().unwrap_or_else(|| {
        if a.quick {
            "peers-quick".into()
        } else {
            "peers".into()
        }
    });
    let env = environment();
    let runner = Runner {
        a: a.clone(),
        points,
        hz: cpu::ticks_per_second(),
    };
    let mut rows = Vec::new();
    let mut described = Vec::new();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for &kind in &a.systems {
        eprintln!("== {kind}");
        let t = std::time::Instant::now();
        match runner.system(kind, &bins, root.path(), &mut rows).await {
            Ok(d) => described.push((kind, d)),
            Err(e) => {
                eprintln!("  {kind} failed: {e}");
                described.push((kind, format!("**failed**: {e}")));
                failures.push(kind);
            }
        }
        if !a.keep_data {
            let _ = std::fs::remove_dir_all(systems::data_dir(root.path(), kind));
        }
        // Write back what this system dirtied so the next one's fsyncs do
        // not pay for it.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        eprintln!("  {kind} done in {:.0?}", t.elapsed());
    }
    let svg_name = format!("{stem}-sweep.svg");
    let curves = report::sweep_curves(&rows, &spec.sweep_points());
    let svg = if curves.is_empty() {
        None
    } else {
        let title = format!(
            "{}, uniform keys, {} B values: throughput vs p99 as clients grow",
            a.sweep_workload.label(),
            a.values.iter().min().copied().unwrap_or(100)
        );
        match plot::sweep_svg(&a.out.join(&svg_name), &title, &curves) {
            Ok(()) => Some(svg_name.as_str()),
            Err(e) => {
                eprintln!("plot: {e}");
                None
            }
        }
    };
    let md = markdown(&a, &env, &described, &rows, svg);
    let md_path = a.out.join(format!("{stem}.md"));
    std::fs::write(&md_path, &md)
        .map_err(BenchError::io(format!("writing {}", md_path.display())))?;
    let json_path = a.out.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(&rows).unwrap_or_default();
    std::fs::write(&json_path, json)
        .map_err(BenchError::io(format!("writing {}", json_path.display())))?;
    println!("{md}");
    eprintln!(
        "peer-bench: done in {:.0?}; wrote {}, {}{}",
        started.elapsed(),
        md_path.display(),
        json_path.display(),
        svg.map(|s| format!(", {}", a.out.join(s).display()))
            .unwrap_or_default()
    );
    if a.keep_data {
        let kept = root.keep();
        eprintln!(
            "peer-bench: data and server logs kept in {}",
            kept.display()
        );
    }
    Ok(failures.is_empty())
}

// The load generator shares the machine with the servers: a lean allocator
// leaves them more CPU (the same for every system).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peer-bench: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping the run's future on a signal stops every server it started.
    let r = tokio::select! {
        r = run(a) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
        _ = term.recv() => Err(BenchError::Interrupted),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("peer-bench: some systems failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("peer-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
