//! Snapshots, backups to object storage, verification and restore.
//!
//! - [`snapshot`]: a node snapshot is an engine checkpoint (and one of the
//!   hint store) hard-linked into `<data_dir>/snapshots/<id>/`: instant,
//!   crash-consistent, no copy, and it survives compaction.
//! - [`upload`]: a backup uploads a snapshot's files to an object store
//!   ([`target`]) incrementally — a file whose name and SHA-256 are already
//!   stored is not uploaded again — then a manifest per node per backup id
//!   ([`manifest`]) naming the files and the node's ring state. A cluster
//!   backup is the set of node backups under one id.
//! - [`verify`]: every object a backup's manifests name is read back and
//!   checked against its size and SHA-256.
//! - [`restore`]: every node's files are downloaded (and verified), opened
//!   read-only, merged key by key (the union of all replicas' copies is the
//!   cluster's data) and loaded through [`load`] into each key's *current*
//!   replicas with the normal record merge — so any backup restores into
//!   any topology.
//! - [`prune`]: retention (keep last K, max age) and garbage collection of
//!   file objects no manifest names.
//!
//! [`Backups`] is the node's side: the Admin RPCs, progress and metrics.

pub mod load;
pub mod manifest;
pub mod metrics;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod snapshot;
pub mod target;
pub mod upload;
pub mod verify;

mod service;

use std::path::PathBuf;

pub use manifest::{ManifestFile, NodeManifest};
pub use metrics::BackupMetrics;
pub use prune::{PruneReport, Retention};
pub use restore::{RestoreReport, Sink};
pub use service::{Backups, Options, retention_of, verify_response};
pub use snapshot::SnapshotInfo;
pub use target::Target;
pub use verify::{Problem, VerifyReport};

/// Default upload rate of a backup (bytes per second).
pub const DEFAULT_RATE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("object store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {object}: {source}")]
    Object {
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error("backup {backup_id} not found at {url} (no manifests under backups/{backup_id}/)")]
    NotFound { backup_id: String, url: String },
    #[error("manifest {object} is not a ringkv backup manifest: {why}")]
    BadManifest { object: String, why: String },
    /// Verification failed: every object named is missing or corrupt.
    #[error("backup {backup_id} does not verify: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Unverified {
        backup_id: String,
        problems: Vec<Problem>,
    },
    #[error("snapshot {0} not found")]
    NoSnapshot(String),
    #[error("snapshot {0} already exists")]
    SnapshotExists(String),
    #[error("local file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage engine: {0}")]
    Engine(#[from] ringkv_engine::Error),
    #[error(transparent)]
    Storage(#[from] crate::replica::StorageError),
    /// Loading records into the cluster failed (after retries).
    #[error("loading records: {0}")]
    Load(String),
    #[error("{0} is already running")]
    Busy(&'static str),
    #[error("background task failed: {0}")]
    Task(String),
}

impl BackupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<BackupError> for tonic::Status {
    fn from(e: BackupError) -> Self {
        let msg = e.to_string();
        match e {
            BackupError::Invalid { .. } => tonic::Status::invalid_argument(msg),
            BackupError::NotFound { .. } | BackupError::NoSnapshot(_) => {
                tonic::Status::not_found(msg)
            }
            BackupError::SnapshotExists(_) => tonic::Status::already_exists(msg),
            BackupError::BadManifest { .. } | BackupError::Unverified { .. } => {
                tonic::Status::data_loss(msg)
            }
            BackupError::Busy(_) => tonic::Status::failed_precondition(msg),
            BackupError::Store { .. } | BackupError::Object { .. } | BackupError::Load(_) => {
                tonic::Status::unavailable(msg)
            }
            _ => tonic::Status::internal(msg),
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
