//! A version: the set of live tables, by level. L0 tables may overlap and are
//! kept newest first; every deeper level holds non-overlapping tables sorted by
//! key. Versions are immutable and shared (`Arc`); readers and scans pin the
//! version they started with, so a table file is deleted only when no version
//! names it any more *and* the manifest has dropped it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::BlockCache;
use crate::error::Result;
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::sst::table::{FileMeta, Probe, Table};

pub(crate) const NUM_LEVELS: usize = 7;

pub(crate) fn table_name(number: u64) -> String {
    format!("{number:06}.sst")
}

pub(crate) fn wal_name(number: u64) -> String {
    format!("{number:06}.log")
}

#[derive(Debug)]
pub(crate) struct TableFile {
    pub meta: FileMeta,
    pub table: Table,
    /// Set once the manifest no longer names this file; the last reference
    /// to go deletes it.
    obsolete: AtomicBool,
}

impl TableFile {
    pub(crate) fn open(dir: &Path, meta: FileMeta) -> Result<Arc<TableFile>> {
        let table = Table::open(&dir.join(table_name(meta.number)), meta.number)?;
        Ok(Arc::new(TableFile {
            meta,
            table,
            obsolete: AtomicBool::new(false),
        }))
    }

    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.meta.smallest.as_slice() <= key && key <= self.meta.largest.as_slice()
    }

    pub(crate) fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.meta.smallest.as_slice() <= hi && lo <= self.meta.largest.as_slice()
    }
}

impl AsRef<Table> for Arc<TableFile> {
    fn as_ref(&self) -> &Table {
        &self.table
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst) {
            // Best effort: a leftover file is removed as an orphan at next open.
            let _ = std::fs::remove_file(self.table.path());
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Version {
    pub levels: [Vec<Arc<TableFile>>; NUM_LEVELS],
}

impl Version {
    /// A new version with `edit` applied; added tables come from `opened`.
    pub(crate) fn apply(&self, edit: &VersionEdit, opened: &[Arc<TableFile>]) -> Version {
        let mut v = self.clone();
        for (level, number) in &edit.deleted {
            v.levels[*level].retain(|f| f.meta.number != *number);
        }
        for (level, meta) in &edit.added {
            if let Some(f) = opened.iter().find(|f| f.meta.number == meta.number) {
                v.levels[*level].push(Arc::clone(f));
            }
        }
        // L0: newest (highest number) first; deeper levels by key.
        v.levels[0].sort_by_key(|f| std::cmp::Reverse(f.meta.number));
        for l in &mut v.levels[1..] {
            l.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }
        v
    }

    pub(crate) fn files(&self) -> impl Iterator<Item = (usize, &Arc<TableFile>)> {
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(l, fs)| fs.iter().map(move |f| (l, f)))
    }

    pub(crate) fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.meta.size).sum()
    }

    /// Deepest level holding any table.
    pub(crate) fn deepest_level(&self) -> Option<usize> {
        (0..NUM_LEVELS).rev().find(|&l| !self.levels[l].is_empty())
    }

    /// Tables of `level` overlapping `[lo, hi]`.
    pub(crate) fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<TableFile>> {
        self.levels[level]
            .iter()
            .filter(|f| f.overlaps(lo, hi))
            .cloned()
            .collect()
    }

    /// `f` applied to the newest stored entry for `key` in the tables. With
    /// `io` false, `NeedsIo` instead of reading a block from disk.
    pub(crate) fn get<R>(
        &self,
        cache: &BlockCache,
        key: &[u8],
        hash: u64,
        io: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Probe<R>> {
        let mut f = Some(f);
        let mut apply = |e: &[u8]| (f.take().expect("called once"))(e);
        for t in &self.levels[0] {
            if t.contains(key) {
                match t.table.probe(cache, key, hash, true, io, &mut apply)? {
                    Probe::Absent => {}
                    found => return Ok(found),
                }
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.meta.largest.as_slice() < key);
            if let Some(t) = level.get(i)
                && t.meta.smallest.as_slice() <= key
            {
                match t.table.probe(cache, key, hash, false, io, &mut apply)? {
                    Probe::Absent => {}
                    found => return Ok(found),
                }
            }
        }
        Ok(Probe::Absent)
    }
}

/// What a reader needs: memtables and tables at one instant.
#[derive(Debug)]
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    /// Immutable memtables, newest first.
    pub imm: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

impl SuperVersion {
    pub(crate) fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.mem).chain(self.imm.iter())
    }
}
