//! Token ranges and Merkle trees over them.
//!
//! A tree over range (start, end] has 16^levels leaves; leaf i holds the keys
//! whose token falls in the i-th equal slice of the range, so a leaf is also
//! a contiguous token sub-range (one engine scan). A leaf's hash is the
//! wrapping sum of its items' hashes (order-free, 0 when empty); a parent's
//! is the hash of its 16 children (0 when all are 0), so an empty subtree is
//! recognisable from its hash alone.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::replica::{StorageError, Store};
use crate::ring::Token;

pub const ARITY: usize = 16;
pub const MAX_LEVELS: u32 = 4;

/// Token range (start, end], wrapping at 2^64; start == end is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRange {
    pub start: Token,
    pub end: Token,
}

impl TokenRange {
    pub fn new(start: Token, end: Token) -> Self {
        TokenRange { start, end }
    }

    /// Number of tokens in the range (2^64 for the whole ring).
    pub fn width(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            self.end.wrapping_sub(self.start) as u128
        }
    }

    pub fn contains(&self, t: Token) -> bool {
        let o = t.wrapping_sub(self.start).wrapping_sub(1) as u128;
        o < self.width()
    }

    /// The range as inclusive token intervals (one, or two when it wraps).
    pub fn intervals(&self) -> Vec<(Token, Token)> {
        let (s, e) = (self.start, self.end);
        if s == e {
            vec![(0, u64::MAX)]
        } else if s < e {
            vec![(s + 1, e)]
        } else if s == u64::MAX {
            vec![(0, e)]
        } else {
            vec![(s + 1, u64::MAX), (0, e)]
        }
    }

    /// Which of `leaves` equal slices token `t` (in the range) falls in.
    pub fn bucket(&self, t: Token, leaves: usize) -> usize {
        let o = t.wrapping_sub(self.start).wrapping_sub(1) as u128;
        ((o * leaves as u128) / self.width()) as usize
    }

    /// The deepest tree whose leaves each hold at least one token (a slice
    /// of a tinier range would be empty, which a range cannot express).
    pub fn max_levels(&self) -> u32 {
        let mut l = 0;
        while l < MAX_LEVELS && (ARITY as u128).pow(l + 1) <= self.width() {
            l += 1;
        }
        l
    }

    /// Slice `i` of `leaves` as a range of its own; `leaves` must not exceed
    /// the width (see [`TokenRange::max_levels`]).
    pub fn slice(&self, i: usize, leaves: usize) -> TokenRange {
        let w = self.width();
        let at = |j: usize| {
            let a = (j as u128 * w).div_ceil(leaves as u128);
            self.start.wrapping_add(a as u64)
        };
        TokenRange::new(at(i), at(i + 1))
    }
}

/// The token of an engine key (its first 8 bytes).
pub fn engine_key_token(ekey: &[u8]) -> Token {
    let mut b = [0u8; 8];
    let n = ekey.len().min(8);
    b[..n].copy_from_slice(&ekey[..n]);
    u64::from_be_bytes(b)
}

/// Hash of one stored item; never 0, so a non-empty leaf is (all but surely)
/// not 0 either.
pub fn item_hash(ekey: &[u8], value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, xxh3_64(ekey)) | 1
}

/// How deep a tree should be for about `keys` keys: ~16 keys per leaf.
pub fn levels_for(keys: u64) -> u32 {
    let mut levels = 0;
    let mut leaves = 1u64;
    while levels < MAX_LEVELS && keys > leaves * 16 {
        levels += 1;
        leaves *= ARITY as u64;
    }
    levels
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub range: TokenRange,
    pub levels: u32,
    /// `nodes[d]` holds the 16^d hashes at depth d; `nodes[levels]` are leaves.
    pub nodes: Vec<Vec<u64>>,
    pub keys: u64,
}

impl Tree {
    pub fn root(&self) -> u64 {
        self.nodes[0][0]
    }

    pub fn leaves(&self) -> &[u64] {
        &self.nodes[self.levels as usize]
    }

