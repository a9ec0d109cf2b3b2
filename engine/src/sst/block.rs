//! Sorted key/value blocks with prefix-compressed keys and restart points
//! (the LevelDB layout):
//!
//! ```text
//! entry*  restart_offset:u32*  restart_count:u32
//! entry = shared:varint unshared:varint value_len:varint key_suffix value
//! ```
//! Every `restart_interval`-th key is stored whole, so a seek binary-searches
//! the restarts and then scans at most that many entries. Data blocks use 16
//! (prefix compression); index blocks use 1 (a pure binary search, as
//! RocksDB and fjall do, since every lookup goes through the index). Decoding is
//! bounds-checked: bytes from disk that are not a valid block give an error,
//! never a panic.

use std::sync::Arc;

use crate::coding::{get_varint, put_varint};

/// Restart interval of data blocks.
pub(crate) const DATA_RESTART_INTERVAL: usize = 16;
/// Restart interval of index blocks.
pub(crate) const INDEX_RESTART_INTERVAL: usize = 1;

#[derive(Debug)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    counter: usize,
    last_key: Vec<u8>,
    restart_interval: usize,
}

impl BlockBuilder {
    pub(crate) fn new(restart_interval: usize) -> BlockBuilder {
        BlockBuilder {
            buf: Vec::new(),
            restarts: Vec::new(),
            counter: 0,
            last_key: Vec::new(),
            restart_interval: restart_interval.max(1),
        }
    }

    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter.is_multiple_of(self.restart_interval) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counter == 0
    }

    pub(crate) fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub(crate) fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Finish the block, returning its bytes, and reset the builder.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.counter = 0;
        self.last_key.clear();
        out
    }
}

/// A decoded (uncompressed, checksum-verified) block.
#[derive(Debug)]
pub(crate) struct Block {
    data: Vec<u8>,
    restarts_at: usize,
    num_restarts: usize,
}

/// The block's bytes do not form a valid block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadBlock;

impl Block {
    pub(crate) fn new(data: Vec<u8>) -> Result<Block, BadBlock> {
        let n = data.len();
        if n < 4 {
            return Err(BadBlock);
        }
        let num_restarts =
            u32::from_le_bytes(data[n - 4..].try_into().map_err(|_| BadBlock)?) as usize;
        let restarts_len = num_restarts.checked_mul(4).ok_or(BadBlock)?;
        let restarts_at = (n - 4).checked_sub(restarts_len).ok_or(BadBlock)?;
        // An empty block has no restarts; a non-empty one starts with one at 0.
        if (num_restarts == 0) != (restarts_at == 0) {
            return Err(BadBlock);
        }
        let b = Block {
            data,
            restarts_at,
            num_restarts,
        };
        for i in 0..num_restarts {
            if b.restart(i) >= restarts_at || (i == 0 && b.restart(0) != 0) {
                return Err(BadBlock);
            }
        }
        Ok(b)
    }

    pub(crate) fn memory(&self) -> usize {
        self.data.capacity() + std::mem::size_of::<Block>()
    }

    fn restart(&self, i: usize) -> usize {
        let at = self.restarts_at + 4 * i;
        u32::from_le_bytes([
            self.data[at],
            self.data[at + 1],
            self.data[at + 2],
            self.data[at + 3],
        ]) as usize
    }

    /// The full key stored at restart point `i` (restart entries share no prefix).
    fn restart_key(&self, i: usize) -> Result<&[u8], BadBlock> {
        let end = self.restarts_at;
        let at = self.restart(i);
        let mut p = self.data.get(at..end).ok_or(BadBlock)?;
        let shared = get_varint(&mut p).ok_or(BadBlock)?;
        let unshared = get_varint(&mut p).ok_or(BadBlock)? as usize;
        get_varint(&mut p).ok_or(BadBlock)?;
        if shared != 0 {
            return Err(BadBlock);
        }
        p.get(..unshared).ok_or(BadBlock)
    }

    pub(crate) fn iter(self: &Arc<Self>) -> BlockIter {
        BlockIter {
            block: Arc::clone(self),
            next: 0,
            key: Vec::new(),
            value: 0..0,
            valid: false,
        }
    }
}

