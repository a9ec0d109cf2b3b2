//! Internal cursors and the k-way merge used by scans and compactions.
//!
//! Every source yields each user key at most once (its newest version in
//! that source). Sources are ordered newest first; on equal keys the merge
//! takes the newest source and skips the others.

use std::ops::Bound;
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::error::Result;
use crate::memtable::Memtable;
use crate::sst::table::TableIter;
use crate::version::TableFile;

pub(crate) trait Source: Send {
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    /// The encoded entry.
    fn value(&self) -> &[u8];
    fn next(&mut self) -> Result<()>;
    fn seek(&mut self, target: &[u8]) -> Result<()>;
    fn seek_to_first(&mut self) -> Result<()>;
}

/// Cursor over a memtable at a snapshot sequence number.
pub(crate) struct MemSource {
    mem: Arc<Memtable>,
    seq: u64,
    cur: Option<(Vec<u8>, Vec<u8>)>,
}

impl MemSource {
    pub(crate) fn new(mem: Arc<Memtable>, seq: u64) -> Self {
        MemSource {
            mem,
            seq,
            cur: None,
        }
    }
}

impl Source for MemSource {
    fn valid(&self) -> bool {
        self.cur.is_some()
    }
    fn key(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| &c.0)
    }
    fn value(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| &c.1)
    }
    fn next(&mut self) -> Result<()> {
        if let Some((k, _)) = self.cur.take() {
            self.cur = self.mem.seek(Bound::Excluded(&k), self.seq);
        }
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.cur = self.mem.seek(Bound::Included(target), self.seq);
        Ok(())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.cur = self.mem.seek(Bound::Unbounded, self.seq);
        Ok(())
    }
}

impl Source for TableIter<Arc<TableFile>> {
    fn valid(&self) -> bool {
        TableIter::valid(self)
    }
    fn key(&self) -> &[u8] {
        TableIter::key(self)
    }
    fn value(&self) -> &[u8] {
        TableIter::value(self)
    }
    fn next(&mut self) -> Result<()> {
        TableIter::next(self)
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        TableIter::seek(self, target)
    }
    fn seek_to_first(&mut self) -> Result<()> {
        TableIter::seek_to_first(self)
    }
}

/// Concatenation of one level's non-overlapping, sorted tables; opens each
/// table's cursor only when it gets there.
pub(crate) struct LevelSource {
    files: Vec<Arc<TableFile>>,
    cache: Arc<BlockCache>,
    fill: bool,
    idx: usize,
    cur: Option<TableIter<Arc<TableFile>>>,
}

impl LevelSource {
    pub(crate) fn new(files: Vec<Arc<TableFile>>, cache: Arc<BlockCache>, fill: bool) -> Self {
        LevelSource {
            files,
            cache,
            fill,
            idx: 0,
            cur: None,
        }
    }

    fn open(&mut self, idx: usize) {
        self.idx = idx;
        self.cur = self
            .files
            .get(idx)
            .map(|f| TableIter::new(Arc::clone(f), Arc::clone(&self.cache), self.fill));
    }

    fn skip_exhausted(&mut self) -> Result<()> {
        while self.cur.as_ref().is_some_and(|c| !c.valid()) {
            self.open(self.idx + 1);
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_first()?;
            }
        }
        Ok(())
    }
}

impl Source for LevelSource {
    fn valid(&self) -> bool {
        self.cur.as_ref().is_some_and(|c| c.valid())
    }
    fn key(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| c.key())
    }
    fn value(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| c.value())
    }
    fn next(&mut self) -> Result<()> {
        if let Some(c) = self.cur.as_mut() {
            c.next()?;
        }
        self.skip_exhausted()
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let i = self
            .files
            .partition_point(|f| f.meta.largest.as_slice() < target);
        self.open(i);
        if let Some(c) = self.cur.as_mut() {
            c.seek(target)?;
        }
        self.skip_exhausted()
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.open(0);
        if let Some(c) = self.cur.as_mut() {
            c.seek_to_first()?;
        }
        self.skip_exhausted()
    }
}

/// K-way merge over sources ordered newest first, as a binary min-heap of
/// source indices keyed by (key, index).
pub(crate) struct Merge {
    sources: Vec<Box<dyn Source>>,
    heap: Vec<usize>,
    key: Vec<u8>,
}

impl Merge {
    pub(crate) fn new(sources: Vec<Box<dyn Source>>) -> Self {
        Merge {
            sources,
            heap: Vec::new(),
            key: Vec::new(),
        }
    }

    fn less(&self, a: usize, b: usize) -> bool {
        match self.sources[a].key().cmp(self.sources[b].key()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => a < b,
            std::cmp::Ordering::Greater => false,
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    fn rebuild(&mut self) {
        self.heap = (0..self.sources.len())
            .filter(|&i| self.sources[i].valid())
            .collect();
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    pub(crate) fn seek(&mut self, target: &[u8]) -> Result<()> {
        for s in &mut self.sources {
            s.seek(target)?;
        }
        self.rebuild();
        Ok(())
    }

    pub(crate) fn seek_to_first(&mut self) -> Result<()> {
        for s in &mut self.sources {
            s.seek_to_first()?;
        }
        self.rebuild();
        Ok(())
    }

    pub(crate) fn valid(&self) -> bool {
        !self.heap.is_empty()
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.sources[self.heap[0]].key()
    }

    pub(crate) fn value(&self) -> &[u8] {
        self.sources[self.heap[0]].value()
    }

    /// Advance past the current key in every source that has it.
    pub(crate) fn next(&mut self) -> Result<()> {
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        self.key.clear();
        self.key.extend_from_slice(self.sources[top].key());
        while let Some(&top) = self.heap.first() {
            if self.sources[top].key() != self.key.as_slice() {
                break;
            }
            self.sources[top].next()?;
            if !self.sources[top].valid() {
                let last = self.heap.len() - 1;
                self.heap.swap(0, last);
                self.heap.pop();
            }
            self.sift_down(0);
        }
        Ok(())
    }
}
