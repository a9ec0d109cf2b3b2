//! Version vectors and the opaque causal context handed to clients.
//!
//! Wire form: URL-safe base64 (no padding) of
//! `version(1) | count varint | (id_len varint, id, counter varint)* | xxh3 low 32 bits`.
//! A context is a capability to supersede versions, so anything that does not
//! decode exactly (wrong version, bad checksum, unsorted or duplicate ids,
//! zero counters, trailing bytes) is rejected, never guessed at.
//!
//! A context is also untrusted input that ends up inside stored records, so
//! it is bounded: at most [`MAX_CONTEXT_ENTRIES`] writers, and no counter
//! above what a node could have issued by now ([`counter_ceiling`]). Without
//! that bound a counter of 2^64-1 wraps on the next write and leaves a record
//! no replica can decode (issue 9, finding 1).

use base64::Engine as _;

const VERSION: u8 = 1;
/// Most writers a client context may name. Every context the server hands
/// out is trimmed to this (see `DvvSet::client_context`), so whatever a
/// client got back is accepted again.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Longest writer id, in bytes: a node id (at most 253) plus `~epoch`
/// (`replica::writer`), with room to spare.
pub const MAX_WRITER_ID: usize = 320;
/// Longest encoded context accepted, checked before any decoding (a full
/// context of maximal ids and counters is ~28 KB of base64).
const MAX_ENCODED_LEN: usize = 32 * 1024;

/// Hard upper bound for any counter, from any source (disk included). Far
/// above what [`counter_ceiling`] allows for millennia, far below `u64::MAX`,
/// so `counter + 1` can never wrap.
pub const MAX_COUNTER: u64 = 1 << 56;
/// Counters every node may have reached whatever its clock says.
const CEILING_BASE: u64 = 1 << 40;
/// 2024-01-01T00:00:00Z in Unix ms: the ceiling grows from here.
const CEILING_EPOCH_MS: u64 = 1_704_067_200_000;
/// Events one node can mint for one key per millisecond, generously: every
/// write of a key on its coordinator is a read-merge-fsync under one lock.
const CEILING_EVENTS_PER_MS: u64 = 1024;
/// Clock skew tolerated between the node that minted a counter and the node
/// that checks it.
pub const CEILING_SKEW_MS: u64 = 86_400_000;

/// The largest counter any node could have issued for one key by `now_ms`
/// (wall clock), with [`CEILING_SKEW_MS`] of skew allowed: a counter above
/// it is forged. The bound grows by [`CEILING_EVENTS_PER_MS`] per ms, so a
/// forged counter just under it still leaves room for every later write.
pub fn counter_ceiling(now_ms: u64) -> u64 {
    let ms = now_ms
        .saturating_sub(CEILING_EPOCH_MS)
        .saturating_add(CEILING_SKEW_MS);
    CEILING_BASE
        .saturating_add(ms.saturating_mul(CEILING_EVENTS_PER_MS))
        .min(MAX_COUNTER)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error("context is not valid base64url: {0}")]
    Base64(String),
    #[error("context is truncated")]
    Truncated,
    #[error("context has unknown format version {0}")]
    Version(u8),
    #[error("context checksum mismatch (altered or corrupted)")]
    Checksum,
    #[error("context is malformed: {0}")]
    Malformed(&'static str),
    #[error("context is {len} characters long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error(
        "context names {count} writers; the limit is {max} (send back a context this server returned)"
    )]
    TooManyEntries { count: u64, max: usize },
    #[error(
        "context claims {counter} writes by {node:?}, more than any node can have made (at most {max} now)"
    )]
    CounterTooLarge {
        node: String,
        counter: u64,
        max: u64,
    },
}

