//! The node's backup service: what the Admin RPCs call, with progress for
//! Admin status and metrics. One backup and one restore at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;

use super::load::Loader;
use super::manifest::{FORMAT, NodeManifest, Replication};
use super::prune::{PruneReport, Retention};
use super::restore::{RestoreOptions, RestoreReport};
use super::snapshot::{SnapshotInfo, SnapshotMeta, Snapshots};
use super::target::{Target, manifest_object, validate_id};
use super::upload::{HashCache, upload_files};
use super::{BackupError, DEFAULT_RATE};
use crate::config::Config;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::replica::{Replica, now_ms};
use crate::ring::SharedTopology;
use crate::transport::InternodeClient;

/// Longest backup id (its snapshot is `backup-<id>`, at most 128).
pub const MAX_BACKUP_ID: usize = 120;

#[derive(Debug)]
pub struct Backups {
    config: Arc<Config>,
    replica: Arc<Replica>,
    membership: Membership,
    loader: Loader,
    metrics: Arc<Metrics>,
    snapshots: Snapshots,
    hashes: Arc<HashCache>,
    backup: Mutex<pb::BackupStatus>,
    restore: Mutex<pb::RestoreStatus>,
}

struct Uploading<'a>(&'a Backups);

impl super::upload::Progress for Uploading<'_> {
    fn totals(&self, files: u32, bytes: u64) {
        let mut s = self.0.backup.lock();
        s.files_total = files;
        s.bytes_total = bytes;
    }
    fn phase(&self, phase: &'static str) {
        self.0.backup.lock().phase = phase.into();
    }
    fn sent(&self, bytes: u64) {
        self.0.backup.lock().bytes_uploaded += bytes;
        self.0.metrics.backup.bytes_uploaded.inc_by(bytes);
    }
    fn file_done(&self, size: u64, uploaded: bool) {
        let mut s = self.0.backup.lock();
        s.files_done += 1;
        if uploaded {
            s.files_uploaded += 1;
            self.0.metrics.backup.files_uploaded.inc();
        } else {
            s.bytes_skipped += size;
            self.0.metrics.backup.bytes_skipped.inc_by(size);
        }
    }
}

struct Restoring(Arc<Backups>);

impl super::restore::Progress for Restoring {
    fn phase(&self, phase: &'static str) {
        self.0.restore.lock().phase = phase.into();
    }
    fn download_total(&self, bytes: u64) {
        self.0.restore.lock().bytes_total = bytes;
    }
    fn downloaded(&self, bytes: u64) {
        self.0.restore.lock().bytes_downloaded += bytes;
        self.0.metrics.backup.restore_bytes_downloaded.inc_by(bytes);
    }
    fn loaded(&self, keys: u64) {
        self.0.restore.lock().keys_loaded += keys;
        self.0.metrics.backup.restore_keys_loaded.inc_by(keys);
    }
}

impl Backups {
    pub fn new(
        config: Arc<Config>,
        replica: Arc<Replica>,
        membership: Membership,
        topology: Arc<SharedTopology>,
        client: InternodeClient,
        metrics: Arc<Metrics>,
    ) -> Arc<Backups> {
        let snapshots = Snapshots::new(&config.data_dir);
        let held = snapshots.list().map(|l| l.len()).unwrap_or(0);
        metrics.backup.snapshots.set(held as i64);
        Arc::new(Backups {
            loader: Loader::new(replica.clone(), topology, client, config.n as usize),
            snapshots,
            config,
            replica,
            membership,
            metrics,
            hashes: Arc::default(),
            backup: Mutex::default(),
            restore: Mutex::default(),
        })
    }

    fn count_snapshots(&self) {
        if let Ok(l) = self.snapshots.list() {
            self.metrics.backup.snapshots.set(l.len() as i64);
        }
    }

    fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            id: String::new(),
            node_id: self.config.node_id.clone(),
            zone: self.config.zone.clone(),
            tokens: self.membership.local().tokens,
            created_unix_ms: now_ms(),
            engine_last_sequence: 0,
        }
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
    ) -> Result<T, BackupError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BackupError::Task(e.to_string()))?
    }

    /// Takes a snapshot (`id` empty: `snap-<unix ms>`).
    pub async fn snapshot(self: &Arc<Self>, id: String) -> Result<SnapshotInfo, BackupError> {
        let id = if id.is_empty() {
            format!("snap-{}", now_ms())
        } else {
            id
        };
        validate_id("snapshot id", &id)?;
        let this = Arc::clone(self);
        let meta = self.meta();
        let info = Self::blocking(move || this.snapshots.create(&this.replica, &id, meta)).await?;
        self.count_snapshots();
        Ok(info)
    }

    pub async fn list_snapshots(self: &Arc<Self>) -> Result<Vec<SnapshotInfo>, BackupError> {
        let this = Arc::clone(self);
        Self::blocking(move || this.snapshots.list()).await
    }

    pub async fn delete_snapshot(self: &Arc<Self>, id: String) -> Result<bool, BackupError> {
        let this = Arc::clone(self);
        let deleted = Self::blocking(move || this.snapshots.delete(&id)).await?;
        self.count_snapshots();
        Ok(deleted)
    }

    pub fn backup_status(&self) -> pb::BackupStatus {
        self.backup.lock().clone()
    }

    pub fn restore_status(&self) -> pb::RestoreStatus {
        self.restore.lock().clone()
    }

    /// Starts backup `id` to `url`; `(false, running id)` if one runs.
    pub fn start_backup(
        self: &Arc<Self>,
        url: &str,
        options: Options,
        id: &str,
        rate: u64,
    ) -> Result<(bool, String), BackupError> {
        validate_id("backup id", id)?;
        if id.len() > MAX_BACKUP_ID {
            return Err(BackupError::Invalid {
                what: "backup id",
                why: format!("{id:?}: at most {MAX_BACKUP_ID} characters"),
            });
        }
        let target = Target::open(url, options)?;
        {
            let mut s = self.backup.lock();
            if s.running {
                return Ok((false, s.backup_id.clone()));
            }
            let (last_id, last_ms) = (s.last_completed_id.clone(), s.last_completed_unix_ms);
            *s = pb::BackupStatus {
                running: true,
                backup_id: id.to_string(),
                phase: "snapshot".into(),
                started_unix_ms: now_ms(),
                url: target.url.clone(),
                last_completed_id: last_id,
                last_completed_unix_ms: last_ms,
                ..Default::default()
            };
        }
        self.metrics.backup.running.set(1);
        let this = Arc::clone(self);
        let id = id.to_string();
        let started_id = id.clone();
        let rate = if rate == 0 { DEFAULT_RATE } else { rate };
        tokio::spawn(async move {
            let res = this.backup_once(&target, &id, rate).await;
            let mut s = this.backup.lock();
            s.running = false;
            s.finished_unix_ms = now_ms();
            match res {
                Ok(m) => {
                    s.phase = "done".into();
                    s.last_completed_id = id.clone();
                    s.last_completed_unix_ms = s.finished_unix_ms;
                    this.metrics.backup.completed.inc();
                    this.metrics
                        .backup
                        .last_success_seconds
                        .set((s.finished_unix_ms / 1000) as i64);
                    tracing::info!(backup = %id, url = %target.url, files = m.files.len(), bytes = m.bytes(), uploaded_files = m.uploaded_files, uploaded_bytes = m.uploaded_bytes, "backup completed");
                }
                Err(e) => {
                    s.phase = "failed".into();
                    s.error = e.to_string();
                    this.metrics.backup.failed.inc();
                    tracing::warn!(backup = %id, url = %target.url, error = %e, "backup failed");
                }
            }
            this.metrics.backup.running.set(0);
        });
        Ok((true, started_id))
    }

    async fn backup_once(
        self: &Arc<Self>,
        target: &Target,
        id: &str,
        rate: u64,
    ) -> Result<NodeManifest, BackupError> {
        let started = now_ms();
        let snap = format!("backup-{id}");
        // A leftover of an interrupted attempt: take a fresh one.
        let this = Arc::clone(self);
        let s2 = snap.clone();
        Self::blocking(move || this.snapshots.delete(&s2).map(|_| ())).await?;
        let info = self.snapshot(snap.clone()).await?;
        let res = async {
            let meta = self.snapshots.meta(&snap)?;
            let files = self.snapshots.files(&snap)?;
            let limiter = RateLimiter::new(rate);
            let up = upload_files(
                target,
                &self.config.node_id,
                files,
                Arc::clone(&self.hashes),
                &limiter,
                &Uploading(self),
            )
            .await?;
            self.backup.lock().phase = "manifest".into();
            let c = &self.config;
            let manifest = NodeManifest {
                format: FORMAT,
                backup_id: id.to_string(),
                node_id: c.node_id.clone(),
                zone: c.zone.clone(),
                tokens: meta.tokens,
                replication: Replication {
                    n: c.n,
                    w: c.w,
                    r: c.r,
                },
                conflict_mode: c.conflict_mode.as_str().to_string(),
                ringkv_version: env!("CARGO_PKG_VERSION").to_string(),
                started_unix_ms: started,
                snapshot_unix_ms: info.created_unix_ms,
                finished_unix_ms: now_ms(),
                engine_last_sequence: meta.engine_last_sequence,
                files: up.files,
                uploaded_files: up.uploaded_files,
                uploaded_bytes: up.uploaded_bytes,
            };
            let rel = manifest_object(id, &c.node_id);
            target
                .store()
                .put(&target.path(&rel), PutPayload::from(manifest.to_json()))
                .await
                .map_err(|e| BackupError::Object {
                    object: rel,
                    source: e,
                })?;
            Ok(manifest)
        }
        .await;
        let _ = self.delete_snapshot(snap).await;
        res
    }

    /// Merges restored records into their replicas (Admin.RestoreRecords).
    pub async fn restore_records(&self, items: Vec<pb::RestoreRecord>) -> Result<u64, BackupError> {
        let decoded = Loader::decode(items)?;
        let n = decoded.len() as u64;
        let writes = self.loader.load(decoded).await?;
        self.metrics.backup.restore_records_received.inc_by(n);
        Ok(writes)
    }

    /// Starts restoring backup `id` from `url` into this cluster.
    pub fn start_restore(
        self: &Arc<Self>,
        url: &str,
        options: Options,
        id: &str,
    ) -> Result<(bool, String), BackupError> {
        validate_id("backup id", id)?;
        let target = Target::open(url, options)?;
        {
            let mut s = self.restore.lock();
            if s.running {
                return Ok((false, s.backup_id.clone()));
            }
            *s = pb::RestoreStatus {
                running: true,
                backup_id: id.to_string(),
                phase: "downloading".into(),
                started_unix_ms: now_ms(),
                url: target.url.clone(),
                ..Default::default()
            };
        }
        self.metrics.backup.restore_running.set(1);
        let this = Arc::clone(self);
        let id = id.to_string();
        let started_id = id.clone();
        tokio::spawn(async move {
            let res = this.restore_from(&target, &id).await;
            let mut s = this.restore.lock();
            s.running = false;
            s.finished_unix_ms = now_ms();
            match res {
                Ok(r) => {
                    s.phase = "done".into();
                    tracing::info!(backup = %id, keys = r.keys_loaded, hints = r.hints_loaded, "restore completed");
                }
                Err(e) => {
                    s.phase = "failed".into();
                    s.error = e.to_string();
                    tracing::warn!(backup = %id, error = %e, "restore failed");
                }
            }
            this.metrics.backup.restore_running.set(0);
        });
        Ok((true, started_id))
    }

    /// Restores backup `id` from `target` through this node (blocks until done).
    pub async fn restore_from(
        self: &Arc<Self>,
        target: &Target,
        id: &str,
    ) -> Result<RestoreReport, BackupError> {
        let scratch: PathBuf = self.config.data_dir.join("restore-scratch");
        super::restore::restore(
            target,
            id,
            Arc::new(self.loader.clone()),
            &RestoreOptions::new(scratch),
            Arc::new(Restoring(Arc::clone(self))),
        )
        .await
    }

    /// Applies retention at `url` (Admin.PruneBackups).
    pub async fn prune(
        &self,
        url: &str,
        options: Options,
        retention: &Retention,
    ) -> Result<PruneReport, BackupError> {
        let target = Target::open(url, options)?;
        super::prune::prune(&target, retention, now_ms()).await
    }

    /// The backups at `url` (Admin.ListBackups), oldest first.
    pub async fn list_backups(
        &self,
        url: &str,
        options: Options,
    ) -> Result<Vec<pb::BackupInfo>, BackupError> {
        let target = Target::open(url, options)?;
        let list = super::prune::list_backups(&target).await?;
        Ok(list
            .iter()
            .map(|b| pb::BackupInfo {
                backup_id: b.id.clone(),
                node_ids: b.nodes.iter().map(|m| m.node_id.clone()).collect(),
                started_unix_ms: b.started_unix_ms(),
                finished_unix_ms: b.finished_unix_ms(),
                files: b.files() as u64,
                bytes: b.bytes(),
                uploaded_bytes: b.uploaded_bytes(),
            })
            .collect())
    }

    /// Checks every object of backup `id` at `url` (Admin.VerifyBackup):
    /// missing or corrupt objects are in the response, not an error.
    pub async fn verify_backup(
        &self,
        url: &str,
        options: Options,
        id: &str,
    ) -> Result<pb::VerifyBackupResponse, BackupError> {
        validate_id("backup id", id)?;
        let target = Target::open(url, options)?;
        verify_response(super::verify::verify(&target, id).await)
    }
}

