//! Restore: download every node's files of a backup (each checked against
//! its manifest — a backup that does not verify is refused before anything
//! is loaded), open them read-only, and walk all nodes' records at once in
//! key order, merging the copies of each key (records merge commutatively
//! and idempotently, so the union of the replicas' copies is the cluster's
//! data). Each merged record goes once to a [`Sink`], which merges it into
//! the key's current replicas — whatever the topology now is. Then the
//! hints the nodes held (acknowledged writes their owner had not taken yet).
//! Records carry their tombstones and expiry times, so deletes stay deleted
//! and TTLs still expire.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use ringkv_engine::{Options, ReadOnlyDb, Scan};

use super::BackupError;
use super::manifest::NodeManifest;
use super::target::Target;
use super::verify::{Problem, fetch_checked, read_manifests};
use crate::replica::HintStore;
use crate::version::Record;

/// Where restored records go: merged into each key's current replicas.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Loads (user key, encoded record) pairs; returns the replica writes
    /// made. Must be idempotent: a failed batch may be sent again.
    async fn load(&self, batch: Vec<(Bytes, Bytes)>) -> Result<u64, BackupError>;
}

/// Progress callbacks of a restore.
pub trait Progress: Send + Sync {
    fn phase(&self, phase: &'static str);
    fn download_total(&self, bytes: u64);
    fn downloaded(&self, bytes: u64);
    fn loaded(&self, keys: u64);
}

/// A [`Progress`] that ignores everything.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &'static str) {}
    fn download_total(&self, _: u64) {}
    fn downloaded(&self, _: u64) {}
    fn loaded(&self, _: u64) {}
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Local directory the files are downloaded to (removed afterwards).
    pub scratch: PathBuf,
    /// Batches being loaded at once.
    pub parallel: usize,
    /// Record bytes per batch.
    pub batch_bytes: usize,
}