/// Node id → highest event counter seen. Sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: Vec<(String, u64)>,
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// From entries already sorted by id with distinct ids.
    pub(crate) fn from_sorted(entries: Vec<(String, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        VersionVector { entries }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(n, c)| (n.as_str(), *c))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of writers named.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, node: &str) -> u64 {
        self.entries
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| *c)
            .unwrap_or(0)
    }

    /// Pointwise maximum.
    pub fn merge(&self, other: &Self) -> Self {
        let mut m: std::collections::BTreeMap<String, u64> = self.entries.iter().cloned().collect();
        for (n, c) in &other.entries {
            let e = m.entry(n.clone()).or_insert(0);
            *e = (*e).max(*c);
        }
        VersionVector {
            entries: m.into_iter().collect(),
        }
    }

    pub fn with(&self, node: &str, counter: u64) -> Self {
        self.merge(&VersionVector {
            entries: vec![(node.to_string(), counter)],
        })
    }

    /// Every counter ≤ the other's.
    pub fn descends_from(&self, other: &Self) -> bool {
        other.entries.iter().all(|(n, c)| self.get(n) >= *c)
    }

    pub fn less_than(&self, other: &Self) -> bool {
        other.descends_from(self) && self != other
    }

    pub fn encode(&self) -> String {
        let mut buf = vec![VERSION];
        put_varint(&mut buf, self.entries.len() as u64);
        for (n, c) in &self.entries {
            put_varint(&mut buf, n.len() as u64);
            buf.extend_from_slice(n.as_bytes());
            put_varint(&mut buf, *c);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&buf) as u32;
        buf.extend_from_slice(&sum.to_le_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    }

    /// Decodes a client context; the empty string is the empty context.
    /// Counters are checked against [`counter_ceiling`] of the wall clock.
    pub fn decode(s: &str) -> Result<Self, ContextError> {
        Self::decode_at(s, super::hlc::wall_ms())
    }

    /// [`Self::decode`] with the clock given (tests, fuzzing).
    pub fn decode_at(s: &str, now_ms: u64) -> Result<Self, ContextError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        if s.len() > MAX_ENCODED_LEN {
            return Err(ContextError::TooLong {
                len: s.len(),
                max: MAX_ENCODED_LEN,
            });
        }
        let buf = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| ContextError::Base64(e.to_string()))?;
        if buf.len() < 1 + 1 + 4 {
            return Err(ContextError::Truncated);
        }
        if buf[0] != VERSION {
            return Err(ContextError::Version(buf[0]));
        }
        let (body, sum) = buf.split_at(buf.len() - 4);
        if xxhash_rust::xxh3::xxh3_64(body) as u32
            != u32::from_le_bytes(sum.try_into().expect("4 bytes"))
        {
            return Err(ContextError::Checksum);
        }
        let mut r = &body[1..];
        let count = get_varint(&mut r)?;
        if count > MAX_CONTEXT_ENTRIES as u64 {
            return Err(ContextError::TooManyEntries {
                count,
                max: MAX_CONTEXT_ENTRIES,
            });
        }
        let ceiling = counter_ceiling(now_ms);
        let mut entries: Vec<(String, u64)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = get_varint(&mut r)?;
            if len == 0 || len > MAX_WRITER_ID as u64 {
                return Err(ContextError::Malformed("node id length out of range"));
            }
            let len = len as usize;
            if r.len() < len {
                return Err(ContextError::Truncated);
            }
            let id = std::str::from_utf8(&r[..len])
                .map_err(|_| ContextError::Malformed("node id is not UTF-8"))?;
            r = &r[len..];
            let c = get_varint(&mut r)?;
            if c == 0 {
                return Err(ContextError::Malformed("zero counter"));
            }
            if c > ceiling {
                return Err(ContextError::CounterTooLarge {
                    node: id.to_string(),
                    counter: c,
                    max: ceiling,
                });
            }
            if let Some((prev, _)) = entries.last()
                && prev.as_str() >= id
            {
                return Err(ContextError::Malformed("node ids not strictly increasing"));
            }
            entries.push((id.to_string(), c));
        }
        if !r.is_empty() {
            return Err(ContextError::Malformed("trailing bytes"));
        }
        Ok(VersionVector { entries })
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(r: &mut &[u8]) -> Result<u64, ContextError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = r.split_first().ok_or(ContextError::Truncated)?;
        *r = rest;
        if shift == 63 && b > 1 {
            return Err(ContextError::Malformed("varint overflows 64 bits"));
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ContextError::Malformed("varint too long"))
}