/// Per-request object store options (credentials), as the RPCs carry them.
pub type Options = std::collections::HashMap<String, String>;

/// A verification's outcome as Admin.VerifyBackup answers it: problems are
/// data, other errors (no such backup, store unreachable) stay errors.
pub fn verify_response(
    res: Result<super::VerifyReport, BackupError>,
) -> Result<pb::VerifyBackupResponse, BackupError> {
    match res {
        Ok(r) => Ok(pb::VerifyBackupResponse {
            ok: true,
            objects_checked: r.files,
            bytes_checked: r.bytes,
            problems: Vec::new(),
            node_ids: r.nodes,
        }),
        Err(BackupError::Unverified { problems, .. }) => Ok(pb::VerifyBackupResponse {
            ok: false,
            objects_checked: 0,
            bytes_checked: 0,
            problems: problems.iter().map(|p| p.to_string()).collect(),
            node_ids: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}

/// `retention` from an Admin request.
pub fn retention_of(req: &pb::PruneBackupsRequest) -> Retention {
    Retention {
        keep_last: req.keep_last,
        max_age: (req.max_age_seconds > 0).then(|| Duration::from_secs(req.max_age_seconds)),
        min_object_age: if req.min_object_age_seconds == 0 {
            super::prune::DEFAULT_MIN_OBJECT_AGE
        } else {
            Duration::from_secs(req.min_object_age_seconds)
        },
        dry_run: req.dry_run,
    }
}
