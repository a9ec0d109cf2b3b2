//! Checkpoints (hard-linked, crash-consistent copies) and read-only opens.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringkv_engine::{Db, Error, Options, ReadOnlyDb, SyncPolicy};

fn small_opts() -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes: 16 << 10,
        max_immutable_memtables: 1,
        block_bytes: 512,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 6,
        l0_stop_trigger: 10,
        l1_target_bytes: 32 << 10,
        level_multiplier: 2,
        target_file_bytes: 8 << 10,
        ..Options::default()
    }
}

fn all(scan: ringkv_engine::Scan) -> BTreeMap<Vec<u8>, Vec<u8>> {
    scan.map(Result::unwrap).collect()
}

fn listing(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.mtime_nsec()),
            )
        })
        .collect()
}

#[test]
fn checkpoint_holds_the_data_as_hard_links_and_survives_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("db");
    let cp = tmp.path().join("cp");
    let db = Db::open(&live, small_opts()).unwrap();
    for i in 0..3000u32 {
        db.put(format!("k{i:05}").as_bytes(), &[b'a'; 40]).unwrap();
    }
    for i in (0..3000u32).step_by(7) {
        db.delete(format!("k{i:05}").as_bytes()).unwrap();
    }
    db.put_expiring(b"ttl", b"x", u64::MAX - 1).unwrap();
    let expected = all(db.iter().unwrap());
    let info = db.checkpoint(&cp).unwrap();
    assert!(
        info.linked_tables > 0 && info.copied_tables == 0,
        "{info:?}"
    );
    assert!(info.files.iter().any(|f| f.name == "CURRENT"));
    assert_eq!(
        info.bytes(),
        info.files
            .iter()
            .map(|f| std::fs::metadata(cp.join(&f.name)).unwrap().len())
            .sum::<u64>()
    );
    // (Background compaction may already have dropped some from the live dir.)
    for f in info.files.iter().filter(|f| f.name.ends_with(".sst")) {
        let b = std::fs::metadata(cp.join(&f.name)).unwrap();
        if let Ok(a) = std::fs::metadata(live.join(&f.name)) {
            assert_eq!(a.ino(), b.ino(), "{} is a hard link, not a copy", f.name);
        }
    }
    assert!(
        !cp.with_file_name("cp.tmp").exists(),
        "temporary directory renamed away"
    );

    // Overwrite everything and compact: the live directory drops every
    // table the checkpoint names.
    for i in 0..3000u32 {
        db.put(format!("k{i:05}").as_bytes(), b"new").unwrap();
    }
    db.compact().unwrap();
    let live_files = listing(&live);
    assert!(
        info.files
            .iter()
            .filter(|f| f.name.ends_with(".sst"))
            .all(|f| !live_files.contains_key(&f.name)),
        "compaction obsoleted the checkpointed tables in the live dir"
    );
    db.close().unwrap();

    // The checkpoint still holds exactly the data at checkpoint time.
    let before = listing(&cp);
    let ro = ReadOnlyDb::open(&cp, small_opts()).unwrap();
    assert_eq!(all(ro.iter().unwrap()), expected);
    assert_eq!(ro.get(b"k00001").unwrap(), Some(vec![b'a'; 40]));
    assert_eq!(ro.get(b"k00007").unwrap(), None, "tombstone kept");
    assert_eq!(ro.get(b"ttl").unwrap(), Some(b"x".to_vec()));
    drop(ro);
    assert_eq!(listing(&cp), before, "a read-only open changes nothing");
    assert!(!cp.join("LOCK").exists());

    let reopened = Db::open(&cp, small_opts()).unwrap();
    assert_eq!(all(reopened.iter().unwrap()), expected);
    reopened.put(b"after", b"1").unwrap();
    reopened.close().unwrap();
}

#[test]
fn checkpoint_refuses_an_existing_dir_and_replaces_a_leftover_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), small_opts()).unwrap();
    db.put(b"a", b"1").unwrap();
    let cp = tmp.path().join("cp");
    std::fs::create_dir(&cp).unwrap();
    assert!(matches!(db.checkpoint(&cp), Err(Error::InvalidArgument(_))));
    std::fs::remove_dir(&cp).unwrap();
    // A crash in the middle of an earlier checkpoint left its temp dir.
    let stale = tmp.path().join("cp.tmp");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("000999.sst"), b"garbage").unwrap();
    db.checkpoint(&cp).unwrap();
    assert!(!stale.exists());
    assert!(!cp.join("000999.sst").exists());
    let ro = ReadOnlyDb::open(&cp, small_opts()).unwrap();
    assert_eq!(ro.get(b"a").unwrap(), Some(b"1".to_vec()));
    // An empty database checkpoints too.
    let empty = Db::open(tmp.path().join("empty"), small_opts()).unwrap();
    let info = empty.checkpoint(tmp.path().join("cp-empty")).unwrap();
    assert_eq!(info.linked_tables, 0);
    let ro = ReadOnlyDb::open(tmp.path().join("cp-empty"), small_opts()).unwrap();
    assert_eq!(ro.iter().unwrap().count(), 0);
}

