//! The block cache: decoded data, index and filter blocks under one fixed
//! memory budget (S3-FIFO eviction from `quick_cache`). Index and filter
//! blocks live here too, rather than pinned per table, so the engine's memory
//! stays bounded however much data it holds.

use std::sync::Arc;

use crate::sst::block::Block;
use crate::sst::bloom::Bloom;

#[derive(Clone, Debug)]
pub(crate) enum Cached {
    Block(Arc<Block>),
    Bloom(Arc<Bloom>),
}

impl Cached {
    fn memory(&self) -> usize {
        match self {
            Cached::Block(b) => b.memory(),
            Cached::Bloom(b) => b.memory(),
        }
    }
}

#[derive(Clone, Debug)]
struct Weigh;

impl quick_cache::Weighter<(u64, u64), Cached> for Weigh {
    fn weight(&self, _key: &(u64, u64), val: &Cached) -> u64 {
        val.memory() as u64 + 32
    }
}

/// Keyed by (table file number, block offset): file numbers are never reused.
#[derive(Debug)]
pub(crate) struct BlockCache {
    inner: Option<quick_cache::sync::Cache<(u64, u64), Cached, Weigh>>,
}

impl BlockCache {
    pub(crate) fn new(capacity_bytes: usize) -> BlockCache {
        let inner = (capacity_bytes > 0).then(|| {
            // Estimated item count only sizes the hash table up front.
            let items = (capacity_bytes / 4096).clamp(16, 1 << 20);
            quick_cache::sync::Cache::with_weighter(items, capacity_bytes as u64, Weigh)
        });
        BlockCache { inner }
    }

    /// Look the block up, loading (and, if `fill`, inserting) it on a miss.
    pub(crate) fn get_or_load<E>(
        &self,
        key: (u64, u64),
        fill: bool,
        load: impl FnOnce() -> Result<Cached, E>,
    ) -> Result<Cached, E> {
        match &self.inner {
            Some(c) if fill => c.get_or_insert_with(&key, load),
            Some(c) => match c.get(&key) {
                Some(v) => Ok(v),
                None => load(),
            },
            None => load(),
        }
    }

    /// The cached entry, without loading anything.
    pub(crate) fn peek(&self, key: (u64, u64)) -> Option<Cached> {
        self.inner.as_ref()?.get(&key)
    }

    pub(crate) fn used_bytes(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weight())
    }
}
