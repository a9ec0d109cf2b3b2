//! Write batches and their write-ahead-log encoding.
//!
//! A batch's operations are encoded once, as they are added; a write group
//! (several batches committed together) is one WAL record:
//!
//! ```text
//! first_seq:u64 write_time:u64 count:u32 op*
//! op = [1] key value | [2] key value expires_at:u64 | [3] key
//! ```
//! where key and value are varint-length-prefixed. The record is atomic (one
//! checksum), so a batch is either wholly recovered or not at all. Deletes take
//! `write_time` as their tombstone time.

use crate::coding::{get_bytes, get_u8, get_u32, get_u64, put_bytes};
use crate::entry::{TAG_DELETE, TAG_PUT, TAG_PUT_EXPIRING};

/// Longest key the engine accepts.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Largest value the engine accepts.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

/// An atomic group of writes: all of them become visible (and durable)
/// together, or none does.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) rep: Vec<u8>,
    pub(crate) count: u32,
    /// First argument problem found while building, reported by `Db::write`.
    pub(crate) invalid: Option<String>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch with room for about `bytes` of keys and values.
    pub fn with_capacity(bytes: usize) -> Self {
        WriteBatch {
            rep: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.put_expiring(key, value, 0)
    }

    /// A put that becomes invisible at `expires_at_unix_ms` (0 = never).
    pub fn put_expiring(&mut self, key: &[u8], value: &[u8], expires_at_unix_ms: u64) -> &mut Self {
        if !self.check(key) {
            return self;
        }
        if value.len() > MAX_VALUE_BYTES {
            self.invalid.get_or_insert(format!(
                "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
            return self;
        }
        if expires_at_unix_ms == 0 {
            self.rep.push(TAG_PUT);
            put_bytes(&mut self.rep, key);
            put_bytes(&mut self.rep, value);
        } else {
            self.rep.push(TAG_PUT_EXPIRING);
            put_bytes(&mut self.rep, key);
            put_bytes(&mut self.rep, value);
            self.rep
                .extend_from_slice(&expires_at_unix_ms.to_le_bytes());
        }
        self.count += 1;
        self
    }

    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        if self.check(key) {
            self.rep.push(TAG_DELETE);
            put_bytes(&mut self.rep, key);
            self.count += 1;
        }
        self
    }

    fn check(&mut self, key: &[u8]) -> bool {
        if key.len() > MAX_KEY_BYTES {
            self.invalid.get_or_insert(format!(
                "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
                key.len()
            ));
            return false;
        }
        true
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of keys and values (plus small framing) this batch carries.
    pub fn size_bytes(&self) -> usize {
        self.rep.len()
    }

    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
        self.invalid = None;
    }
}

/// One decoded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        expires_at: u64,
    },
    Delete {
        key: &'a [u8],
    },
}

pub(crate) fn encode_group_header(out: &mut Vec<u8>, first_seq: u64, write_time: u64, count: u32) {
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&write_time.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

/// A decoded WAL record.
#[derive(Debug)]
pub(crate) struct Group<'a> {
    pub first_seq: u64,
    pub write_time: u64,
    pub ops: Vec<Op<'a>>,
}

/// Decode a WAL record payload; `None` if it is not a well-formed group.
pub(crate) fn decode_group(mut b: &[u8]) -> Option<Group<'_>> {
    let first_seq = get_u64(&mut b)?;
    let write_time = get_u64(&mut b)?;
    let count = get_u32(&mut b)?;
    let ops = decode_ops(b, count)?;
    Some(Group {
        first_seq,
        write_time,
        ops,
    })
}

/// Could `candidate` be a WAL record written after `last_good`? Its sequence
/// numbers must come later (any well-formed group if nothing precedes it).
pub(crate) fn plausible_successor(candidate: &[u8], last_good: Option<&[u8]>) -> bool {
    let Some(c) = decode_group(candidate) else {
        return false;
    };
    match last_good.and_then(decode_group) {
        Some(prev) => c.first_seq >= prev.first_seq + prev.ops.len() as u64,
        None => true,
    }
}

/// Decode one operation from the front of `b`.
fn decode_one<'a>(b: &mut &'a [u8]) -> Option<Op<'a>> {
    Some(match get_u8(b)? {
        TAG_PUT => Op::Put {
            key: get_bytes(b)?,
            value: get_bytes(b)?,
            expires_at: 0,
        },
        TAG_PUT_EXPIRING => {
            let key = get_bytes(b)?;
            let value = get_bytes(b)?;
            Op::Put {
                key,
                value,
                expires_at: get_u64(b)?,
            }
        }
        TAG_DELETE => Op::Delete { key: get_bytes(b)? },
        _ => return None,
    })
}

/// The operations of a batch built by `WriteBatch`, one at a time (the
/// commit path: no allocation per batch).
pub(crate) fn ops(batch: &WriteBatch) -> impl Iterator<Item = Op<'_>> {
    let mut rest = batch.rep.as_slice();
    std::iter::from_fn(move || decode_one(&mut rest))
}

/// Decode `count` operations that must exactly fill `b`.
pub(crate) fn decode_ops(mut b: &[u8], count: u32) -> Option<Vec<Op<'_>>> {
    // Each op takes at least 2 bytes: refuse counts the bytes cannot hold
    // before allocating for them.
    if (count as usize) > b.len() / 2 {
        return None;
    }
    let mut ops = Vec::with_capacity(count as usize);
    for _ in 0..count {
        ops.push(decode_one(&mut b)?);
    }
    b.is_empty().then_some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_roundtrip() {
        let mut a = WriteBatch::new();
        a.put(b"k1", b"v1").delete(b"k2");
        let mut b = WriteBatch::new();
        b.put_expiring(b"k3", b"", 99);
        let mut rec = Vec::new();
        encode_group_header(&mut rec, 42, 7, a.count + b.count);
        rec.extend_from_slice(&a.rep);
        rec.extend_from_slice(&b.rep);
        let g = decode_group(&rec).unwrap();
        assert_eq!(g.first_seq, 42);
        assert_eq!(g.write_time, 7);
        assert_eq!(
            g.ops,
            vec![
                Op::Put {
                    key: b"k1",
                    value: b"v1",
                    expires_at: 0
                },
                Op::Delete { key: b"k2" },
                Op::Put {
                    key: b"k3",
                    value: b"",
                    expires_at: 99
                },
            ]
        );
        // Any truncation is rejected rather than misread.
        for cut in 0..rec.len() {
            assert!(decode_group(&rec[..cut]).is_none());
        }
    }

    #[test]
    fn oversized_key_is_flagged() {
        let mut b = WriteBatch::new();
        b.put(&vec![0u8; MAX_KEY_BYTES + 1], b"v");
        assert!(b.invalid.is_some());
        assert!(b.is_empty());
    }
}
