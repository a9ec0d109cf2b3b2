//! Crash test. A child process (this same test binary, re-executed with
//! `RINGKV_CRASH_CHILD` set) writes with `SyncPolicy::Always` from several
//! threads and prints every write it is about to make (`try`) and every write
//! the engine acknowledged (`ack`); half the threads use the blocking
//! `write`, half `write_async`. The parent SIGKILLs it at a random moment
//! — tiny memtables and tables mean flushes and compactions are always in
//! flight — reopens the database and checks, for every key ever written:
//!
//! - every acknowledged write is there (or a later attempted write replaced it);
//! - nothing older than the last acknowledged write reappears;
//! - the database opens cleanly and scans agree with point reads.
//!
//! Each thread writes its own keys one at a time, so per key there is at most
//! one write in flight at the kill: the allowed outcomes are exactly "the last
//! acknowledged state" or "the in-flight write applied".
//!
//! `harness = false`: this file is its own `main`, so the child mode needs no
//! dummy test. Rounds: `RINGKV_CRASH_ROUNDS` (default 24).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringkv_engine::{Db, Options, SyncPolicy, WriteBatch};

const CHILD_ENV: &str = "RINGKV_CRASH_CHILD";
const THREADS: u64 = 4;
const KEYS_PER_THREAD: u64 = 40;

fn opts() -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes: 16 << 10,
        max_immutable_memtables: 1,
        block_bytes: 512,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 8,
        l1_target_bytes: 32 << 10,
        level_multiplier: 2,
        target_file_bytes: 8 << 10,
        ..Options::default()
    }
}

fn key(t: u64, i: u64) -> Vec<u8> {
    format!("t{t}-k{i:03}").into_bytes()
}

/// Value: `<version>:` then padding, so values are big enough to flush often.
fn value(version: u64) -> Vec<u8> {
    let mut v = format!("{version}:").into_bytes();
    v.resize(v.len() + 150 + (version % 200) as usize, b'x');
    v
}

fn version_of(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    s.split(':').next()?.parse().ok()
}

/// Runs a future to completion on this thread (the engine needs no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn child(dir: &str, base: u64) {
    let db = std::sync::Arc::new(Db::open(dir, opts()).expect("child open"));
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    {
        let mut o = out.lock().unwrap();
        writeln!(o, "ready").unwrap();
        o.flush().unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut x: u64 = base ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut n = 0u64;
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    n += 1;
                    let version = base + n * THREADS + t;
                    let i = x % KEYS_PER_THREAD;
                    let k = key(t, i);
                    // 1 in 8 writes is a delete; 1 in 8 is a two-key batch.
                    let op = match x % 8 {
                        0 => "del",
                        1 => "batch",
                        _ => "put",
                    };
                    let j = (i + 1) % KEYS_PER_THREAD;
                    {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "try {t} {i} {version} {op} {j}").unwrap();
                        o.flush().unwrap();
                    }
                    let mut b = WriteBatch::new();
                    match op {
                        "del" => b.delete(&k),
                        "batch" => b.put(&k, &value(version)).put(&key(t, j), &value(version)),
                        _ => b.put(&k, &value(version)),
                    };
                    // Half the threads write through the async path: both
                    // share the commit thread and must keep the same promise.
                    let res = if t % 2 == 0 {
                        db.write(b)
                    } else {
                        block_on(db.write_async(b))
                    };
                    res.expect("write");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {t} {i} {version} {op} {j}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// State of one key as the model sees it: `Some(version)` = a put of that
/// version, `None` = absent.
type State = Option<u64>;

struct Pending {
    keys: Vec<(u64, u64)>,
    state: State,
}

fn parse(line: &str) -> Option<(&str, u64, u64, u64, &str, u64)> {
    let mut p = line.split_whitespace();
    let kind = p.next()?;
    let t = p.next()?.parse().ok()?;
    let i = p.next()?.parse().ok()?;
    let v = p.next()?.parse().ok()?;
    let op = p.next()?;
    let j = p.next()?.parse().ok()?;
    Some((kind, t, i, v, op, j))
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let base: u64 = std::env::var("RINGKV_CRASH_BASE").unwrap().parse().unwrap();
        child(&dir, base);
        return;
    }
    let rounds: u64 = std::env::var("RINGKV_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut model: HashMap<(u64, u64), State> = HashMap::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test: {rounds} rounds, seed {seed}");
    let mut total_acks = 0u64;
    for round in 0..rounds {
        let base = (round + 1) * 1_000_000_000;
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .env("RINGKV_CRASH_BASE", base.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(
            first.as_deref(),
            Ok("ready"),
            "child failed to open the database in round {round}"
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(20 + seed % 400);
        let started = Instant::now();
        while started.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "child should have been killed");
        reader.join().unwrap();
        // Replay the child's log: acknowledged writes define the state; a
        // try without an ack is in flight.
        let mut in_flight: HashMap<u64, Pending> = HashMap::new();
        let mut acks = 0;
        for line in rx.try_iter() {
            let Some((kind, t, i, v, op, j)) = parse(&line) else {
                continue; // a line cut by the kill
            };
            let keys = if op == "batch" {
                vec![(t, i), (t, j)]
            } else {
                vec![(t, i)]
            };
            let state = if op == "del" { None } else { Some(v) };
            match kind {
                "try" => {
                    in_flight.insert(t, Pending { keys, state });
                }
                "ack" => {
                    acks += 1;
                    in_flight.remove(&t);
                    for k in keys {
                        model.insert(k, state);
                    }
                }
                _ => {}
            }
        }
        total_acks += acks;
        // Reopen and check.
        let db = Db::open(dir.path(), opts()).unwrap_or_else(|e| {
            panic!("round {round}: database does not reopen after SIGKILL: {e}")
        });
        let scanned: HashMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().map(|r| r.unwrap()).collect();
        for t in 0..THREADS {
            for i in 0..KEYS_PER_THREAD {
                let k = key(t, i);
                let got = db.get(&k).unwrap();
                assert_eq!(
                    got.as_ref(),
                    scanned.get(&k),
                    "scan and get disagree on {k:?}"
                );
                let got_state = got
                    .as_deref()
                    .map(|v| version_of(v).expect("value we wrote"));
                if let Some(v) = &got {
                    assert_eq!(
                        v,
                        &value(got_state.unwrap()),
                        "value bytes intact for {k:?}"
                    );
                }
                let acked = model.get(&(t, i)).copied().flatten();
                let flight = in_flight
                    .get(&t)
                    .filter(|p| p.keys.contains(&(t, i)))
                    .map(|p| p.state);
                let ok = got_state == acked || flight == Some(got_state);
                assert!(
                    ok,
                    "round {round}, key {}: found {got_state:?}, last acknowledged {acked:?}, in flight {flight:?}",
                    String::from_utf8_lossy(&k)
                );
                model.insert((t, i), got_state);
            }
        }
        // A batch in flight must be all-or-nothing.
        for p in in_flight.values().filter(|p| p.keys.len() == 2) {
            let a = model.get(&p.keys[0]).copied().flatten();
            let b = model.get(&p.keys[1]).copied().flatten();
            assert!(
                (a == p.state) == (b == p.state),
                "round {round}: half of an in-flight batch survived: {a:?} / {b:?} vs {:?}",
                p.state
            );
        }
        drop(db);
        println!("round {round}: killed after {delay:?}, {acks} acknowledged writes verified");
    }
    assert!(
        total_acks > rounds * 5,
        "too few writes acknowledged ({total_acks}) for the test to mean anything"
    );
    println!("crash test passed: {total_acks} acknowledged writes over {rounds} kills");
}
