//! Backup and restore on in-process clusters with the filesystem target:
//! snapshots through Admin; a cluster backup (every node under one id)
//! taken while writes continue; restore into fresh 3- and 5-node clusters
//! (every acknowledged write before the backup is there with the same
//! siblings, nothing deleted comes back, TTLs still expire); a second
//! backup after 1% more writes uploads only new files; a flipped byte or a
//! missing object makes verify and restore fail naming it, with nothing
//! loaded. The S3 variant (real processes, a loopback S3 server, the CLI)
//! is e2e/tests/backup.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Cluster, eventually};
use ringkv_node::backup::remote::AdminSink;
use ringkv_node::backup::restore::{Quiet, RestoreOptions, restore};
use ringkv_node::backup::verify::{read_manifests, verify};
use ringkv_node::backup::{BackupError, Problem, Target};
use ringkv_proto::v1 as pb;
use tonic::transport::Channel;

/// A key's siblings as comparable tuples (value, expiry, write time).
type Siblings = BTreeSet<(Vec<u8>, u64, u64)>;
/// Every key's siblings before the backup.
type Expected = BTreeMap<String, Siblings>;

/// Per-request object store options (credentials).
type Opts = std::collections::HashMap<String, String>;

type Kv = ringkv_proto::v1::key_value_client::KeyValueClient<Channel>;

/// Keys per kind; the e2e test runs the 100k-key version.
const KEYS: usize = 1500;
const SHORT_TTL: Duration = Duration::from_secs(60);

