//! Backup and restore on in-process clusters, against a real S3 server on
//! loopback (moto) and the filesystem target: snapshots through Admin; a
//! cluster backup (every node under one id) of 100k keys with siblings,
//! TTLs and tombstones taken while writes continue; restore into fresh 3-
//! and 5-node clusters (every acknowledged write before the backup is there
//! with the same siblings, nothing deleted comes back, TTLs still expire); a
//! second backup after 1% more writes uploads only new files; a flipped byte
//! or a missing object makes verify and restore fail naming it, with nothing
//! loaded; the upload keeps to its rate limit. The CLI against real node
//! processes is client/tests/backup_cli.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Cluster, eventually, get_all};
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

/// Indexes of the data set: 35,000 make 100,334 keys (35k plain, 35k with
/// two siblings, 11,667 each with a long and a short TTL, 7k deleted), from
/// about 142k writes. The S3 scenario runs at this size; the filesystem one
/// (the same code but for the object store) at a tenth, to spare CI time.
const KEYS: usize = 35_000;
/// Requests in flight while loading and checking the data set.
const PARALLEL: usize = 64;
/// Long enough to outlive the backup and the first restore on a loaded
/// 2-core machine (about 20 s here), short enough to watch it expire.
const SHORT_TTL: Duration = Duration::from_secs(90);

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

/// The siblings as comparable tuples (value, expiry, write time).
fn siblings(r: &pb::GetResponse) -> Siblings {
    r.siblings
        .iter()
        .map(|s| (s.value.to_vec(), s.expires_at_unix_ms, s.written_at_unix_ms))
        .collect()
}

