//! Behaviour of the public API on small, deterministic cases.

use std::sync::Arc;
use std::time::Duration;

use ringkv_engine::{Db, Error, ManualClock, Options, SyncPolicy, WriteBatch};

fn small_opts() -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes: 16 << 10,
        block_bytes: 512,
        l0_compaction_trigger: 2,
        l1_target_bytes: 64 << 10,
        target_file_bytes: 32 << 10,
        ..Options::default()
    }
}

fn scan_all(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iter().unwrap().map(Result::unwrap).collect()
}

#[test]
fn put_get_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), small_opts()).unwrap();
        db.put(b"a", b"1").unwrap();
        db.put(b"b", b"2").unwrap();
        db.put(b"a", b"3").unwrap();
        db.delete(b"b").unwrap();
        assert_eq!(db.get(b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(db.get(b"b").unwrap(), None);
        assert_eq!(db.get(b"c").unwrap(), None);
        // Drop without close: recovery comes from the WAL.
    }
    let db = Db::open(dir.path(), small_opts()).unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(db.get(b"b").unwrap(), None);
    db.close().unwrap();
    assert!(matches!(db.get(b"a"), Err(Error::Closed)));
    assert!(matches!(db.put(b"a", b"x"), Err(Error::Closed)));
    db.close().unwrap();
}

#[test]
fn many_keys_survive_flushes_compactions_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000u32;
    {
        let db = Db::open(dir.path(), small_opts()).unwrap();
        for i in 0..n {
            db.put(format!("key{i:05}").as_bytes(), format!("v{i}").as_bytes())
                .unwrap();
        }
        for i in (0..n).step_by(3) {
            db.delete(format!("key{i:05}").as_bytes()).unwrap();
        }
        let s = db.stats();
        assert!(
            s.flushes > 0,
            "expected flushes with a 16 KiB memtable: {s:?}"
        );
        db.compact().unwrap();
        let s = db.stats();
        assert!(s.compactions > 0);
        assert_eq!(s.level_files[0], 0, "full compaction empties L0: {s:?}");
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), small_opts()).unwrap();
    for i in 0..n {
        let got = db.get(format!("key{i:05}").as_bytes()).unwrap();
        if i % 3 == 0 {
            assert_eq!(got, None, "key{i:05}");
        } else {
            assert_eq!(got, Some(format!("v{i}").into_bytes()), "key{i:05}");
        }
    }
    let all = scan_all(&db);
    assert_eq!(all.len(), (0..n).filter(|i| i % 3 != 0).count());
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn batches_are_atomic_and_scans_are_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_opts()).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"x", b"1").put(b"y", b"2").delete(b"z");
    db.write(b).unwrap();
    let snap = db.scan(b"a".as_slice()..b"zz".as_slice()).unwrap();
    db.put(b"w", b"new").unwrap();
    db.delete(b"x").unwrap();
    db.flush().unwrap();
    let seen: Vec<_> = snap.map(Result::unwrap).collect();
    assert_eq!(
        seen,
        vec![
            (b"x".to_vec(), b"1".to_vec()),
            (b"y".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(
        scan_all(&db),
        vec![
            (b"w".to_vec(), b"new".to_vec()),
            (b"y".to_vec(), b"2".to_vec())
        ]
    );
}

#[test]
fn range_bounds_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_opts()).unwrap();
    for k in ["a", "b", "c", "d"] {
        db.put(k.as_bytes(), b"v").unwrap();
    }
    let keys = |r: Vec<(Vec<u8>, Vec<u8>)>| {
        r.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    let got = keys(
        db.scan(b"b".as_slice()..b"d".as_slice())
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(got, ["b", "c"]);
    let got = keys(
        db.scan(b"b".as_slice()..=b"d".as_slice())
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(got, ["b", "c", "d"]);
    use std::ops::Bound::*;
    let got = keys(
        db.scan::<&[u8], _>((Excluded(b"b".as_slice()), Unbounded))
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(got, ["c", "d"]);
}

#[test]
fn expiry_is_immediate_and_compaction_removes_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        clock: clock.clone(),
        ..small_opts()
    };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    db.put_expiring(b"ttl", b"v", 1_000_500).unwrap();
    db.put(b"keep", b"v").unwrap();
    assert_eq!(db.get(b"ttl").unwrap(), Some(b"v".to_vec()));
    db.flush().unwrap();
    clock.set(1_000_500);
    assert_eq!(
        db.get(b"ttl").unwrap(),
        None,
        "expired entries are invisible at once"
    );
    assert_eq!(scan_all(&db), vec![(b"keep".to_vec(), b"v".to_vec())]);
    db.compact().unwrap();
    db.close().unwrap();
    // The expired entry was physically dropped: its bytes are gone from every table.
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "sst") {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(3).any(|w| w == b"ttl"),
                "expired key still in {f:?}"
            );
        }
    }
}

