//! Checkpoints: a crash-consistent copy of the database that costs no copy
//! (RocksDB's idea). The memtable is flushed, then every live table is
//! hard-linked into the checkpoint directory next to a fresh manifest that
//! names exactly those tables. Tables are immutable, so a link is as good as
//! a copy; when compaction later obsoletes a table, the live directory drops
//! its name and the checkpoint keeps the data.
//!
//! The checkpoint holds a prefix of the database's history: the commit
//! thread rotates a memtable only when every write appended to it has been
//! committed, and memtables are flushed oldest first, so the tables of any
//! version hold every write up to some sequence number and none after it.
//! It is built in `<dir>.tmp` and renamed into place, so `dir` either does
//! not exist or is complete, whatever crashes meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::db::{Db, write_snapshot_manifest};
use crate::error::{Error, IoContext, Result};
use crate::manifest::sync_dir;
use crate::version::table_name;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// File name inside the checkpoint directory.
    pub name: String,
    pub size: u64,
}

/// What [`Db::checkpoint`] made.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Every file of the checkpoint: its tables, manifest and `CURRENT`.
    pub files: Vec<CheckpointFile>,
    /// Number of tables (and their bytes) that were hard links; the rest
    /// had to be copied (another filesystem).
    pub linked_tables: usize,
    pub copied_tables: usize,
    /// Sequence number of the newest write the checkpoint may hold.
    pub last_sequence: u64,
}

impl Checkpoint {
    /// Bytes of all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Hard-links `from` to `to`; copies (and syncs) when they are on different
/// filesystems. Returns whether it linked.
fn link_or_copy(from: &Path, to: &Path) -> Result<bool> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e)
            if e.kind() == std::io::ErrorKind::CrossesDevices
                || e.kind() == std::io::ErrorKind::Unsupported
                || e.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            std::fs::copy(from, to).ctx(to)?;
            std::fs::File::open(to).and_then(|f| f.sync_all()).ctx(to)?;
            Ok(false)
        }
        Err(e) => Err(Error::io(to, e)),
    }
}

fn temp_dir_of(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("checkpoint path {dir:?} has no name")))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(dir.with_file_name(tmp))
}

impl Db {
    /// Makes a checkpoint in `dir`, which must not exist (its parent must):
    /// flushes, then hard-links every live table and writes a manifest
    /// naming them. The checkpoint opens as a database of its own
    /// ([`Db::open`], or read-only with [`crate::ReadOnlyDb`]) holding every
    /// write acknowledged before this call and, of later ones, a prefix.
    /// Writes may continue meanwhile. Costs no copy when `dir` is on the
    /// database's filesystem.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref();
        if dir.exists() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint directory {} already exists",
                dir.display()
            )));
        }
        let tmp = temp_dir_of(dir)?;
        self.flush()?;
        let inner = &*self.inner;
        // The version pins its tables: none is deleted while we link it.
        let (version, next_file, last_seq) = {
            let st = inner.state.lock();
            if let Some(e) = &st.bg_error {
                return Err(Error::Background(e.to_string()));
            }
            (
                Arc::clone(&st.version),
                st.next_file,
                inner.last_seq.load(Ordering::Acquire),
            )
        };
        // A leftover of a checkpoint interrupted by a crash.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).ctx(&tmp)?;
        }
        std::fs::create_dir(&tmp).ctx(&tmp)?;
        let built = (|| {
            let mut files = Vec::new();
            let (mut linked, mut copied) = (0, 0);
            for (_, f) in version.files() {
                let name = table_name(f.meta.number);
                if link_or_copy(&inner.dir.join(&name), &tmp.join(&name))? {
                    linked += 1;
                } else {
                    copied += 1;
                }
                files.push(CheckpointFile {
                    name,
                    size: f.meta.size,
                });
            }
            // No log files: every write the checkpoint holds is in a table.
            // Log numbers from `next_file` on would be replayed; there are none.
            drop(write_snapshot_manifest(
                &tmp,
                next_file,
                &version,
                next_file,
                next_file + 1,
                last_seq,
            )?);
            for entry in std::fs::read_dir(&tmp).ctx(&tmp)? {
                let entry = entry.ctx(&tmp)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("MANIFEST-") || name == "CURRENT" {
                    let size = entry.metadata().ctx(&entry.path())?.len();
                    files.push(CheckpointFile { name, size });
                }
            }
            sync_dir(&tmp)?;
            Ok((files, linked, copied))
        })();
        let (mut files, linked, copied) = match built {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, dir).ctx(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        files.sort_by(|a: &CheckpointFile, b| a.name.cmp(&b.name));
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            linked_tables: linked,
            copied_tables: copied,
            last_sequence: last_seq,
        })
    }
}
