//! `Db::write_async`: writers on async tasks share the commit thread with
//! blocking writers, are grouped under one fsync, and keep every promise of
//! `Db::write` (durable when acknowledged, atomic, ordered per key).

use std::sync::Arc;

use ringkv_engine::{Db, Options, SyncPolicy, WriteBatch};

fn opts(memtable_bytes: usize) -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes,
        block_bytes: 512,
        l0_compaction_trigger: 2,
        l1_target_bytes: 64 << 10,
        target_file_bytes: 32 << 10,
        ..Options::default()
    }
}

fn key(t: usize, i: usize) -> Vec<u8> {
    format!("t{t:03}-k{i:04}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_writers_are_grouped_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), opts(64 << 20)).unwrap());
    const TASKS: usize = 64;
    const EACH: usize = 40;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let mut b = WriteBatch::new();
                    b.put(&key(t, i), format!("v{i}").as_bytes());
                    db.write_async(b).await.unwrap();
                    // Acknowledged means readable at once.
                    assert_eq!(
                        db.get(&key(t, i)).unwrap(),
                        Some(format!("v{i}").into_bytes())
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = db.stats();
    let writes = (TASKS * EACH) as u64;
    assert!(
        s.write_groups < writes,
        "{} groups for {writes} concurrent writes: nothing was grouped",
        s.write_groups
    );
    // Dropped without close: every acknowledged write comes back from the WAL.
    drop(db);
    let db = Db::open(dir.path(), opts(64 << 20)).unwrap();
    for t in 0..TASKS {
        for i in 0..EACH {
            assert_eq!(
                db.get(&key(t, i)).unwrap(),
                Some(format!("v{i}").into_bytes())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_and_blocking_writers_through_rotations_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny memtable: writers keep finding it full and wait for rotations.
    let db = Arc::new(Db::open(dir.path(), opts(8 << 10)).unwrap());
    let async_writers: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let mut b = WriteBatch::new();
                    // A two-key batch: both keys or neither, always.
                    b.put(&key(t, i), &[b'a'; 100])
                        .put(&key(t + 100, i), &[b'b'; 100]);
                    db.write_async(b).await.unwrap();
                }
            })
        })
        .collect();
    let blocking = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..300 {
                db.put(&key(50, i), &[b'c'; 100]).unwrap();
                if i % 100 == 0 {
                    db.flush().unwrap();
                }
            }
            db.compact().unwrap();
        })
    };
    for t in async_writers {
        t.await.unwrap();
    }
    blocking.await.unwrap();
    assert!(db.stats().flushes > 3, "{:?}", db.stats());
    db.close().unwrap();
    drop(db);
    let db = Db::open(dir.path(), opts(8 << 10)).unwrap();
    for i in 0..300 {
        for t in 0..8 {
            assert_eq!(db.get(&key(t, i)).unwrap(), Some(vec![b'a'; 100]));
            assert_eq!(db.get(&key(t + 100, i)).unwrap(), Some(vec![b'b'; 100]));
        }
        assert_eq!(db.get(&key(50, i)).unwrap(), Some(vec![b'c'; 100]));
    }
}

#[tokio::test]
async fn async_writes_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts(64 << 20)).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"k", b"v");
    db.write_async(b.clone()).await.unwrap();
    db.close().unwrap();
    assert!(matches!(
        db.write_async(b).await,
        Err(ringkv_engine::Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_batch_is_visible_once_committed_even_if_nobody_waits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts(64 << 20)).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"k1", b"v1");
    let commit = db.append(b).await.unwrap();
    // Not acknowledged yet; once it is, the value is there.
    commit.await.unwrap();
    assert_eq!(db.get(b"k1").unwrap(), Some(b"v1".to_vec()));
    // A commit nobody awaits still happens, in order with later writes.
    let mut b = WriteBatch::new();
    b.put(b"k2", b"first");
    drop(db.append(b).await.unwrap());
    let mut b = WriteBatch::new();
    b.put(b"k2", b"second");
    db.write_async(b).await.unwrap();
    assert_eq!(db.get(b"k2").unwrap(), Some(b"second".to_vec()));
    drop(db);
    let db = Db::open(dir.path(), opts(64 << 20)).unwrap();
    assert_eq!(db.get(b"k2").unwrap(), Some(b"second".to_vec()));
    // An empty batch commits at once.
    db.append(WriteBatch::new()).await.unwrap().await.unwrap();
}
