//! Disk full, on a real filesystem: each scenario mounts a small tmpfs (so
//! it needs root, or it says why and skips) and fills it with the
//! database's own writes.
//!
//! 1. In process: writes are refused with `Error::NoSpace` (nothing of a
//!    refused write is applied) while reads go on; once space is freed the
//!    database takes writes again by itself — no reopen — and every
//!    acknowledged write is there, before and after a reopen.
//! 2. Crash rounds: a child process (this binary, re-executed with
//!    `RINGKV_DISK_FULL_CHILD` set) writes from two threads until the disk
//!    is full; space is freed or not, and the child is SIGKILLed at a random
//!    moment — while WAL appends, flushes, compactions and manifest edits
//!    are failing or being retried. After each kill the reopened database
//!    holds every acknowledged write and none that was refused — first
//!    reopened with only 16 KiB free (a restart needs no room for the log it
//!    replays), then with room.
//! 3. A restart on a full disk whose log holds more than the memtables'
//!    bound (one batch bigger than a memtable): recovery cannot write it to
//!    a table, so it keeps it in memory with its log instead of refusing to
//!    open.
//!
//! `harness = false`: this file is its own `main`. Rounds:
//! `RINGKV_DISK_FULL_ROUNDS` (default 12).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringkv_engine::{Db, Error, Options, SyncPolicy};

const CHILD_ENV: &str = "RINGKV_DISK_FULL_CHILD";

fn opts() -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes: 32 << 10,
        max_immutable_memtables: 1,
        block_bytes: 1024,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 8,
        l1_target_bytes: 64 << 10,
        level_multiplier: 4,
        target_file_bytes: 32 << 10,
        ..Options::default()
    }
}

fn key(t: u64, n: u64) -> Vec<u8> {
    format!("t{t}-{n:08}").into_bytes()
}

/// 400 incompressible bytes derived from the key, so tables take real space.
fn value(t: u64, n: u64) -> Vec<u8> {
    let mut x = (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_add(1);
    (0..50)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// A tmpfs of `size` bytes mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Takes `bytes` of the filesystem in a file, to be freed later.
fn reserve(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0xA5u8; bytes]).expect("reserve space");
}

fn check(db: &Db, acked: &HashSet<(u64, u64)>, refused: &HashSet<(u64, u64)>, when: &str) {
    for &(t, n) in acked {
        let got = db
            .get(&key(t, n))
            .unwrap_or_else(|e| panic!("{when}: read: {e}"));
        assert_eq!(
            got.as_deref(),
            Some(value(t, n).as_slice()),
            "{when}: acknowledged write t{t}-{n} lost"
        );
    }
    for &(t, n) in refused {
        assert_eq!(
            db.get(&key(t, n)).unwrap(),
            None,
            "{when}: refused write t{t}-{n} was applied"
        );
    }
}