impl RestoreOptions {
    pub fn new(scratch: PathBuf) -> RestoreOptions {
        RestoreOptions {
            scratch,
            parallel: 4,
            batch_bytes: 1 << 20,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub backup_id: String,
    pub nodes: Vec<String>,
    pub files: u64,
    pub bytes_downloaded: u64,
    /// Records read from all nodes' files (a key held by 3 replicas counts 3).
    pub records_read: u64,
    /// Distinct keys loaded (each once, merged).
    pub keys_loaded: u64,
    /// Hints loaded.
    pub hints_loaded: u64,
    /// Stored records that did not decode (skipped).
    pub undecodable: u64,
    /// Writes made on replicas (keys times their replicas).
    pub replica_writes: u64,
}

/// Downloads backup `backup_id` into `scratch/<node>/`, verifying every
/// file; refuses (`Unverified`, naming every bad object) before anything
/// is loaded.
pub async fn download(
    target: &Target,
    backup_id: &str,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Vec<NodeManifest>, BackupError> {
    progress.phase("downloading");
    let manifests = read_manifests(target, backup_id).await?;
    progress.download_total(manifests.iter().map(|m| m.bytes()).sum());
    let mut jobs = Vec::new();
    for m in &manifests {
        for sub in super::manifest::DIRS {
            let d = scratch.join(&m.node_id).join(sub);
            std::fs::create_dir_all(&d).map_err(|e| BackupError::io(&d, e))?;
        }
        for f in &m.files {
            jobs.push((f.clone(), scratch.join(&m.node_id).join(&f.path)));
        }
    }
    let on_bytes = |n: u64| progress.downloaded(n);
    let on_bytes = &on_bytes;
    let mut problems: Vec<Problem> = futures::stream::iter(jobs)
        .map(|(f, dest)| async move { fetch_checked(target, &f, Some(&dest), on_bytes).await })
        .buffer_unordered(4)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.object().cmp(b.object()));
        return Err(BackupError::Unverified {
            backup_id: backup_id.to_string(),
            problems,
        });
    }
    Ok(manifests)
}

/// Restores backup `backup_id` through `sink`: download and verify, then
/// load. The scratch directory is removed afterwards.
pub async fn restore(
    target: &Target,
    backup_id: &str,
    sink: Arc<dyn Sink>,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport, BackupError> {
    if opts.scratch.exists() {
        std::fs::remove_dir_all(&opts.scratch).map_err(|e| BackupError::io(&opts.scratch, e))?;
    }
    let res = async {
        let manifests = download(target, backup_id, &opts.scratch, &*progress).await?;
        load_downloaded(&opts.scratch, &manifests, sink, opts, progress).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&opts.scratch);
    res
}

/// One node's records in key order, with the next one peeked.
struct Cursor {
    scan: Scan,
    next: Option<(Vec<u8>, Vec<u8>)>,
}

impl Cursor {
    fn advance(&mut self) -> Result<(), BackupError> {
        self.next = self.scan.next().transpose()?;
        Ok(())
    }
}

type Batch = Vec<(Bytes, Bytes)>;

/// Walks every node's records in key order, merging each key's copies, and
/// hands batches to `send` (blocking). Returns (records read, keys, undecodable).
fn merge_nodes(
    dirs: &[PathBuf],
    batch_bytes: usize,
    mut send: impl FnMut(Batch) -> bool,
) -> Result<(u64, u64, u64), BackupError> {
    let opts = Options {
        block_cache_bytes: 8 << 20,
        ..Options::default()
    };
    let dbs: Vec<ReadOnlyDb> = dirs
        .iter()
        .map(|d| ReadOnlyDb::open(d, opts.clone()))
        .collect::<Result<_, _>>()?;
    let mut cursors: Vec<Cursor> = Vec::with_capacity(dbs.len());
    for db in &dbs {
        let mut c = Cursor {
            scan: db.iter()?,
            next: None,
        };
        c.advance()?;
        cursors.push(c);
    }
    let mut heap: BinaryHeap<Reverse<(Vec<u8>, usize)>> = cursors
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.next.as_ref().map(|(k, _)| Reverse((k.clone(), i))))
        .collect();
    let (mut read, mut keys, mut undecodable) = (0u64, 0u64, 0u64);
    let mut batch: Batch = Vec::new();
    let mut size = 0usize;
    while let Some(Reverse((ekey, i))) = heap.pop() {
        let mut merged: Option<Record> = None;
        let mut take = |i: usize, heap: &mut BinaryHeap<_>| -> Result<(), BackupError> {
            let c = &mut cursors[i];
            let (_, value) = c.next.take().expect("a cursor in the heap has an item");
            read += 1;
            match Record::decode(&value) {
                Ok(r) => {
                    merged = Some(match merged.take() {
                        Some(m) => m.merge(&r),
                        None => r,
                    })
                }
                Err(_) => undecodable += 1,
            }
            c.advance()?;
            if let Some((k, _)) = &c.next {
                heap.push(Reverse((k.clone(), i)));
            }
            Ok(())
        };
        take(i, &mut heap)?;
        while let Some(Reverse((k, _))) = heap.peek() {
            if *k != ekey {
                break;
            }
            let Reverse((_, j)) = heap.pop().expect("peeked");
            take(j, &mut heap)?;
        }
        let Some(rec) = merged else { continue };
        // Engine key = 8-byte token ++ user key.
        if ekey.len() <= 8 {
            undecodable += 1;
            continue;
        }
        let value = Bytes::from(rec.encode());
        size += ekey.len() + value.len();
        batch.push((Bytes::copy_from_slice(&ekey[8..]), value));
        keys += 1;
        if size >= batch_bytes {
            if !send(std::mem::take(&mut batch)) {
                return Ok((read, keys, undecodable));
            }
            size = 0;
        }
    }
    if !batch.is_empty() {
        send(batch);
    }
    Ok((read, keys, undecodable))
}

/// Every node's hints, as (user key, record) batches. Returns (hints, undecodable).
fn read_hints(
    dirs: &[PathBuf],
    batch_bytes: usize,
    mut send: impl FnMut(Batch) -> bool,
) -> Result<(u64, u64), BackupError> {
    let (mut hints, mut undecodable) = (0u64, 0u64);
    let mut batch: Batch = Vec::new();
    let mut size = 0usize;
    for d in dirs {
        let db = ReadOnlyDb::open(d, Options::default())?;
        for item in db.iter()? {
            let (id, value) = item?;
            let Ok(h) = HintStore::parse_entry(&id, &value) else {
                undecodable += 1;
                continue;
            };
            let value = Bytes::from(h.record.encode());
            size += h.key.len() + value.len();
            batch.push((h.key, value));
            hints += 1;
            if size >= batch_bytes {
                if !send(std::mem::take(&mut batch)) {
                    return Ok((hints, undecodable));
                }
                size = 0;
            }
        }
    }
    if !batch.is_empty() {
        send(batch);
    }
    Ok((hints, undecodable))
}

/// Loads what [`download`] put in `scratch`.
pub async fn load_downloaded(
    scratch: &Path,
    manifests: &[NodeManifest],
    sink: Arc<dyn Sink>,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport, BackupError> {
    progress.phase("loading");
    let node_dirs = |sub: &str| -> Vec<PathBuf> {
        manifests
            .iter()
            .map(|m| scratch.join(&m.node_id).join(sub))
            .collect()
    };
    let (engine_dirs, hint_dirs) = (node_dirs("engine"), node_dirs("hints"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(opts.parallel.max(1) * 2);
    let batch_bytes = opts.batch_bytes;
    let producer = tokio::task::spawn_blocking(move || {
        let send = |b: Batch| tx.blocking_send(b).is_ok();
        let records = merge_nodes(&engine_dirs, batch_bytes, send)?;
        let hints = read_hints(&hint_dirs, batch_bytes, send)?;
        Ok::<_, BackupError>((records, hints))
    });
    let loaded_keys = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    let mut failure: Option<BackupError> = None;
    {
        let mut loads = receiver_stream(rx)
            .map(|batch| {
                let sink = Arc::clone(&sink);
                let n = batch.len() as u64;
                async move { sink.load(batch).await.map(|w| (n, w)) }
            })
            .buffer_unordered(opts.parallel.max(1));
        while let Some(r) = loads.next().await {
            match r {
                Ok((n, w)) => {
                    loaded_keys.fetch_add(n, Ordering::Relaxed);
                    writes.fetch_add(w, Ordering::Relaxed);
                    progress.loaded(n);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    let consumed = match failure {
        Some(e) => Err(e),
        None => Ok(()),
    };
    // A failed load drops the receiver: the producer stops at its next batch.
    let produced = producer
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?;
    let loaded = loaded_keys.load(Ordering::Relaxed);
    if let Err(e) = consumed {
        return Err(BackupError::Load(format!(
            "{e}; {loaded} records were loaded before it failed, the rest were not — loading is idempotent, run the restore again"
        )));
    }
    let ((read, keys, bad_records), (hints, bad_hints)) = produced?;
    Ok(RestoreReport {
        backup_id: manifests
            .first()
            .map(|m| m.backup_id.clone())
            .unwrap_or_default(),
        nodes: manifests.iter().map(|m| m.node_id.clone()).collect(),
        files: manifests.iter().map(|m| m.files.len() as u64).sum(),
        bytes_downloaded: manifests.iter().map(|m| m.bytes()).sum(),
        records_read: read,
        keys_loaded: keys,
        hints_loaded: hints,
        undecodable: bad_records + bad_hints,
        replica_writes: writes.load(Ordering::Relaxed),
    })
}

/// A receiver as a stream.
fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
