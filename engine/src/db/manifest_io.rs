//! The manifest on disk: replaying it, writing snapshots, and logging edits to the file set.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::manifest::{VersionEdit, manifest_name, read_current, set_current, sync_dir};
use crate::record::{LogWriter, read_log};
use crate::sst::table::FileMeta;
use crate::version::{TableFile, Version, table_name};

use super::{Inner, State, add};

/// Rewrite the manifest as a snapshot when it grows past this.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The file set a manifest describes.
#[derive(Debug, Default)]
pub(crate) struct ManifestState {
    pub(crate) metas: Vec<(usize, FileMeta)>,
    pub(crate) next_file: u64,
    pub(crate) last_seq: u64,
    pub(crate) log_number: u64,
}

/// Replays the manifest `CURRENT` names; `None` when there is no `CURRENT`.
/// Reads only.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<ManifestState>> {
    let Some(name) = read_current(dir)? else {
        return Ok(None);
    };
    let mut st = ManifestState {
        next_file: 1,
        ..Default::default()
    };
    let path = dir.join(&name);
    let contents = match read_log(&path, |p, _| VersionEdit::decode(p).is_some()) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                0,
                format!("names missing manifest {name}"),
            ));
        }
        other => other?,
    };
    // The first record is a snapshot, durable before CURRENT named
    // this file: if it is unreadable the file set is unknown, and
    // treating it as a torn tail would make every table an orphan.
    if contents.records.is_empty() {
        return Err(Error::corruption(
            &path,
            0,
            "manifest has no readable snapshot record",
        ));
    }
    for (off, payload) in contents.payloads() {
        let edit = VersionEdit::decode(payload)
            .ok_or_else(|| Error::corruption(&path, off, "undecodable manifest edit"))?;
        for (l, n) in &edit.deleted {
            st.metas.retain(|(ml, m)| !(ml == l && m.number == *n));
        }
        st.metas.extend(edit.added);
        st.log_number = edit.log_number.unwrap_or(st.log_number);
        st.next_file = edit.next_file.unwrap_or(st.next_file);
        st.last_seq = edit.last_seq.unwrap_or(st.last_seq);
    }
    Ok(Some(st))
}

pub(crate) fn write_snapshot_manifest(
    dir: &Path,
    number: u64,
    version: &Version,
    log_number: u64,
    next_file: u64,
    last_seq: u64,
) -> Result<LogWriter> {
    let m = write_manifest_file(dir, number, version, log_number, next_file, last_seq)?;
    set_current(dir, &manifest_name(number))?;
    Ok(m)
}

/// A new manifest holding a snapshot of `version`, synced, not yet named
/// by `CURRENT`. On failure the partial file is removed.
fn write_manifest_file(
    dir: &Path,
    number: u64,
    version: &Version,
    log_number: u64,
    next_file: u64,
    last_seq: u64,
) -> Result<LogWriter> {
    let path = dir.join(manifest_name(number));
    let edit = VersionEdit {
        log_number: Some(log_number),
        next_file: Some(next_file),
        last_seq: Some(last_seq),
        added: version.files().map(|(l, f)| (l, f.meta.clone())).collect(),
        deleted: Vec::new(),
    };
    let written = LogWriter::create(&path).and_then(|mut m| {
        m.append(&edit.encode())?;
        m.sync()?;
        sync_dir(dir)?;
        Ok(m)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    written
}

impl Inner {
    /// Record an edit durably in the manifest, then install the new version.
    pub(super) fn log_and_apply(
        &self,
        st: &mut State,
        mut edit: VersionEdit,
        opened: &[Arc<TableFile>],
    ) -> Result<()> {
        if st.manifest_broken {
            self.rewrite_manifest(st)?;
        }
        edit.next_file = Some(st.next_file);
        edit.last_seq = Some(self.last_seq.load(Ordering::Relaxed));
        let payload = edit.encode();
        let logged = st
            .manifest
            .append(&payload)
            .and_then(|()| st.manifest.sync());
        if let Err(e) = logged {
            st.manifest_broken = true;
            return Err(e);
        }
        add(&self.stats.manifest_bytes, payload.len() as u64);
        let old = Arc::clone(&st.version);
        let new = old.apply(&edit, opened);
        for (level, number) in &edit.deleted {
            let moved = edit.added.iter().any(|(_, m)| m.number == *number);
            if !moved && let Some(f) = old.levels[*level].iter().find(|f| f.meta.number == *number)
            {
                f.mark_obsolete();
            }
        }
        st.version = Arc::new(new);
        if st.manifest.len() > MAX_MANIFEST_BYTES {
            // The edit is durable already; a failed rewrite is tried again
            // later (and marks the manifest broken if `CURRENT` may have
            // moved).
            let _ = self.rewrite_manifest(st);
        }
        Ok(())
    }

    /// Starts a new manifest holding a snapshot of the current version and
    /// makes it current; then deletes the old one and the orphaned tables.
    fn rewrite_manifest(&self, st: &mut State) -> Result<()> {
        let n = st.new_file();
        let log_number = st.imm.front().map_or(st.mem.wal_number, |m| m.wal_number);
        let m = write_manifest_file(
            &self.dir,
            n,
            &st.version,
            log_number,
            st.next_file,
            self.last_seq.load(Ordering::Relaxed),
        )?;
        if let Err(e) = set_current(&self.dir, &manifest_name(n)) {
            // `CURRENT` may name either file now: only a later manifest
            // named in full settles it.
            st.manifest_broken = true;
            return Err(e);
        }
        let old_path = self.dir.join(manifest_name(st.manifest_number));
        st.manifest = m;
        st.manifest_number = n;
        st.manifest_broken = false;
        let _ = std::fs::remove_file(old_path);
        for t in std::mem::take(&mut st.orphans) {
            let _ = std::fs::remove_file(self.dir.join(table_name(t)));
        }
        Ok(())
    }
}