fn in_process(fs: &Tmpfs) {
    let (spare, more) = (fs.path().join("spare"), fs.path().join("more"));
    reserve(&spare, 512 << 10);
    reserve(&more, 128 << 10);
    let dir = fs.path().join("db");
    let db = Arc::new(Db::open(&dir, opts()).unwrap());
    let acked = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let refused = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let acked_after_free = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let freed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // One writer thread: a write whose group met the full disk waits
    // (unacknowledged) until space returns, so the test thread must not be it.
    let writer = {
        let (db, acked, refused) = (db.clone(), acked.clone(), refused.clone());
        let (after, freed, stop) = (acked_after_free.clone(), freed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                match db.put(&key(0, n), &value(0, n)) {
                    Ok(()) => {
                        acked.lock().insert((0, n));
                        if freed.load(Ordering::Acquire) {
                            after.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    Err(Error::NoSpace(_)) => {
                        refused.lock().insert((0, n));
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("write failed with something other than NoSpace: {e}"),
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    // (The writer may be refused, or waiting in a group that met the full
    // disk: either way the database says it is out of space.)
    while !db.stats().no_space {
        assert!(Instant::now() < deadline, "the disk never filled up");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Full: refused cleanly, reads go on, the state says why.
    let stats = db.stats();
    assert!(stats.no_space, "stats report the stall: {stats:?}");
    assert!(stats.no_space_retries > 0);
    match db.put(b"probe", b"x") {
        Err(e @ Error::NoSpace(_)) => {
            let m = e.to_string();
            assert!(m.contains("no space left") && m.contains("resume"), "{m}");
        }
        other => panic!("a write on a full disk: {other:?}"),
    }
    check(&db, &acked.lock().clone(), &HashSet::new(), "while full");
    assert!(db.iter().unwrap().count() >= acked.lock().len());

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(&spare).unwrap();
    freed.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_after_free.load(Ordering::Acquire) < 100 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after space was freed: {:?}",
            db.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Release);
    // The writer may be waiting in a group that met a full disk again.
    std::fs::remove_file(&more).unwrap();
    writer.join().unwrap();
    let (acked, refused) = (acked.lock().clone(), refused.lock().clone());
    check(&db, &acked, &refused, "after space returned");
    drop(db);
    let db = Db::open(&dir, opts()).unwrap();
    check(&db, &acked, &refused, "after reopen");
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "in process: {} acknowledged, {} refused while full",
        acked.len(),
        refused.len()
    );
}

fn child(dir: &str) {
    let db = Arc::new(Db::open(dir, opts()).expect("child open"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |out: &std::sync::Mutex<std::io::Stdout>, line: String| {
        let mut o = out.lock().unwrap();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    say(&out, "ready".into());
    // Both writers may be waiting in a group that met the full disk (and so
    // never be refused): say when the database is out of space.
    {
        let (db, out) = (db.clone(), out.clone());
        std::thread::spawn(move || {
            let mut was = false;
            loop {
                let full = db.stats().no_space;
                if full && !was {
                    say(&out, "full".into());
                }
                was = full;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    }
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (db, out) = (db.clone(), out.clone());
            std::thread::spawn(move || {
                for n in 1.. {
                    match db.put(&key(t, n), &value(t, n)) {
                        Ok(()) => say(&out, format!("ack {t} {n}")),
                        Err(Error::NoSpace(_)) => {
                            say(&out, format!("refused {t} {n}"));
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => {
                            say(&out, format!("error {e}"));
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn crash_rounds(fs: &Tmpfs, rounds: u64) {
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash rounds: seed {seed}");
    let mut rng = Rng(seed);
    for round in 0..rounds {
        let dir: PathBuf = fs.path().join(format!("db{round}"));
        let (reserved, spare) = (fs.path().join("reserved"), fs.path().join("spare"));
        let tiny = fs.path().join("tiny");
        reserve(&spare, 384 << 10);
        reserve(&tiny, 16 << 10);
        reserve(&reserved, 256 << 10);
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut acked = HashSet::new();
        let mut refused = HashSet::new();
        let mut take = |line: String| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let id = || (f[1].parse::<u64>().unwrap(), f[2].parse::<u64>().unwrap());
            match f.first() {
                Some(&"ack") => {
                    acked.insert(id());
                }
                Some(&"refused") => {
                    refused.insert(id());
                }
                Some(&"error") => panic!("round {round}: child failed: {line}"),
                _ => {}
            }
        };
        // Until the disk is full.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("round {round}: the disk never filled up"));
            let full = line == "full";
            take(line);
            if full {
                break;
            }
        }
        // Kill while full, or after freeing some space: right away, or
        // while the retries and the next fill are under way.
        let action = rng.next() % 3;
        if action > 0 {
            std::fs::remove_file(&reserved).unwrap();
        }
        let delay = Duration::from_millis(match action {
            0 => rng.next() % 50,
            1 => rng.next() % 20,
            _ => 50 + rng.next() % 400,
        });
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(1)) {
                take(l);
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            take(l);
        }
        reader.join().unwrap();
        // A restart on a nearly full disk (16 KiB free): recovery keeps the
        // replayed logs instead of writing them to a table first.
        std::fs::remove_file(&tiny).unwrap();
        let db = Db::open(&dir, opts())
            .unwrap_or_else(|e| panic!("round {round}: reopen with 16 KiB free: {e}"));
        check(&db, &acked, &refused, &format!("round {round}, disk full"));
        drop(db);
        let _ = std::fs::remove_file(&reserved);
        std::fs::remove_file(&spare).unwrap();
        let db = Db::open(&dir, opts()).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        check(&db, &acked, &refused, &format!("round {round}"));
        assert!(!acked.is_empty());
        drop(db);
        eprintln!(
            "round {round}: action {action}, {} acknowledged, {} refused: all acknowledged present",
            acked.len(),
            refused.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Fills the filesystem holding `path` with one file, then gives back
/// `leave` bytes of it.
fn fill_leaving(path: &Path, leave: u64) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5Au8; 4096];
    let mut len = 0u64;
    while f.write_all(&chunk).is_ok() {
        len += chunk.len() as u64;
    }
    let _ = f.sync_all();
    f.set_len(len.saturating_sub(leave)).expect("shrink filler");
}

fn reopen_past_the_memtable_bound(fs: &Tmpfs) {
    let dir = fs.path().join("big");
    let o = opts();
    let bound = o.memtable_bytes * (1 + o.max_immutable_memtables);
    let db = Db::open(&dir, opts()).unwrap();
    let mut batch = ringkv_engine::WriteBatch::new();
    let mut n = 0;
    while batch.size_bytes() <= bound * 3 / 2 {
        n += 1;
        batch.put(&key(7, n), &value(7, n));
    }
    db.write(batch).unwrap();
    // Dropped, not closed: the batch stays in the log only, as after a kill.
    drop(db);
    let filler = fs.path().join("filler");
    fill_leaving(&filler, 16 << 10);
    let acked: HashSet<(u64, u64)> = (1..=n).map(|i| (7, i)).collect();
    let db = Db::open(&dir, opts())
        .unwrap_or_else(|e| panic!("reopen past the bound with 16 KiB free: {e}"));
    check(&db, &acked, &HashSet::new(), "past the bound, disk full");
    drop(db);
    std::fs::remove_file(&filler).unwrap();
    let db = Db::open(&dir, opts()).unwrap();
    check(&db, &acked, &HashSet::new(), "past the bound");
    db.close().unwrap();
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("past the bound: {n} keys in one batch reopened on a full disk");
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    // libtest-style arguments (a filter, --list) are ignored: one test.
    if std::env::args().any(|a| a == "--list") {
        println!("disk_full: test");
        return;
    }
    let rounds = std::env::var("RINGKV_DISK_FULL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let fs = match Tmpfs::mount(3 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED disk_full: {why}");
            return;
        }
    };
    in_process(&fs);
    reopen_past_the_memtable_bound(&fs);
    crash_rounds(&fs, rounds);
    println!("test disk_full ... ok");
}
