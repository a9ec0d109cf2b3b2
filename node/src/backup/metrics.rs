//! Backup and restore metrics (registered with the node's other metrics).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct BackupMetrics {
    pub running: Gauge,
    pub bytes_uploaded: Counter,
    pub bytes_skipped: Counter,
    pub files_uploaded: Counter,
    pub completed: Counter,
    pub failed: Counter,
    pub last_success_seconds: Gauge,
    pub snapshots: Gauge,
    pub restore_running: Gauge,
    pub restore_bytes_downloaded: Counter,
    pub restore_keys_loaded: Counter,
    pub restore_records_received: Counter,
}

impl BackupMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "backup_running",
            "1 while a backup of this node runs",
            self.running.clone(),
        );
        r.register(
            "backup_bytes_uploaded",
            "Snapshot bytes uploaded to object storage",
            self.bytes_uploaded.clone(),
        );
        r.register(
            "backup_bytes_skipped",
            "Snapshot bytes not uploaded because the object store already held them (incremental backups)",
            self.bytes_skipped.clone(),
        );
        r.register(
            "backup_files_uploaded",
            "Snapshot files uploaded to object storage",
            self.files_uploaded.clone(),
        );
        r.register(
            "backups_completed",
            "Backups of this node that completed",
            self.completed.clone(),
        );
        r.register(
            "backups_failed",
            "Backups of this node that failed (see Admin status backup.error)",
            self.failed.clone(),
        );
        r.register(
            "backup_last_success_seconds",
            "Unix time of the last backup of this node that completed",
            self.last_success_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Local snapshots held in the data directory",
            self.snapshots.clone(),
        );
        r.register(
            "restore_running",
            "1 while a restore driven by this node runs",
            self.restore_running.clone(),
        );
        r.register(
            "restore_bytes_downloaded",
            "Backup bytes downloaded by restores driven by this node",
            self.restore_bytes_downloaded.clone(),
        );
        r.register(
            "restore_keys_loaded",
            "Keys loaded by restores driven by this node",
            self.restore_keys_loaded.clone(),
        );
        r.register(
            "restore_records_received",
            "Restored records this node merged into their replicas (Admin.RestoreRecords)",
            self.restore_records_received.clone(),
        );
    }
}