    /// Builds the tree from leaf hashes.
    pub fn from_leaves(range: TokenRange, levels: u32, leaves: Vec<u64>, keys: u64) -> Tree {
        let mut nodes = vec![leaves];
        while nodes.len() <= levels as usize {
            let below = nodes.last().expect("leaves");
            let up: Vec<u64> = below
                .chunks(ARITY)
                .map(|c| {
                    if c.iter().all(|h| *h == 0) {
                        0
                    } else {
                        let mut bytes = [0u8; ARITY * 8];
                        for (i, h) in c.iter().enumerate() {
                            bytes[i * 8..i * 8 + 8].copy_from_slice(&h.to_le_bytes());
                        }
                        xxh3_64(&bytes) | 1
                    }
                })
                .collect();
            nodes.push(up);
        }
        nodes.reverse();
        Tree {
            range,
            levels,
            nodes,
            keys,
        }
    }

    /// Scans the range in `store` and builds its tree. Blocking.
    pub fn build(store: &Store, range: TokenRange, levels: u32) -> Result<Tree, StorageError> {
        let levels = levels.min(range.max_levels());
        let n = ARITY.pow(levels);
        let mut leaves = vec![0u64; n];
        let mut keys = 0u64;
        for (lo, hi) in range.intervals() {
            store.scan_tokens_blocking(lo, hi, |ek, v| {
                let b = range.bucket(engine_key_token(ek), n);
                leaves[b] = leaves[b].wrapping_add(item_hash(ek, v));
                keys += 1;
                true
            })?;
        }
        Ok(Tree::from_leaves(range, levels, leaves, keys))
    }

    /// The 16 children of each of `parents` at depth `depth`, in order.
    pub fn children(&self, depth: u32, parents: &[u32]) -> Option<Vec<u64>> {
        let below = self.nodes.get(depth as usize + 1)?;
        let mut out = Vec::with_capacity(parents.len() * ARITY);
        for &p in parents {
            let s = p as usize * ARITY;
            out.extend_from_slice(below.get(s..s + ARITY)?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_partition_the_range_and_agree_with_bucket() {
        for r in [
            TokenRange::new(10, 1000),
            TokenRange::new(u64::MAX - 50, 70),
            TokenRange::new(5, 5),
            TokenRange::new(u64::MAX, 3),
        ] {
            for leaves in [1usize, 16, 256] {
                if leaves as u128 > r.width() {
                    assert!(ARITY.pow(r.max_levels()) as u128 <= r.width());
                    continue;
                }
                let mut covered = 0u128;
                for i in 0..leaves {
                    let s = r.slice(i, leaves);
                    covered += if leaves == 1 { r.width() } else { s.width() };
                    for t in [s.start.wrapping_add(1), s.end] {
                        if s.start != s.end && r.contains(t) {
                            assert_eq!(r.bucket(t, leaves), i, "{r:?} {leaves} {i} {t}");
                        }
                    }
                }
                assert_eq!(covered, r.width(), "{r:?} {leaves}");
            }
            assert!(!r.contains(r.start) || r.start == r.end);
            assert!(r.contains(r.end));
        }
        assert_eq!(
            TokenRange::new(u64::MAX - 1, 1).intervals(),
            vec![(u64::MAX, u64::MAX), (0, 1)]
        );
    }

    #[test]
    fn trees_differ_exactly_where_leaves_differ() {
        let r = TokenRange::new(0, 0);
        let mut a = vec![0u64; 256];
        a[3] = 77;
        let mut b = a.clone();
        let ta = Tree::from_leaves(r, 2, a.clone(), 1);
        assert_eq!(ta.nodes.len(), 3);
        assert_eq!(Tree::from_leaves(r, 2, a, 1).root(), ta.root());
        b[200] = 5;
        let tb = Tree::from_leaves(r, 2, b, 2);
        assert_ne!(ta.root(), tb.root());
        let (ca, cb) = (ta.children(0, &[0]).unwrap(), tb.children(0, &[0]).unwrap());
        let diff: Vec<usize> = (0..16).filter(|&i| ca[i] != cb[i]).collect();
        assert_eq!(diff, vec![12], "200 / 16 = 12");
        assert_eq!(ca[5], 0, "empty subtrees hash to 0");
        assert_eq!(Tree::from_leaves(r, 0, vec![0], 0).root(), 0);
        assert_eq!(levels_for(10), 0);
        assert_eq!(levels_for(3000), 2);
        assert_eq!(levels_for(u64::MAX), MAX_LEVELS);
    }
}
