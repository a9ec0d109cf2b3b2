//! The fuzzing entry points (also used by `engine/fuzz`) on mutated real
//! files: every input either decodes or gives a corruption error — no panic.

use proptest::prelude::*;
use ringkv_engine::{Db, Options, SyncPolicy, fuzzing};

fn real_files() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Never,
        block_bytes: 256,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    for i in 0..300u32 {
        db.put(
            format!("k{i:04}").as_bytes(),
            format!("value {i}").as_bytes(),
        )
        .unwrap();
        if i % 7 == 0 {
            db.delete(format!("k{:04}", i / 2).as_bytes()).unwrap();
        }
    }
    db.flush().unwrap();
    db.put(b"in-wal", b"yes").unwrap();
    db.put_expiring(b"in-wal-ttl", b"yes", 42).unwrap();
    let read = |suffix: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy().ends_with(suffix)
                    || p.file_name().unwrap().to_string_lossy().starts_with(suffix)
            })
            .map(|p| std::fs::read(p).unwrap())
            .unwrap()
    };
    let sst = read(".sst");
    let wal = read(".log");
    let manifest = read("MANIFEST-");
    drop(db);
    (sst, wal, manifest)
}

fn mutate(mut b: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !b.is_empty() {
        for &(pos, x) in flips {
            let n = b.len();
            b[pos % n] ^= x.max(1);
        }
    }
    if let Some(c) = cut {
        let n = b.len();
        b.truncate(c % (n + 1));
    }
    b
}

#[test]
fn unmutated_files_decode() {
    let (sst, wal, manifest) = real_files();
    assert!(fuzzing::sstable(&sst).unwrap() > 100);
    assert!(fuzzing::wal(&wal).unwrap() >= 2);
    assert!(fuzzing::manifest(&manifest).unwrap() >= 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<usize>()),
        which in 0..3u8,
    ) {
        let (sst, wal, manifest) = FILES.with(|f| f.clone());
        let r = match which {
            0 => fuzzing::sstable(&mutate(sst, &flips, cut)).map(drop),
            1 => fuzzing::wal(&mutate(wal, &flips, cut)).map(drop),
            _ => fuzzing::manifest(&mutate(manifest, &flips, cut)).map(drop),
        };
        if let Err(e) = r {
            prop_assert!(e.is_corruption(), "{e}");
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for r in [fuzzing::sstable(&bytes), fuzzing::wal(&bytes), fuzzing::manifest(&bytes)] {
            if let Err(e) = r {
                prop_assert!(e.is_corruption(), "{e}");
            }
        }
    }
}

thread_local! {
    static FILES: (Vec<u8>, Vec<u8>, Vec<u8>) = real_files();
}
