//! Storage-engine benchmark: the same workloads on ringkv-engine, fjall and
//! RocksDB (peers with `--features peers`), each engine in its own child
//! process so peak memory and I/O counters are its own. Prints ops/s per
//! engine and the ratio ringkv/peer.
//!
//! ```sh
//! cargo run --release -p ringkv-bench --bin engine-bench                      # ringkv only
//! cargo run --release -p ringkv-bench --features peers --bin engine-bench     # vs fjall, RocksDB
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use ringkv_bench::engines::{self, Engine};
use ringkv_bench::workload::{self as w, KEY_BYTES};

#[derive(Parser, Debug, Clone)]
#[command(about = "ringkv-engine vs fjall vs RocksDB, side by side")]
struct Args {
    /// Keys to fill.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Point reads per read workload (default: min(keys, 500000)).
    #[arg(long)]
    reads: Option<u64>,
    /// Operations of the 50/50 read-write mix (default: min(keys, 500000)).
    #[arg(long)]
    mixed: Option<u64>,
    /// Range scans, each of --scan-len entries.
    #[arg(long, default_value_t = 20_000)]
    scans: u64,
    #[arg(long, default_value_t = 100)]
    scan_len: usize,
    /// Writer threads for the synced fill (fsync per acknowledged write).
    #[arg(long, default_value_t = 4)]
    sync_threads: u64,
    /// Writes per thread in the synced fill.
    #[arg(long, default_value_t = 2_500)]
    sync_writes: u64,
    /// Engines to run, comma-separated (default: all compiled in).
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Where the databases go (default: a fresh directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run one engine in this process and print its results.
    #[arg(long, hide = true)]
    child: Option<String>,
}

const ROWS: &[(&str, &str)] = &[
    ("fill", "fill random, no sync (ops/s)"),
    ("read", "random read, present (ops/s)"),
    ("absent", "random read, absent (ops/s)"),
    ("mixed", "50/50 read/write (ops/s)"),
    ("scan", "range scan (entries/s)"),
    ("fillsync", "fill, fsync per write (ops/s)"),
    ("wa", "write amplification (fill)"),
    ("rss", "peak RSS (MiB)"),
    ("disk", "disk size after fill (MiB)"),
];

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn run_child(engine: &str, a: &Args, base: &Path) {
    let n = a.keys;
    let reads = a.reads.unwrap_or(n.min(500_000));
    let mixed = a.mixed.unwrap_or(n.min(500_000));
    let root = base.join(engine);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create bench dir");
    let report = |k: &str, v: f64| println!("R {k} {v}");

    let adir = root.join("nosync");
    let e: Box<dyn Engine> = engines::open(engine, &adir, false);
    let before = w::bytes_written();
    let m = w::fill(&*e, n, a.value_bytes);
    report("fill", m.per_sec());
    e.flush();
    w::quiesce(Duration::from_secs(60));
    let user = n * (KEY_BYTES + a.value_bytes) as u64;
    report("wa", (w::bytes_written() - before) as f64 / user as f64);
    report("disk", dir_size(&adir) as f64 / (1 << 20) as f64);
    report("read", w::read_present(&*e, n, reads, 7).per_sec());
    report("absent", w::read_absent(&*e, n, reads, 11).per_sec());
    report(
        "mixed",
        w::read_write(&*e, n, mixed, a.value_bytes, 13).per_sec(),
    );
    report("scan", w::scan(&*e, n, a.scans, a.scan_len, 17).per_sec());
    drop(e);

    let sdir = root.join("sync");
    let e = engines::open(engine, &sdir, true);
    let m = w::fill_concurrent(&*e, a.sync_threads, a.sync_writes, a.value_bytes);
    report("fillsync", m.per_sec());
    drop(e);
    report("rss", w::peak_rss_kib() as f64 / 1024.0);
    let _ = std::fs::remove_dir_all(&root);
}

fn fmt(key: &str, v: f64) -> String {
    match key {
        "wa" => format!("{v:.2}"),
        "rss" | "disk" => format!("{v:.0}"),
        _ if v >= 1e6 => format!("{:.2}M", v / 1e6),
        _ if v >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn main() {
    let a = Args::parse();
    let base = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringkv-engine-bench-{}", std::process::id()))
    });
    if let Some(engine) = &a.child {
        run_child(engine, &a, &base);
        return;
    }
    let names: Vec<String> = if a.engines.is_empty() {
        engines::names().into_iter().map(String::from).collect()
    } else {
        a.engines.clone()
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "engine-bench: {} keys, {}-byte keys, {}-byte values, {} cores, engines: {}",
        a.keys,
        KEY_BYTES,
        a.value_bytes,
        cores,
        names.join(", ")
    );
    let exe = std::env::current_exe().expect("own path");
    let mut results: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for name in &names {
        eprintln!("running {name} ...");
        let mut cmd = Command::new(&exe);
        // The child gets this run's directory, not a second `--dir`.
        let mut parent_args = Vec::new();
        let mut skip = false;
        for arg in std::env::args_os().skip(1) {
            let s = arg.to_string_lossy();
            if std::mem::take(&mut skip) || s.starts_with("--dir=") {
                continue;
            }
            if s == "--dir" {
                skip = true;
                continue;
            }
            parent_args.push(arg);
        }
        cmd.args(parent_args)
            .arg("--child")
            .arg(name)
            .arg("--dir")
            .arg(&base);
        let out = cmd.output().expect("spawn child");
        if !out.status.success() {
            eprintln!("{name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        let r = results.entry(name.clone()).or_default();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut p = line.split_whitespace();
            if p.next() == Some("R")
                && let (Some(k), Some(v)) = (p.next(), p.next().and_then(|v| v.parse().ok()))
            {
                r.insert(k.to_string(), v);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);

    // Table: one column per engine, then ringkv/peer ratios.
    let peers: Vec<&String> = names.iter().filter(|n| *n != "ringkv").collect();
    let mut header = format!("| {:<32} |", "workload");
    for n in &names {
        header += &format!(" {n:>9} |");
    }
    for p in &peers {
        header += &format!(" ringkv/{p} |");
    }
    println!("{header}");
    println!(
        "|{}|",
        header[1..header.len() - 1]
            .split('|')
            .map(|c| "-".repeat(c.len()))
            .collect::<Vec<_>>()
            .join("|")
    );
    for (key, label) in ROWS {
        let mut row = format!("| {label:<32} |");
        for n in &names {
            let v = results
                .get(n)
                .and_then(|r| r.get(*key))
                .copied()
                .unwrap_or(f64::NAN);
            row += &format!(" {:>9} |", fmt(key, v));
        }
        for p in &peers {
            let mine = results.get("ringkv").and_then(|r| r.get(*key)).copied();
            let theirs = results.get(*p).and_then(|r| r.get(*key)).copied();
            let cell = match (mine, theirs) {
                (Some(m), Some(t)) if t > 0.0 => format!("{:.2}x", m / t),
                _ => "-".to_string(),
            };
            row += &format!(" {:>w$} |", cell, w = 7 + p.len());
        }
        println!("{row}");
    }
    if !peers.is_empty() {
        println!("(for write amplification, RSS and disk size a ratio below 1 is better)");
    }
}
