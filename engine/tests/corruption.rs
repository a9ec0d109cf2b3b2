//! Damaged files are reported as corruption naming the file, never served as
//! wrong data. Each case builds a database, flips bytes in one structure of
//! one file, and reads everything back.

use std::path::{Path, PathBuf};

use ringkv_engine::{Db, Error, Options, SyncPolicy};

const N: u32 = 3000;

fn opts() -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes: 64 << 10,
        block_bytes: 1024,
        // Keep tables in L0 so the layout stays predictable.
        l0_compaction_trigger: 50,
        l0_slowdown_trigger: 60,
        l0_stop_trigger: 70,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 40) as usize)).into_bytes()
}

/// A database whose data lives in tables (`flushed`) or only in the WAL.
fn build(flushed: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    for i in 0..N {
        db.put(&key(i), &value(i)).unwrap();
        if flushed && i % 1000 == 999 {
            db.flush().unwrap();
        }
    }
    if flushed {
        db.flush().unwrap();
    }
    drop(db); // no close: what is not flushed stays in the WAL
    dir
}

fn files(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| pred(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

/// Footer fields: (filter_off, filter_len, index_off, index_len).
fn footer(path: &Path) -> (u64, u64, u64, u64) {
    let b = std::fs::read(path).unwrap();
    let f = &b[b.len() - 56..];
    let u = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap());
    (u(0), u(1), u(2), u(3))
}

fn names_file(e: &Error, file: &Path) -> bool {
    let name = file.file_name().unwrap().to_str().unwrap();
    e.is_corruption() && e.to_string().contains(name)
}

/// Open and read every key and a full scan. Returns the corruption errors
/// seen; panics on wrong data or on a non-corruption error.
fn read_everything(dir: &Path) -> Vec<Error> {
    let mut errors = Vec::new();
    let db = match Db::open(dir, opts()) {
        Ok(db) => db,
        Err(e) => {
            assert!(
                e.is_corruption(),
                "open failed with a non-corruption error: {e}"
            );
            return vec![e];
        }
    };
    for i in 0..N {
        match db.get(&key(i)) {
            Ok(Some(v)) => assert_eq!(v, value(i), "wrong data for key {i}"),
            Ok(None) => panic!("key {i} silently missing"),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                errors.push(e);
            }
        }
    }
    match db.iter() {
        Ok(scan) => {
            for item in scan {
                match item {
                    Ok((k, v)) => {
                        let i: u32 = std::str::from_utf8(&k[4..]).unwrap().parse().unwrap();
                        assert_eq!(v, value(i), "scan returned wrong data for key {i}");
                    }
                    Err(e) => {
                        assert!(e.is_corruption(), "{e}");
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            errors.push(e);
        }
    }
    errors
}

fn assert_reported(dir: &Path, file: &Path, what: &str) {
    let errors = read_everything(dir);
    assert!(!errors.is_empty(), "{what}: damage went unnoticed");
    assert!(
        errors.iter().all(|e| names_file(e, file)),
        "{what}: every error must name {}: {:?}",
        file.display(),
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    println!("{what}: {}", errors[0]);
}

#[test]
fn sstable_data_block() {
    let dir = build(true);
    let sst = files(dir.path(), |n| n.ends_with(".sst")).remove(0);
    flip(&sst, 100);
    assert_reported(dir.path(), &sst, "data block");
}

#[test]
fn sstable_index_block() {
    let dir = build(true);
    let sst = files(dir.path(), |n| n.ends_with(".sst")).remove(0);
    let (_, _, index_off, index_len) = footer(&sst);
    flip(&sst, index_off + index_len / 2);
    assert_reported(dir.path(), &sst, "index block");
}

#[test]
fn sstable_filter_block() {
    let dir = build(true);
    let sst = files(dir.path(), |n| n.ends_with(".sst")).remove(0);
    let (filter_off, filter_len, _, _) = footer(&sst);
    flip(&sst, filter_off + filter_len / 3);
    assert_reported(dir.path(), &sst, "filter block");
}

#[test]
fn sstable_footer() {
    for back in [56, 40, 20, 8, 1] {
        let dir = build(true);
        let sst = files(dir.path(), |n| n.ends_with(".sst")).remove(0);
        let len = std::fs::metadata(&sst).unwrap().len();
        flip(&sst, len - back);
        assert_reported(dir.path(), &sst, &format!("footer byte -{back}"));
    }
}

#[test]
fn manifest_middle() {
    // Several flushes leave several edits in the manifest; damage one in the
    // middle (not the tail).
    let dir = build(true);
    let tables = files(dir.path(), |n| n.ends_with(".sst"));
    assert!(tables.len() >= 3);
    let manifest = files(dir.path(), |n| n.starts_with("MANIFEST-")).remove(0);
    let len = std::fs::metadata(&manifest).unwrap().len();
    flip(&manifest, len / 2);
    let err = Db::open(dir.path(), opts()).unwrap_err();
    assert!(names_file(&err, &manifest), "{err}");
    // Nothing was deleted while refusing: the tables are all still there.
    assert_eq!(files(dir.path(), |n| n.ends_with(".sst")), tables);
}

#[test]
fn manifest_snapshot_record() {
    // A manifest with only its snapshot record: damage must not read as a
    // torn tail (that would orphan every table).
    let dir = build(true);
    drop(Db::open(dir.path(), opts()).unwrap()); // rewrites the manifest as one snapshot
    let tables = files(dir.path(), |n| n.ends_with(".sst"));
    let manifest = files(dir.path(), |n| n.starts_with("MANIFEST-")).remove(0);
    flip(&manifest, 20);
    let err = Db::open(dir.path(), opts()).unwrap_err();
    assert!(names_file(&err, &manifest), "{err}");
    assert_eq!(files(dir.path(), |n| n.ends_with(".sst")), tables);
}

#[test]
fn wal_middle() {
    let dir = build(false);
    let wal = files(dir.path(), |n| n.ends_with(".log")).remove(0);
    let len = std::fs::metadata(&wal).unwrap().len();
    flip(&wal, len / 2);
    let err = Db::open(dir.path(), opts()).unwrap_err();
    assert!(names_file(&err, &wal), "{err}");
    match err {
        Error::Corruption { offset, .. } => {
            assert!(offset > 0 && offset <= len / 2, "offset {offset}")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wal_torn_tail_is_truncated_and_the_rest_recovered() {
    let dir = build(false);
    let wal = files(dir.path(), |n| n.ends_with(".log")).remove(0);
    let len = std::fs::metadata(&wal).unwrap().len();
    // Cut the last record in half, as a crash mid-write would.
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let db = Db::open(dir.path(), opts()).unwrap();
    for i in 0..N - 1 {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)));
    }
    assert_eq!(
        db.get(&key(N - 1)).unwrap(),
        None,
        "the torn write is dropped"
    );
}

#[test]
fn missing_or_garbled_current() {
    let dir = build(true);
    std::fs::write(dir.path().join("CURRENT"), b"../../etc/passwd\n").unwrap();
    let err = Db::open(dir.path(), opts()).unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains("CURRENT"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    let err = Db::open(dir.path(), opts()).unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains("CURRENT"),
        "{err}"
    );
}
