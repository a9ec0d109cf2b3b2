//! The read path over a snapshot: point lookups and the `Scan` iterator.

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::MAX_KEY_BYTES;
use crate::cache::BlockCache;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::iter::{LevelSource, MemSource, Merge, Source};
use crate::sst::bloom;
use crate::sst::table::{Probe, TableIter};
use crate::version::SuperVersion;

use super::Cached;

/// The live value of `key` in `sv` at sequence `seq`, expiry judged at `now`.
pub(crate) fn lookup_in(
    sv: &SuperVersion,
    seq: u64,
    cache: &BlockCache,
    dir: &Path,
    now: u64,
    key: &[u8],
    io: bool,
) -> Result<Cached> {
    if key.len() > MAX_KEY_BYTES {
        return Ok(Cached::Value(None));
    }
    let mut buf = Vec::with_capacity(key.len() + 8);
    for mem in sv.memtables() {
        if let Some(v) = mem.get(key, seq, &mut buf, |e| {
            Entry::decode(e)
                .and_then(|e| e.live_value(now))
                .map(<[u8]>::to_vec)
        }) {
            return Ok(Cached::Value(v));
        }
    }
    // Found(None): an entry that does not decode (bytes that passed their
    // checksum but are not ours — reported, never served).
    let found = sv.version.get(cache, key, bloom::hash(key), io, |e| {
        Entry::decode(e).map(|entry| entry.live_value(now).map(<[u8]>::to_vec))
    })?;
    match found {
        Probe::Found(Some(value)) => Ok(Cached::Value(value)),
        Probe::Found(None) => Err(Error::corruption(
            dir,
            0,
            format!("undecodable stored entry for key {key:?}"),
        )),
        Probe::Absent => Ok(Cached::Value(None)),
        Probe::NeedsIo => Ok(Cached::NeedsIo),
    }
}

/// Iterator over a snapshot; yields `(key, value)` in key order. Owns what
/// it reads (tables stay on disk while it lives), so it can outlive borrows
/// of the `Db` and move between threads.
pub struct Scan {
    merge: Merge,
    end: Bound<Vec<u8>>,
    now: u64,
    dir: PathBuf,
    pending: Option<Error>,
    done: bool,
    _sv: Arc<SuperVersion>,
}

impl Scan {
    /// A scan of `range` over the memtables and tables of `sv`, seeing
    /// sequence numbers up to `seq`, expiry judged at `now`.
    pub(crate) fn new<K: AsRef<[u8]>, R: RangeBounds<K>>(
        sv: Arc<SuperVersion>,
        seq: u64,
        cache: &Arc<BlockCache>,
        dir: &Path,
        now: u64,
        range: R,
    ) -> Result<Scan> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for m in sv.memtables() {
            sources.push(Box::new(MemSource::new(Arc::clone(m), seq)));
        }
        for f in &sv.version.levels[0] {
            sources.push(Box::new(TableIter::new(
                Arc::clone(f),
                Arc::clone(cache),
                true,
            )));
        }
        for level in &sv.version.levels[1..] {
            if !level.is_empty() {
                sources.push(Box::new(LevelSource::new(
                    level.clone(),
                    Arc::clone(cache),
                    true,
                )));
            }
        }
        let mut merge = Merge::new(sources);
        match range.start_bound() {
            Bound::Included(k) => merge.seek(k.as_ref())?,
            Bound::Excluded(k) => {
                merge.seek(k.as_ref())?;
                if merge.valid() && merge.key() == k.as_ref() {
                    merge.next()?;
                }
            }
            Bound::Unbounded => merge.seek_to_first()?,
        }
        let end = match range.end_bound() {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(Scan {
            merge,
            end,
            now,
            dir: dir.to_path_buf(),
            pending: None,
            done: false,
            _sv: sv,
        })
    }

    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
            Bound::Unbounded => false,
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        while !self.done {
            if !self.merge.valid() || self.past_end(self.merge.key()) {
                self.done = true;
                return None;
            }
            let item = match Entry::decode(self.merge.value()) {
                None => Some(Err(Error::corruption(
                    &self.dir,
                    0,
                    format!("undecodable stored entry for key {:?}", self.merge.key()),
                ))),
                Some(e) => e
                    .live_value(self.now)
                    .map(|v| Ok((self.merge.key().to_vec(), v.to_vec()))),
            };
            if let Err(e) = self.merge.next() {
                self.pending = Some(e);
            }
            if let Some(Err(_)) = &item {
                self.done = true;
            }
            if item.is_some() {
                return item;
            }
            if let Some(e) = self.pending.take() {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }
}
