//! Backup and restore types: `spec.backup` (scheduled cluster backups with
//! retention), `spec.restoreFrom` (a new cluster loaded from a backup), the
//! `KVBackup` resource (one-off backups) and their status.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduled backups of every node to an object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule in UTC, 5 fields (`0 3 * * *`: daily at 03:00) or a
    /// nickname (`@daily`, `@hourly`). A slot missed while a backup still
    /// ran, or while the cluster was busy, is not made up: the next slot runs.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    pub destination: BackupDestination,
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Upload limit per node, bytes per second (a quantity: `50Mi`); unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|k|M|G)?$"), length(max = 32))]
    pub rate_limit: Option<String>,
    /// Stop scheduling (a running backup finishes).
    #[serde(default)]
    pub suspend: bool,
}

/// Where backups go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// Bucket URL with an optional prefix: `s3://bucket/prefix`, `gs://...`,
    /// `az://...`, `file:///path` (a volume every node mounts).
    #[schemars(
        regex(pattern = r"^(s3|s3a|gs|az|abfs|abfss|file)://.+$"),
        length(max = 1024)
    )]
    pub url: String,
    /// Secret in the cluster's namespace whose keys are passed to the object
    /// store as options (`aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_region`, `aws_endpoint`, `google_service_account_key`, ...).
    /// Unset: the nodes' ambient credentials (IRSA, workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// Which backups are kept. Objects no kept backup names are deleted by the
/// node's prune (garbage collection) after each successful backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep at least the newest K complete backups.
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep_last: u32,
    /// Delete backups older than this (`30d`), never one of the newest `keepLast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"), length(max = 32))]
    pub max_age: Option<String>,
}

fn default_keep_last() -> u32 {
    7
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            max_age: None,
        }
    }
}

/// A backup to load into a new cluster once all its nodes are up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    pub destination: BackupDestination,
    /// Id of the cluster backup (`status.backup.lastSuccessful` of the source cluster).
    #[schemars(length(min = 1, max = 128))]
    pub backup_id: String,
}

/// A one-off backup of a cluster in the same namespace.
// clippy reads the repeated `type_` of kube's printcolumn(...) as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ringkv.io",
    version = "v1alpha1",
    kind = "KVBackup",
    plural = "kvbackups",
    singular = "kvbackup",
    shortname = "kvb",
    category = "ringkv",
    namespaced,
    status = "BackupRun",
    derive = "PartialEq",
    doc = "A one-off backup of a KVCluster (every node, one at a time per zone).",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(
        name = "Duration",
        type_ = "integer",
        json_path = ".status.durationSeconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KVBackupSpec {
    /// Name of the KVCluster.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "cluster cannot change"}
    ]))]
    pub cluster: String,
    /// Where to; unset: the cluster's `spec.backup.destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<BackupDestination>,
}

/// Progress of one cluster backup (the status of a KVBackup, and the entries
/// of a KVCluster's `status.backup`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// Backup id: every node's backup is stored under it.
    #[serde(default)]
    pub id: String,
    /// `schedule` or `KVBackup/<name>`.
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub phase: BackupPhase,
    /// Unix ms.
    #[serde(default)]
    pub started_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<i64>,
    #[serde(default)]
    pub duration_seconds: i64,
    /// Nodes whose backup completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_done: Vec<String>,
    /// Nodes backing up now (at most one per zone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_running: Vec<String>,
    /// Bytes and files the backup names (uploaded or already in the bucket).
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub files: u64,
    /// Bytes actually uploaded (the rest was already stored: incremental).
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Why it failed, or why it waits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// The backups of a KVCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupStatus {
    /// The schedule slot (unix ms) the last scheduled backup was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_unix_ms: Option<i64>,
    /// The backup running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<BackupRun>,
    /// Id of the newest complete backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<String>,
    /// The last finished backups, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BackupRun>,
}

/// Restore of `spec.restoreFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    pub backup_id: String,
    #[serde(default)]
    pub phase: BackupPhase,
    /// The node the restore runs through.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default)]
    pub keys_loaded: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