/// Writes the test data set: for each of `n` indexes a plain key, a key
/// with two siblings, every third a key with a long and one with a short
/// TTL, every fifth a key written then deleted. `PARALLEL` indexes at a time,
/// spread over the clients (one per node).
async fn populate(kvs: &[Kv], n: usize) {
    for_each(kvs, 0..n, |mut kv, i| async move {
        put(&mut kv, &format!("plain-{i}"), &format!("v{i}"), None).await;
        // Two writes without a context: concurrent siblings.
        put(&mut kv, &format!("sib-{i}"), &format!("a{i}"), None).await;
        put(&mut kv, &format!("sib-{i}"), &format!("b{i}"), None).await;
        if i % 3 == 0 {
            let long = Some(Duration::from_secs(3600));
            put(&mut kv, &format!("ttl-long-{i}"), "l", long).await;
        }
        if i % 5 == 0 {
            let k = format!("gone-{i}");
            put(&mut kv, &k, "doomed", None).await;
            kv.delete(pb::DeleteRequest {
                key: k.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
}

/// Writes the short-TTL keys, last, so they are still live when the backup
/// is taken and when the first restored copy is checked.
async fn write_short_ttls(kvs: &[Kv], n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n)
        .step_by(3)
        .map(|i| format!("ttl-short-{i}"))
        .collect();
    for_each(kvs, &keys, |mut kv, k| async move {
        put(&mut kv, k, "s", Some(SHORT_TTL)).await;
    })
    .await;
    keys
}

/// Reads `keys` (all replicas) into `expected`; each must be there.
async fn read_back(kvs: &[Kv], keys: Vec<String>, expected: &mut Expected) {
    let read = std::sync::Mutex::new(Expected::new());
    for_each(kvs, keys, |mut kv, k| {
        let read = &read;
        async move {
            let got = get_all(&mut kv, &k).await;
            assert!(got.found, "{k} before the backup");
            read.lock().unwrap().insert(k, siblings(&got));
        }
    })
    .await;
    expected.extend(read.into_inner().unwrap());
}

/// The keys `populate` deleted.
fn deleted_keys(n: usize) -> Vec<String> {
    (0..n).step_by(5).map(|i| format!("gone-{i}")).collect()
}

/// The live keys `populate` wrote (all but the short-TTL ones).
fn live_keys(n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        keys.push(format!("plain-{i}"));
        keys.push(format!("sib-{i}"));
        if i % 3 == 0 {
            keys.push(format!("ttl-long-{i}"));
        }
    }
    keys
}

/// Runs `f` for every item, `PARALLEL` at a time, each on one of the
/// clients in turn (they multiplex over one connection per node).
async fn for_each<I, F, Fut>(kvs: &[Kv], items: I, f: F)
where
    I: IntoIterator,
    F: Fn(Kv, I::Item) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items.into_iter().enumerate())
        .for_each_concurrent(PARALLEL, |(n, item)| f(kvs[n % kvs.len()].clone(), item))
        .await;
}

/// One client per node of `c`.
async fn clients(c: &Cluster) -> Vec<Kv> {
    let mut kvs = Vec::new();
    for i in 0..c.nodes.len() {
        kvs.push(c.kv(i).await);
    }
    kvs
}

async fn status(c: &Cluster, i: usize) -> pb::StatusResponse {
    c.admin(i)
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Backs every node up under `id` (at `rate` bytes/s, 0 = the default) and
/// waits for all of them.
async fn backup_cluster(c: &Cluster, url: &str, opts: &Opts, id: &str, rate: u64) {
    for i in 0..c.nodes.len() {
        let r = c
            .admin(i)
            .await
            .backup(pb::BackupRequest {
                url: url.into(),
                backup_id: id.into(),
                rate_limit_bytes_per_sec: rate,
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

/// A one-node cluster (N = W = R = 1).
async fn single_node() -> Cluster {
    Cluster::start(1, |c| {
        c.n = 1;
        c.w = 1;
        c.r = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_through_admin() {
    let c = single_node().await;
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

/// A backup's upload runs at the requested rate: with a 1 MiB/s limit (one
/// second of burst) 4 MiB of incompressible data cannot go up in under 3 s.
/// A lower bound only, so a slow machine cannot make it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_upload_is_rate_limited() {
    const RATE: u64 = 1 << 20;
    let c = single_node().await;
    let mut kv = c.kv(0).await;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..256 {
        // xorshift: incompressible, so the files are as big as the data.
        let value: Vec<u8> = (0..16 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        kv.put(pb::PutRequest {
            key: format!("big-{i}").into_bytes().into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().join("bk").display());
    let started = std::time::Instant::now();
    backup_cluster(&c, &url, &Opts::new(), "slow", RATE).await;
    let took = started.elapsed();
    let target = Target::open_with(&url, Default::default()).unwrap();
    let bytes = read_manifests(&target, "slow").await.unwrap()[0].uploaded_bytes;
    assert!(bytes >= 4 << 20, "{bytes} bytes uploaded");
    let least = Duration::from_secs_f64((bytes - RATE) as f64 / RATE as f64);
    assert!(
        took >= least,
        "{bytes} bytes at {RATE} B/s went up in {took:?}, under {least:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_filesystem() {
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().join("bk").display());
    scenario(&url, &Opts::new(), KEYS / 10).await;
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
    scenario(&url, &s3.options(), KEYS).await;
}

/// The same against Azure Blob storage on loopback (Azurite), through the
/// real Azure client, at a smaller size; skips (saying why) when Azurite is
/// not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_azure() {
    let az = match common::azurite::Azurite::start() {
        Ok(az) => az,
        Err(why) => {
            println!("SKIPPED backup_restore_azure: {why}");
            return;
        }
    };
    az.create_container("ringkv-backups").await;
    let url = "az://ringkv-backups/cluster-a";
    scenario(url, &az.options(), KEYS / 35).await;
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

/// Backs up a 3-node cluster holding the data set of `keys` indexes while
/// writes continue, restores it into fresh 3- and 5-node clusters, checks
/// an incremental backup and a corrupted one.
async fn scenario(url: &str, opts: &Opts, keys: usize) {
    let url = url.to_string();
    let target = Target::open_with(&url, opts.clone().into_iter().collect()).unwrap();

    // --- the source cluster and its data ---
    let src = Cluster::start(3, |_| {}).await;
    let kvs = clients(&src).await;
    let t = std::time::Instant::now();
    populate(&kvs, keys).await;
    let deleted = deleted_keys(keys);
    let mut expected = Expected::new();
    read_back(&kvs, live_keys(keys), &mut expected).await;
    let short = write_short_ttls(&kvs, keys).await;
    read_back(&kvs, short.clone(), &mut expected).await;
    let total = expected.len() + deleted.len();
    assert_eq!(total, 2 * keys + 2 * keys.div_ceil(3) + keys.div_ceil(5));
    assert_eq!(expected["sib-0"].len(), 2, "two concurrent siblings");
    println!("{total} keys written and read back in {:?}", t.elapsed());

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
    let t = std::time::Instant::now();
    backup_cluster(&src, &url, opts, "b1", 0).await;
    println!("backup b1 taken in {:?}", t.elapsed());
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
    for_each(&kvs, 0..expected.len() / 100, |mut kv, i| async move {
        put(&mut kv, &format!("more-{i}"), "m", None).await;
    })
    .await;
    backup_cluster(&src, &url, opts, "b2", 0).await;
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
    let t = std::time::Instant::now();
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
    println!("restored into 3 nodes in {:?}", t.elapsed());
    check_short_ttls_live(&three, &expected, &short).await;
    check_restored(&three, &expected, &deleted, acked_before).await;
    three.stop().await;

    // --- restore into a fresh 5-node cluster through the Admin API (the CLI's way) ---
    let five = Cluster::start(5, |_| {}).await;
    let scratch = tempfile::tempdir().unwrap();
    let sink = Arc::new(AdminSink::new(&admin_addrs(&five)).unwrap());
    let t = std::time::Instant::now();
    let rep = restore(
        &target,
        "b1",
        sink,
        &RestoreOptions::new(scratch.path().join("s")),
        Arc::new(Quiet),
    )
    .await
    .unwrap();
    println!("restored into 5 nodes in {:?}: {rep:?}", t.elapsed());
    assert!(rep.keys_loaded as usize >= expected.len() + deleted.len());
    // Every key was read from each of its 3 replicas' snapshots, except the
    // few live writes in flight (a third replica not yet written) while a
    // snapshot was taken: one sequential writer, so a handful at most.
    assert!(rep.records_read + 30 >= 3 * rep.keys_loaded, "{rep:?}");
    assert_eq!(rep.undecodable, 0);
    assert!(!scratch.path().join("s").exists(), "scratch removed");
    check_restored(&five, &expected, &deleted, acked_before).await;

    // TTLs still expire after the restore.
    let expiry = short
        .iter()
        .flat_map(|k| expected[k].iter().map(|s| s.1))
        .max()
        .unwrap();
    let wait = expiry.saturating_sub(ringkv_node::replica::now_ms()) + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let kvs5 = clients(&five).await;
    for_each(&kvs5, &short, |mut kv, k| async move {
        assert!(!get_all(&mut kv, k).await.found, "{k} expired");
    })
    .await;
    assert!(get_all(&mut kvs5[0].clone(), "ttl-long-0").await.found);
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

/// Right after a restore every short-TTL key is there exactly as before the
/// backup: they have not expired yet, so the restore kept them, and later
/// they must expire on their own.
async fn check_short_ttls_live(c: &Cluster, expected: &Expected, short: &[String]) {
    let first_expiry = short
        .iter()
        .flat_map(|k| expected[k].iter().map(|s| s.1))
        .min()
        .unwrap();
    for_each(&clients(c).await, short, |mut kv, k| async move {
        let got = siblings(&get_all(&mut kv, k).await);
        assert_eq!(got, expected[k], "{k} right after the restore");
    })
    .await;
    assert!(
        ringkv_node::replica::now_ms() < first_expiry,
        "the check ran past the short TTL ({SHORT_TTL:?}): it proves nothing on a machine this slow"
    );
}

/// Every key written before the backup has the same siblings; deleted keys
/// stay deleted; live writes acknowledged before the backup began are there.
async fn check_restored(c: &Cluster, expected: &Expected, deleted: &[String], acked_before: u64) {
    let t = std::time::Instant::now();
    let kvs = clients(c).await;
    let live_at = |sibs: &Siblings, t: u64| -> Siblings {
        sibs.iter()
            .filter(|s| s.1 == 0 || s.1 > t)
            .cloned()
            .collect()
    };
    for_each(&kvs, expected, |mut kv, (k, sibs)| async move {
        // A short TTL may run out while the read is in flight: what the read
        // returns lies between what is live before and after it.
        let before = ringkv_node::replica::now_ms();
        let got = siblings(&get_all(&mut kv, k).await);
        let after = ringkv_node::replica::now_ms();
        assert!(
            got.is_subset(&live_at(sibs, before)) && live_at(sibs, after).is_subset(&got),
            "{k}: restored {got:?}, before the backup {sibs:?}"
        );
    })
    .await;
    for_each(&kvs, deleted, |mut kv, k| async move {
        assert!(
            !get_all(&mut kv, k).await.found,
            "{k} was deleted before the backup"
        );
    })
    .await;
    for_each(&kvs, 0..acked_before, |mut kv, i| async move {
        let got = get_all(&mut kv, &format!("live-{i}")).await;
        assert!(got.found, "live-{i} acknowledged before the backup");
    })
    .await;
    println!(
        "{} keys checked on {} nodes in {:?}",
        expected.len(),
        c.nodes.len(),
        t.elapsed()
    );
}