#[test]
fn tombstones_are_kept_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000));
    let opts = Options {
        clock: clock.clone(),
        tombstone_grace: Duration::from_secs(60),
        ..small_opts()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    db.put(b"gone", b"v").unwrap();
    db.flush().unwrap();
    db.delete(b"gone").unwrap();
    db.compact().unwrap();
    let has_key = || {
        std::fs::read_dir(dir.path()).unwrap().any(|f| {
            let f = f.unwrap().path();
            f.extension().is_some_and(|e| e == "sst")
                && std::fs::read(&f).unwrap().windows(4).any(|w| w == b"gone")
        })
    };
    assert!(has_key(), "tombstone must survive compaction within grace");
    assert_eq!(db.get(b"gone").unwrap(), None);
    clock.advance(Duration::from_secs(61));
    db.compact().unwrap();
    assert!(
        !has_key(),
        "tombstone must be purged after grace at the bottom level"
    );
    assert_eq!(db.get(b"gone").unwrap(), None);
}

#[test]
fn bad_arguments_are_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_opts()).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"ok", b"v")
        .put(&vec![0u8; ringkv_engine::MAX_KEY_BYTES + 1], b"v");
    assert!(matches!(db.write(b), Err(Error::InvalidArgument(_))));
    assert_eq!(db.get(b"ok").unwrap(), None, "no partial batch");
    let bad = Options {
        memtable_bytes: 1,
        ..small_opts()
    };
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(
        Db::open(other.path(), bad),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), small_opts()).unwrap();
    assert!(matches!(
        Db::open(dir.path(), small_opts()),
        Err(Error::Locked(_))
    ));
}

#[test]
fn concurrent_writers_with_sync_always_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            dir.path(),
            Options {
                sync: SyncPolicy::Always,
                ..small_opts()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    db.put(format!("t{t}-{i:04}").as_bytes(), b"v").unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(scan_all(&db).len(), 1600);
    let s = db.stats();
    assert!(s.user_bytes_written > 0 && s.wal_bytes_written >= s.user_bytes_written);
}

#[test]
fn writes_stall_instead_of_growing_memory_when_flush_lags() {
    // Tiny memtables and a low L0 stop: writers must wait, never fail, and
    // memory stays within (1 + max immutable) memtables.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        memtable_bytes: 8 << 10,
        max_immutable_memtables: 1,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 2,
        l0_stop_trigger: 3,
        ..small_opts()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    let value = vec![7u8; 200];
    let mut peak = 0;
    for i in 0..4000 {
        db.put(format!("k{i:06}").as_bytes(), &value).unwrap();
        peak = peak.max(db.stats().memtable_bytes);
    }
    let s = db.stats();
    assert!(peak <= 2 * (8 << 10) + 4096, "memtables grew to {peak}");
    assert!(
        s.write_slowdowns + s.write_stalls > 0,
        "expected back-pressure: {s:?}"
    );
    assert!(s.level_files[0] < 3 + 1);
    assert_eq!(scan_all(&db).len(), 4000);
}

#[test]
fn get_cached_answers_without_disk_or_says_it_needs_io() {
    use ringkv_engine::Cached;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_opts()).unwrap();
    db.put(b"mem", b"1").unwrap();
    // In the memtable: answered at once, present or absent.
    assert_eq!(
        db.get_cached(b"mem").unwrap(),
        Cached::Value(Some(b"1".to_vec()))
    );
    assert_eq!(db.get_cached(b"nope").unwrap(), Cached::Value(None));
    db.flush().unwrap();
    // In a fresh table whose filter and blocks were never read: needs I/O.
    assert_eq!(db.get_cached(b"mem").unwrap(), Cached::NeedsIo);
    // A blocking read loads filter, index and data block...
    assert_eq!(db.get(b"mem").unwrap(), Some(b"1".to_vec()));
    // ...after which both a hit and a filter miss are answered from memory.
    assert_eq!(
        db.get_cached(b"mem").unwrap(),
        Cached::Value(Some(b"1".to_vec()))
    );
    assert_eq!(db.get_cached(b"absent-key").unwrap(), Cached::Value(None));
    db.delete(b"mem").unwrap();
    assert_eq!(db.get_cached(b"mem").unwrap(), Cached::Value(None));

    // Without a block cache, a key in a table always needs I/O.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = Db::open(
        dir2.path(),
        Options {
            block_cache_bytes: 0,
            ..small_opts()
        },
    )
    .unwrap();
    db2.put(b"k", b"v").unwrap();
    db2.flush().unwrap();
    assert_eq!(db2.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db2.get_cached(b"k").unwrap(), Cached::NeedsIo);
}