/// Cursor over a block. After an error (`Err(BadBlock)`) it is invalid.
#[derive(Debug)]
pub(crate) struct BlockIter {
    block: Arc<Block>,
    /// Offset of the entry after the current one.
    next: usize,
    key: Vec<u8>,
    value: std::ops::Range<usize>,
    valid: bool,
}

impl BlockIter {
    pub(crate) fn valid(&self) -> bool {
        self.valid
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.block.data[self.value.clone()]
    }

    /// Decode the entry at `self.next`; at the end, become invalid.
    pub(crate) fn advance(&mut self) -> Result<(), BadBlock> {
        let end = self.block.restarts_at;
        if self.next >= end {
            self.valid = false;
            return Ok(());
        }
        let res = self.decode_at(self.next, end);
        if res.is_err() {
            self.valid = false;
        }
        res
    }

    fn decode_at(&mut self, at: usize, end: usize) -> Result<(), BadBlock> {
        let data = &self.block.data[..end];
        let mut p = data.get(at..).ok_or(BadBlock)?;
        let shared = get_varint(&mut p).ok_or(BadBlock)? as usize;
        let unshared = get_varint(&mut p).ok_or(BadBlock)? as usize;
        let vlen = get_varint(&mut p).ok_or(BadBlock)? as usize;
        if shared > self.key.len() || (at == 0 && shared != 0) {
            return Err(BadBlock);
        }
        let key_at = end - p.len();
        let value_at = key_at.checked_add(unshared).ok_or(BadBlock)?;
        let value_end = value_at.checked_add(vlen).ok_or(BadBlock)?;
        if value_end > end {
            return Err(BadBlock);
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(&data[key_at..value_at]);
        self.value = value_at..value_end;
        self.next = value_end;
        self.valid = true;
        Ok(())
    }

    pub(crate) fn seek_to_first(&mut self) -> Result<(), BadBlock> {
        self.key.clear();
        self.next = 0;
        self.advance()
    }

    /// Position at the first key `>= target`.
    pub(crate) fn seek(&mut self, target: &[u8]) -> Result<(), BadBlock> {
        // Binary search for the last restart whose key is < target, comparing
        // restart keys in place (they are stored whole).
        let (mut lo, mut hi) = (0usize, self.block.num_restarts);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.block.restart_key(mid)? < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.key.clear();
        self.next = if self.block.num_restarts == 0 {
            0
        } else {
            self.block.restart(lo)
        };
        loop {
            self.advance()?;
            if !self.valid || self.key.as_slice() >= target {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(entries: &[(Vec<u8>, Vec<u8>)]) -> Arc<Block> {
        // Both intervals in use: vary by entry count.
        let mut b = BlockBuilder::new(if entries.len().is_multiple_of(2) {
            DATA_RESTART_INTERVAL
        } else {
            INDEX_RESTART_INTERVAL
        });
        for (k, v) in entries {
            b.add(k, v);
        }
        Arc::new(Block::new(b.finish()).unwrap())
    }

    proptest! {
        #[test]
        fn seek_finds_lower_bound(
            keys in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 0..6), 0..60),
            target in proptest::collection::vec(0u8..4, 0..6),
        ) {
            let entries: Vec<_> = keys.iter().map(|k| (k.clone(), k.repeat(2))).collect();
            let block = build(&entries);
            let mut it = block.iter();
            it.seek(&target).unwrap();
            let want = entries.iter().find(|(k, _)| k.as_slice() >= target.as_slice());
            match want {
                Some((k, v)) => {
                    prop_assert!(it.valid());
                    prop_assert_eq!(it.key(), k.as_slice());
                    prop_assert_eq!(it.value(), v.as_slice());
                }
                None => prop_assert!(!it.valid()),
            }
            // A full scan returns everything in order.
            let mut it = block.iter();
            it.seek_to_first().unwrap();
            let mut got = Vec::new();
            while it.valid() {
                got.push((it.key().to_vec(), it.value().to_vec()));
                it.advance().unwrap();
            }
            prop_assert_eq!(got, entries);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), target in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(block) = Block::new(bytes) {
                let block = Arc::new(block);
                let mut it = block.iter();
                let _ = it.seek(&target);
                let mut it = block.iter();
                if it.seek_to_first().is_ok() {
                    for _ in 0..300 {
                        if !it.valid() || it.advance().is_err() { break; }
                    }
                }
            }
        }
    }
}