async fn put(kv: &mut Kv, key: &str, value: &str, ttl: Option<Duration>) {
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ttl_ms: ttl.map_or(0, |t| t.as_millis() as u64),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn get_all(kv: &mut Kv, key: &str) -> pb::GetResponse {
    kv.get(pb::GetRequest {
        key: key.as_bytes().to_vec().into(),
        r: "all".into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// The siblings as comparable tuples (value, expiry, write time).
fn siblings(r: &pb::GetResponse) -> Siblings {
    r.siblings
        .iter()
        .map(|s| (s.value.to_vec(), s.expires_at_unix_ms, s.written_at_unix_ms))
        .collect()
}

/// Writes the test data set: plain keys, keys with two siblings, keys with
/// a long and a short TTL, and deleted keys. Returns the deleted keys.
async fn populate(kv: &mut Kv, n: usize, tag: &str) -> Vec<String> {
    let mut deleted = Vec::new();
    for i in 0..n {
        put(kv, &format!("{tag}plain-{i}"), &format!("v{i}"), None).await;
        // Two writes without a context: concurrent siblings.
        put(kv, &format!("{tag}sib-{i}"), &format!("a{i}"), None).await;
        put(kv, &format!("{tag}sib-{i}"), &format!("b{i}"), None).await;
        if i % 3 == 0 {
            put(
                kv,
                &format!("{tag}ttl-long-{i}"),
                "l",
                Some(Duration::from_secs(3600)),
            )
            .await;
        }
        if i % 5 == 0 {
            let k = format!("{tag}gone-{i}");
            put(kv, &k, "doomed", None).await;
            kv.delete(pb::DeleteRequest {
                key: k.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap();
            deleted.push(k);
        }
    }
    // Last, so they are still live when the backup is taken.
    for i in (0..n).step_by(3) {
        put(kv, &format!("{tag}ttl-short-{i}"), "s", Some(SHORT_TTL)).await;
    }
    deleted
}

async fn status(c: &Cluster, i: usize) -> pb::StatusResponse {
    c.admin(i)
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Backs every node up under `id` and waits for all of them.
async fn backup_cluster(c: &Cluster, url: &str, opts: &Opts, id: &str) {
    for i in 0..c.nodes.len() {
        let r = c
            .admin(i)
            .await
            .backup(pb::BackupRequest {
                url: url.into(),
                backup_id: id.into(),
                rate_limit_bytes_per_sec: 0,
                options: opts.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.started, "{r:?}");
    }
    for i in 0..c.nodes.len() {
        eventually(Duration::from_secs(120), "backup to finish", || async {
            let b = status(c, i).await.backup.unwrap_or_default();
            b.backup_id == id && !b.running
        })
        .await;
        let b = status(c, i).await.backup.unwrap();
        assert_eq!(b.phase, "done", "{b:?}");
        assert!(b.error.is_empty(), "{b:?}");
        assert_eq!(b.files_done, b.files_total);
    }
}

fn admin_addrs(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .map(|n| n.addrs.internode.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_through_admin() {
    let c = Cluster::start(1, |c| {
        c.n = 1;
        c.w = 1;
        c.r = 1;
    })
    .await;
    let mut kv = c.kv(0).await;
    put(&mut kv, "k", "v", None).await;
    let mut a = c.admin(0).await;
    let s = a
        .snapshot(pb::SnapshotRequest { id: "s1".into() })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(s.id, "s1");
    assert!(s.files > 0 && s.bytes > 0, "{s:?}");
    let dir = std::path::PathBuf::from(&s.path);
    assert!(dir.join("engine/CURRENT").exists() && dir.join("hints/CURRENT").exists());
    let again = a
        .snapshot(pb::SnapshotRequest { id: "s1".into() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    let bad = a
        .snapshot(pb::SnapshotRequest { id: "../x".into() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let auto = a
        .snapshot(pb::SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(auto.id.starts_with("snap-"));
    let list = a
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s1", auto.id.as_str()]
    );
    // The snapshot is a database of its own holding the write.
    let ro = ringkv_engine::ReadOnlyDb::open(dir.join("engine"), Default::default()).unwrap();
    assert_eq!(ro.iter().unwrap().count(), 1);
    drop(ro);
    let d = a
        .delete_snapshot(pb::DeleteSnapshotRequest { id: "s1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(d.deleted);
    assert!(!dir.exists());
    let d = a
        .delete_snapshot(pb::DeleteSnapshotRequest { id: "s1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.deleted);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_filesystem() {
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().join("bk").display());
    scenario(&url, &Opts::new()).await;
}

/// The same against a real S3 server on loopback (moto), through the real
/// S3 client; skips (saying why) when moto_server is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_s3() {
    let s3 = match common::s3::Moto::start() {
        Ok(s3) => s3,
        Err(why) => {
            println!("SKIPPED backup_restore_s3: {why}");
            return;
        }
    };
    s3.create_bucket("ringkv-backups");
    let url = format!(
        "s3://ringkv-backups/cluster-a?endpoint={}&allow_http=true",
        s3.endpoint()
    );
    scenario(&url, &s3.options()).await;
}

/// Sum of the sizes of the file objects stored under `target`.
async fn stored_bytes(target: &Target) -> u64 {
    use futures::TryStreamExt;
    target
        .store()
        .list(Some(&target.path("files")))
        .try_fold(0, |n, m| async move { Ok(n + m.size) })
        .await
        .unwrap()
}

async fn scenario(url: &str, opts: &Opts) {
    let url = url.to_string();
    let target = Target::open_with(&url, opts.clone().into_iter().collect()).unwrap();

    // --- the source cluster and its data ---
    let src = Cluster::start(3, |_| {}).await;
    let mut kv = src.kv(0).await;
    let deleted = populate(&mut kv, KEYS, "").await;
    let mut expected: Expected = BTreeMap::new();
    for i in 0..KEYS {
        let mut keys = vec![format!("plain-{i}"), format!("sib-{i}")];
        if i % 3 == 0 {
            keys.push(format!("ttl-long-{i}"));
            keys.push(format!("ttl-short-{i}"));
        }
        for k in keys {
            let got = get_all(&mut kv, &k).await;
            assert!(got.found, "{k} before the backup");
            expected.insert(k, siblings(&got));
        }
    }
    assert_eq!(expected["sib-0"].len(), 2, "two concurrent siblings");

    // Writes continue while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut kv = src.kv(1).await;
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                put(&mut kv, &format!("live-{i}"), &format!("l{i}"), None).await;
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    eventually(Duration::from_secs(30), "live writes", || async {
        acked.load(Ordering::SeqCst) >= 20
    })
    .await;
    let acked_before = acked.load(Ordering::SeqCst);
    backup_cluster(&src, &url, opts, "b1").await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let report = verify(&target, "b1").await.unwrap();
    assert_eq!(report.nodes, ["node-0", "node-1", "node-2"]);
    let b1 = read_manifests(&target, "b1").await.unwrap();
    for m in &b1 {
        assert_eq!(m.tokens.len(), 128, "ring state in the manifest");
        assert_eq!(
            m.uploaded_bytes,
            m.bytes(),
            "first backup uploads everything"
        );
    }

    // --- incremental: 1% more writes, a second backup ---
    let stored_before = stored_bytes(&target).await;
    for i in 0..(expected.len() / 100).max(10) {
        put(&mut kv, &format!("more-{i}"), "m", None).await;
    }
    backup_cluster(&src, &url, opts, "b2").await;
    let b2 = read_manifests(&target, "b2").await.unwrap();
    let b1_objects: BTreeSet<&str> = b1
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.object.as_str()))
        .collect();
    let (mut total, mut uploaded) = (0u64, 0u64);
    for m in &b2 {
        let new: u64 = m
            .files
            .iter()
            .filter(|f| !b1_objects.contains(f.object.as_str()))
            .map(|f| f.size)
            .sum();
        assert_eq!(
            m.uploaded_bytes, new,
            "{}: uploads exactly the new files",
            m.node_id
        );
        total += m.bytes();
        uploaded += m.uploaded_bytes;
    }
    let grown = stored_bytes(&target).await - stored_before;
    assert_eq!(grown, uploaded, "the bucket grew by what was uploaded");
    assert!(
        uploaded * 2 < total,
        "second backup uploaded {uploaded} of {total} bytes"
    );
    println!("incremental backup: {uploaded} of {total} bytes uploaded after 1% more writes");
    src.stop().await;

    // --- restore into a fresh 3-node cluster, driven by one of its nodes ---
    let three = Cluster::start(3, |_| {}).await;
    let r = three
        .admin(0)
        .await
        .restore(pb::RestoreRequest {
            url: url.clone(),
            backup_id: "b1".into(),
            options: opts.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.started);
    eventually(Duration::from_secs(180), "restore to finish", || async {
        !status(&three, 0).await.restore.unwrap_or_default().running
    })
    .await;
    let rs = status(&three, 0).await.restore.unwrap();
    assert_eq!(rs.phase, "done", "{rs:?}");
    check_restored(&three, &expected, &deleted, acked_before).await;
    three.stop().await;

    // --- restore into a fresh 5-node cluster through the Admin API (the CLI's way) ---
    let five = Cluster::start(5, |_| {}).await;
    let scratch = tempfile::tempdir().unwrap();
    let sink = Arc::new(AdminSink::new(&admin_addrs(&five)).unwrap());
    let rep = restore(
        &target,
        "b1",
        sink,
        &RestoreOptions::new(scratch.path().join("s")),
        Arc::new(Quiet),
    )
    .await
    .unwrap();
    assert!(rep.keys_loaded as usize >= expected.len() + deleted.len());
    // Every key was read from each of its 3 replicas' snapshots, except the
    // few live writes in flight (a third replica not yet written) while a
    // snapshot was taken: one sequential writer, so a handful at most.
    assert!(rep.records_read + 30 >= 3 * rep.keys_loaded, "{rep:?}");
    assert_eq!(rep.undecodable, 0);
    assert!(!scratch.path().join("s").exists(), "scratch removed");
    check_restored(&five, &expected, &deleted, acked_before).await;

    // TTLs still expire after the restore.
    let short: Vec<&String> = expected
        .keys()
        .filter(|k| k.starts_with("ttl-short"))
        .collect();
    let expiry = short
        .iter()
        .flat_map(|k| expected[*k].iter().map(|s| s.1))
        .max()
        .unwrap();
    let wait = expiry.saturating_sub(ringkv_node::replica::now_ms()) + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut kv5 = five.kv(3).await;
    for k in &short {
        assert!(!get_all(&mut kv5, k).await.found, "{k} expired");
    }
    assert!(get_all(&mut kv5, "ttl-long-0").await.found);
    five.stop().await;

    // --- a flipped byte and a missing object ---
    let files: Vec<&ringkv_node::backup::ManifestFile> =
        b2.iter().flat_map(|m| m.files.iter()).collect();
    let victim = files.iter().find(|f| f.path.ends_with(".sst")).unwrap();
    let gone = files.iter().find(|f| f.path.ends_with("CURRENT")).unwrap();
    {
        use object_store::ObjectStoreExt;
        let store = target.store();
        let victim_path = target.path(&victim.object);
        let mut bytes = store
            .get(&victim_path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[victim.size as usize / 2] ^= 0x40;
        store.put(&victim_path, bytes.into()).await.unwrap();
        store.delete(&target.path(&gone.object)).await.unwrap();
    }
    let err = verify(&target, "b2").await.unwrap_err();
    let BackupError::Unverified { problems, .. } = &err else {
        panic!("{err}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&victim.object) && msg.contains(&gone.object),
        "{msg}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Corrupt { object, .. } if object == &victim.object))
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Missing { object } if object == &gone.object))
    );
    let fresh = Cluster::start(3, |_| {}).await;
    let sink = Arc::new(AdminSink::new(&admin_addrs(&fresh)).unwrap());
    let err = restore(
        &target,
        "b2",
        sink,
        &RestoreOptions::new(scratch.path().join("s2")),
        Arc::new(Quiet),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&victim.object), "{err}");
    assert_eq!(fresh.total_records().await, 0, "nothing partially restored");
    // The same refusal through a node's Restore RPC.
    fresh
        .admin(1)
        .await
        .restore(pb::RestoreRequest {
            url: url.clone(),
            backup_id: "b2".into(),
            options: opts.clone(),
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "restore to fail", || async {
        !status(&fresh, 1).await.restore.unwrap_or_default().running
    })
    .await;
    let rs = status(&fresh, 1).await.restore.unwrap();
    assert_eq!(rs.phase, "failed");
    assert!(rs.error.contains(&gone.object), "{rs:?}");
    assert_eq!(fresh.total_records().await, 0);
    // An unknown backup id is a clear error.
    assert!(matches!(
        verify(&target, "nope").await,
        Err(BackupError::NotFound { .. })
    ));
    fresh.stop().await;
}

/// Every key written before the backup has the same siblings; deleted keys
/// stay deleted; live writes acknowledged before the backup began are there.
async fn check_restored(c: &Cluster, expected: &Expected, deleted: &[String], acked_before: u64) {
    let mut kv = c.kv(c.nodes.len() - 1).await;
    let live_at = |sibs: &Siblings, t: u64| -> Siblings {
        sibs.iter()
            .filter(|s| s.1 == 0 || s.1 > t)
            .cloned()
            .collect()
    };
    for (k, sibs) in expected {
        // A short TTL may run out while the read is in flight: what the read
        // returns lies between what is live before and after it.
        let before = ringkv_node::replica::now_ms();
        let got = siblings(&get_all(&mut kv, k).await);
        let after = ringkv_node::replica::now_ms();
        assert!(
            got.is_subset(&live_at(sibs, before)) && live_at(sibs, after).is_subset(&got),
            "{k}: restored {got:?}, before the backup {sibs:?}"
        );
    }
    for k in deleted {
        assert!(
            !get_all(&mut kv, k).await.found,
            "{k} was deleted before the backup"
        );
    }
    for i in 0..acked_before {
        let got = get_all(&mut kv, &format!("live-{i}")).await;
        assert!(got.found, "live-{i} acknowledged before the backup");
    }
}
