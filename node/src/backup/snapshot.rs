//! Local snapshots: `<data_dir>/snapshots/<id>/` holds a checkpoint of the
//! engine (`engine/`) and of the hint store (`hints/` — hints are
//! acknowledged writes their owner has not taken yet, so a backup without
//! them could miss some), and `SNAPSHOT.json` with the node's ring state.
//! Built under `.<id>.tmp` and renamed: a snapshot directory is complete or
//! absent. Tables are hard links, so a snapshot costs no copy until
//! compaction replaces the live tables it shares.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BackupError;
use super::target::validate_id;
use crate::replica::Replica;

pub const META_FILE: &str = "SNAPSHOT.json";

/// What `SNAPSHOT.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: String,
    pub node_id: String,
    pub zone: String,
    pub tokens: Vec<u64>,
    pub created_unix_ms: u64,
    pub engine_last_sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub created_unix_ms: u64,
    pub files: u32,
    pub bytes: u64,
    pub path: PathBuf,
}

impl SnapshotInfo {
    pub fn to_proto(&self) -> ringkv_proto::v1::SnapshotInfo {
        ringkv_proto::v1::SnapshotInfo {
            id: self.id.clone(),
            created_unix_ms: self.created_unix_ms,
            files: self.files,
            bytes: self.bytes,
            path: self.path.display().to_string(),
        }
    }
}

/// One file of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// `engine/000012.sst`
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The snapshots of one node.
#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    pub fn new(data_dir: &Path) -> Snapshots {
        Snapshots {
            root: data_dir.join("snapshots"),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Takes snapshot `id` (blocking: flushes the engine and hint store).
    pub fn create(
        &self,
        replica: &Replica,
        id: &str,
        mut meta: SnapshotMeta,
    ) -> Result<SnapshotInfo, BackupError> {
        validate_id("snapshot id", id)?;
        let dir = self.dir(id);
        if dir.exists() {
            return Err(BackupError::SnapshotExists(id.to_string()));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| BackupError::io(&self.root, e))?;
        let tmp = self.root.join(format!(".{id}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        let built = (|| {
            let cp = replica.store().checkpoint_blocking(&tmp.join("engine"))?;
            replica.hints().checkpoint_blocking(&tmp.join("hints"))?;
            meta.id = id.to_string();
            meta.engine_last_sequence = cp.last_sequence;
            let path = tmp.join(META_FILE);
            let json = serde_json::to_vec_pretty(&meta).expect("serializes");
            std::fs::write(&path, json).map_err(|e| BackupError::io(&path, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| BackupError::io(&tmp, e))
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dir).map_err(|e| BackupError::io(&dir, e))?;
        let _ = std::fs::File::open(&self.root).and_then(|f| f.sync_all());
        self.info(id)
    }

    /// The ring state and sequence number a snapshot recorded.
    pub fn meta(&self, id: &str) -> Result<SnapshotMeta, BackupError> {
        validate_id("snapshot id", id)?;
        let path = self.dir(id).join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NoSnapshot(id.to_string()));
            }
            Err(e) => return Err(BackupError::io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            BackupError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Every file a backup uploads: the engine and hint checkpoints.
    pub fn files(&self, id: &str) -> Result<Vec<SnapshotFile>, BackupError> {
        validate_id("snapshot id", id)?;
        let dir = self.dir(id);
        if !dir.join(META_FILE).exists() {
            return Err(BackupError::NoSnapshot(id.to_string()));
        }
        let mut out = Vec::new();
        for sub in super::manifest::DIRS {
            let d = dir.join(sub);
            for entry in std::fs::read_dir(&d).map_err(|e| BackupError::io(&d, e))? {
                let entry = entry.map_err(|e| BackupError::io(&d, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // A read-only open of a checkpoint writes nothing, but a
                // full open would leave a LOCK and logs: never back those up.
                if name == "LOCK" || name.starts_with('.') {
                    continue;
                }
                let size = entry
                    .metadata()
                    .map_err(|e| BackupError::io(entry.path(), e))?
                    .len();
                out.push(SnapshotFile {
                    rel: format!("{sub}/{name}"),
                    path: entry.path(),
                    size,
                });
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    pub fn info(&self, id: &str) -> Result<SnapshotInfo, BackupError> {
        let meta = self.meta(id)?;
        let files = self.files(id)?;
        Ok(SnapshotInfo {
            id: id.to_string(),
            created_unix_ms: meta.created_unix_ms,
            files: files.len() as u32,
            bytes: files.iter().map(|f| f.size).sum(),
            path: self.dir(id),
        })
    }

    /// Every complete snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, BackupError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| BackupError::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_id("snapshot id", &name).is_err() {
                continue;
            }
            match self.info(&name) {
                Ok(i) => out.push(i),
                Err(BackupError::NoSnapshot(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        Ok(out)
    }

    /// Deletes snapshot `id`; false if there was none.
    pub fn delete(&self, id: &str) -> Result<bool, BackupError> {
        validate_id("snapshot id", id)?;
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackupError::io(&dir, e)),
        }
    }
}