#[test]
fn read_only_open_replays_logs_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    {
        let db = Db::open(&dir, small_opts()).unwrap();
        for i in 0..500u32 {
            db.put(format!("k{i:04}").as_bytes(), &[b'v'; 100]).unwrap();
        }
        db.delete(b"k0003").unwrap();
        // Dropped without close: the newest writes are only in the log.
    }
    let before = listing(&dir);
    let ro = ReadOnlyDb::open(&dir, small_opts()).unwrap();
    assert_eq!(ro.iter().unwrap().count(), 499);
    assert_eq!(ro.get(b"k0499").unwrap(), Some(vec![b'v'; 100]));
    assert_eq!(ro.get(b"k0003").unwrap(), None);
    drop(ro);
    assert_eq!(listing(&dir), before);
    assert!(matches!(
        ReadOnlyDb::open(tmp.path().join("nothing"), small_opts()),
        Err(Error::InvalidArgument(_)) | Err(Error::Io { .. })
    ));
    // A table the manifest names is missing: corruption naming it.
    let db = Db::open(&dir, small_opts()).unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let sst = listing(&dir)
        .into_keys()
        .find(|n| n.ends_with(".sst"))
        .unwrap();
    std::fs::remove_file(dir.join(&sst)).unwrap();
    let err = ReadOnlyDb::open(&dir, small_opts()).unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains(&sst),
        "{err}"
    );
}

fn key(t: u64, i: u64) -> Vec<u8> {
    format!("t{t}-{i:06}").into_bytes()
}

/// Writers run while checkpoints are taken (tiny memtables: flushes and
/// compactions are always in flight). Each checkpoint, reopened, must hold
/// per writer exactly its writes 0..m (a prefix), every write acknowledged
/// before the checkpoint began, and none begun after it returned.
#[test]
fn checkpoints_under_concurrent_writes_hold_a_prefix_of_acknowledged_writes() {
    const WRITERS: u64 = 4;
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(tmp.path().join("db"), small_opts()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Per writer: writes acknowledged, writes started.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let started: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (db, stop, acked, started) = (
                Arc::clone(&db),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&started),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    started[t as usize].store(i + 1, Ordering::SeqCst);
                    let value = vec![b'0' + (i % 10) as u8; 60 + (i % 50) as usize];
                    if t % 2 == 0 {
                        db.put(&key(t, i), &value).unwrap();
                    } else {
                        futures_lite_block_on(db.write_async({
                            let mut b = ringkv_engine::WriteBatch::new();
                            b.put(&key(t, i), &value);
                            b
                        }))
                        .unwrap();
                    }
                    acked[t as usize].store(i + 1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();
    let mut checked = 0;
    for round in 0..6 {
        // Let writes pile up (and flushes/compactions start) between checkpoints.
        let target = (round + 1) * 400;
        while acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .min()
            .unwrap()
            < target
        {
            std::thread::yield_now();
        }
        let acked_before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let cp = tmp.path().join(format!("cp{round}"));
        db.checkpoint(&cp).unwrap();
        let started_after: Vec<u64> = started.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let check = |got: BTreeMap<Vec<u8>, Vec<u8>>| {
            for t in 0..WRITERS {
                let mine: Vec<&Vec<u8>> = got
                    .keys()
                    .filter(|k| k.starts_with(format!("t{t}-").as_bytes()))
                    .collect();
                let m = mine.len() as u64;
                for (i, k) in mine.iter().enumerate() {
                    assert_eq!(**k, key(t, i as u64), "writer {t}: a gap before write {i}");
                }
                assert!(
                    m >= acked_before[t as usize],
                    "writer {t}: {m} writes, {} were acknowledged before the checkpoint",
                    acked_before[t as usize]
                );
                assert!(
                    m <= started_after[t as usize],
                    "writer {t}: {m} writes, only {} begun",
                    started_after[t as usize]
                );
            }
            assert_eq!(got.len() as u64, got.keys().count() as u64);
        };
        check(all(ReadOnlyDb::open(&cp, small_opts())
            .unwrap()
            .iter()
            .unwrap()));
        let reopened = Db::open(&cp, small_opts()).unwrap();
        check(all(reopened.iter().unwrap()));
        reopened.close().unwrap();
        checked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(checked, 6);
    let s = db.stats();
    assert!(
        s.compactions > 0 && s.flushes > 6,
        "flushes and compactions ran meanwhile: {s:?}"
    );
}

/// A minimal executor for one future (the engine's async write completes
/// from the commit thread).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(f)
}
