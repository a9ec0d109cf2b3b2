//! The record a replica stores for one key: a DVV sibling set (causal mode)
//! or a single last-write-wins value, plus conversion to the protobuf form
//! that is both the wire format and the on-disk format.

use bytes::Bytes;
use prost::Message as _;
use ringkv_proto::v1 as pb;

use super::context::{CEILING_SKEW_MS, MAX_COUNTER, MAX_WRITER_ID, VersionVector, counter_ceiling};
use super::dvv::{DvvSet, Entry};
use super::hlc::{Hlc, wall_ms};

/// Most writers a stored record may hold. Client writes add at most
/// `MAX_WRITERS` writers a record has not seen, so only merges of many
/// coordinators' records come near this; beyond it a record is refused.
pub const MAX_RECORD_WRITERS: usize = 4096;

/// One sibling: a value or a tombstone, with expiry and write time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// `None` is a tombstone.
    pub data: Option<Bytes>,
    /// Unix ms from which it is invisible; 0 = never.
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
}

impl Value {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.data.is_some() && (self.expires_at_ms == 0 || self.expires_at_ms > now_ms)
    }

    /// When storage may forget this value: `grace` after it stopped being
    /// visible (expired or deleted); `None` = never.
    fn purge_at(&self, grace_ms: u64) -> Option<u64> {
        match (&self.data, self.expires_at_ms) {
            (Some(_), 0) => None,
            (Some(_), e) => Some(e.saturating_add(grace_ms)),
            (None, _) => Some(self.written_at_ms.saturating_add(grace_ms)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwValue {
    pub hlc: u64,
    pub writer: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Causal(DvvSet<Value>),
    Lww(LwwValue),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordDecodeError {
    #[error("record does not decode: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
    #[error("record has {count} writers; the limit is {max}")]
    TooManyWriters { count: usize, max: usize },
    #[error("record claims {counter} writes by {node:?}; at most {max} are possible")]
    CounterTooLarge {
        node: String,
        counter: u64,
        max: u64,
    },
    #[error("record's timestamp is {ahead_ms} ms ahead of this node's clock")]
    FromTheFuture { ahead_ms: u64 },
}

/// How far a record's claims are checked, by where it comes from.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_counter: u64,
    /// Latest plausible LWW wall-clock time, ms.
    max_hlc_ms: u64,
}

impl Limits {
    /// A peer (or a forged internode call): counters no node could have
    /// issued by now, timestamps beyond the tolerated skew, are refused.
    fn peer(now_ms: u64) -> Limits {
        Limits {
            max_counter: counter_ceiling(now_ms),
            max_hlc_ms: now_ms.saturating_add(CEILING_SKEW_MS),
        }
    }

    /// This node's own disk: only what would break arithmetic is refused,
    /// so a clock set back never makes stored keys unreadable.
    fn disk() -> Limits {
        Limits {
            max_counter: MAX_COUNTER,
            max_hlc_ms: u64::MAX,
        }
    }
}

impl Record {
    /// The version sync of two records of the same key.
    pub fn merge(&self, other: &Record) -> Record {
        match (self, other) {
            (Record::Causal(a), Record::Causal(b)) => Record::Causal(a.sync(b)),
            (Record::Lww(a), Record::Lww(b)) => {
                if (b.hlc, &b.writer) > (a.hlc, &a.writer) {
                    Record::Lww(b.clone())
                } else {
                    Record::Lww(a.clone())
                }
            }
            // Only after a cluster switches conflict mode: the LWW form wins,
            // deterministically, so merging stays commutative.
            (Record::Lww(a), Record::Causal(_)) | (Record::Causal(_), Record::Lww(a)) => {
                Record::Lww(a.clone())
            }
        }
    }

    /// Drops the entries of retired writer ids that hold nothing, once their
    /// successor is `grace_ms` old (see `version::prune`); never `keep`.
    /// LWW records name one writer and are returned as they are.
    pub fn prune_retired(mut self, keep: &str, now_ms: u64, grace_ms: u64) -> Record {
        if let Record::Causal(d) = &mut self {
            d.prune_retired(keep, now_ms, grace_ms);
        }
        self
    }

    /// Every sibling (tombstones and expired values included).
    pub fn all_values(&self) -> Vec<&Value> {
        match self {
            Record::Causal(d) => d.values().collect(),
            Record::Lww(l) => vec![&l.value],
        }
    }

    /// Visible values at `now_ms`.
    pub fn live_values(&self, now_ms: u64) -> Vec<&Value> {
        self.all_values()
            .into_iter()
            .filter(|v| v.is_live(now_ms))
            .collect()
    }

    /// Visible values at `now_ms` as a client sees them: siblings holding
    /// the same bytes are one value (the latest expiry kept). Identical
    /// siblings come from a write retried through another coordinator after
    /// an ambiguous timeout; the causal context still covers both dots, so
    /// the next write supersedes both.
    pub fn client_values(&self, now_ms: u64) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for v in self.live_values(now_ms) {
            match out.iter_mut().find(|o| o.data == v.data) {
                Some(o) => {
                    if o.expires_at_ms != 0
                        && (v.expires_at_ms == 0 || v.expires_at_ms > o.expires_at_ms)
                    {
                        o.expires_at_ms = v.expires_at_ms;
                    }
                    o.written_at_ms = o.written_at_ms.max(v.written_at_ms);
                }
                None => out.push(v.clone()),
            }
        }
        out
    }

    /// The causal context a reader gets (empty in LWW mode, where writes
    /// never depend on what was read). Always small enough to be accepted
    /// back ([`DvvSet::client_context`]).
    pub fn context(&self) -> VersionVector {
        match self {
            Record::Causal(d) => d.client_context(),
            Record::Lww(_) => VersionVector::new(),
        }
    }

    /// The context a writer gets back once its write made this record
    /// ([`DvvSet::write_context`]); empty in LWW mode.
    pub fn write_context(&self, ctx: &VersionVector, node: &str) -> VersionVector {
        match self {
            Record::Causal(d) => d.write_context(ctx, node),
            Record::Lww(_) => VersionVector::new(),
        }
    }

    /// Engine expiry for the whole record: when every sibling is a tombstone
    /// or has a TTL, the record may go `grace` after the last of them stopped
    /// being visible (so anti-entropy cannot resurrect it); else never (0).
    pub fn engine_expiry(&self, grace_ms: u64) -> u64 {
        let mut latest = 0u64;
        for v in self.all_values() {
            match v.purge_at(grace_ms) {
                None => return 0,
                Some(t) => latest = latest.max(t),
            }
        }
        // A record with no values at all (pure history) is kept like a tombstone.
        if latest == 0 { 1 } else { latest }
    }

    pub fn to_proto(&self) -> pb::Record {
        let kind = match self {
            Record::Causal(d) => pb::record::Kind::Causal(pb::CausalRecord {
                entries: d
                    .entries
                    .iter()
                    .map(|e| pb::DvvEntry {
                        node: e.node.clone(),
                        counter: e.counter,
                        values: e.values.iter().map(value_to_proto).collect(),
                    })
                    .collect(),
            }),
            Record::Lww(l) => pb::record::Kind::Lww(pb::LwwRecord {
                hlc: l.hlc,
                writer: l.writer.clone(),
                value: Some(value_to_proto(&l.value)),
            }),
        };
        pb::Record { kind: Some(kind) }
    }

    /// Validates a record a peer sent (WriteReplica, WriteBatch, a fetched
    /// range, a read reply): a record that breaks the DVV invariants would
    /// corrupt every merge it touches, and one with a forged counter would
    /// wrap on the next write.
    pub fn from_proto(p: pb::Record) -> Result<Record, RecordDecodeError> {
        Self::from_proto_at(p, wall_ms())
    }

    /// [`Self::from_proto`] with the clock given (tests, fuzzing).
    pub fn from_proto_at(p: pb::Record, now_ms: u64) -> Result<Record, RecordDecodeError> {
        Self::checked(p, Limits::peer(now_ms))
    }

    fn checked(p: pb::Record, lim: Limits) -> Result<Record, RecordDecodeError> {
        let writer_ok = |w: &str| !w.is_empty() && w.len() <= MAX_WRITER_ID;
        match p.kind {
            None => Err(RecordDecodeError::Malformed("record without kind")),
            Some(pb::record::Kind::Lww(l)) => {
                if !writer_ok(&l.writer) {
                    return Err(RecordDecodeError::Malformed("writer id empty or too long"));
                }
                let ms = Hlc::millis(l.hlc);
                if ms > lim.max_hlc_ms {
                    return Err(RecordDecodeError::FromTheFuture {
                        ahead_ms: ms - lim.max_hlc_ms.saturating_sub(CEILING_SKEW_MS),
                    });
                }
                Ok(Record::Lww(LwwValue {
                    hlc: l.hlc,
                    writer: l.writer,
                    value: value_from_proto(
                        l.value
                            .ok_or(RecordDecodeError::Malformed("lww record without value"))?,
                    ),
                }))
            }
            Some(pb::record::Kind::Causal(c)) => {
                if c.entries.len() > MAX_RECORD_WRITERS {
                    return Err(RecordDecodeError::TooManyWriters {
                        count: c.entries.len(),
                        max: MAX_RECORD_WRITERS,
                    });
                }
                let mut entries: Vec<Entry<Value>> = Vec::with_capacity(c.entries.len());
                for e in c.entries {
                    if !writer_ok(&e.node) {
                        return Err(RecordDecodeError::Malformed("writer id empty or too long"));
                    }
                    if e.counter == 0 {
                        return Err(RecordDecodeError::Malformed("zero counter"));
                    }
                    if e.counter > lim.max_counter {
                        return Err(RecordDecodeError::CounterTooLarge {
                            node: e.node,
                            counter: e.counter,
                            max: lim.max_counter,
                        });
                    }
                    if e.values.len() as u64 > e.counter {
                        return Err(RecordDecodeError::Malformed("more values than events"));
                    }
                    if let Some(prev) = entries.last()
                        && prev.node >= e.node
                    {
                        return Err(RecordDecodeError::Malformed(
                            "writers not strictly increasing",
                        ));
                    }
                    entries.push(Entry {
                        node: e.node,
                        counter: e.counter,
                        values: e.values.into_iter().map(value_from_proto).collect(),
                    });
                }
                Ok(Record::Causal(DvvSet { entries }))
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes a record this node stored. Structure is checked as for a
    /// peer, but counters and timestamps only against hard limits (see
    /// `Limits::disk`). A stored record that fails this is skipped by
    /// readers and streaming, never allowed to block them.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordDecodeError> {
        Self::checked(pb::Record::decode(bytes)?, Limits::disk())
    }

    /// Decodes a stored record about to be sent to a peer, checked as the
    /// peer will check it ([`Self::from_proto`]): streaming skips what a
    /// peer would refuse instead of having a whole batch refused.
    pub fn decode_for_peer(bytes: &[u8]) -> Result<Record, RecordDecodeError> {
        Self::checked(pb::Record::decode(bytes)?, Limits::peer(wall_ms()))
    }
}

fn value_to_proto(v: &Value) -> pb::StoredValue {
    pb::StoredValue {
        value: v.data.clone(),
        expires_at_unix_ms: v.expires_at_ms,
        written_at_unix_ms: v.written_at_ms,
    }
}

fn value_from_proto(v: pb::StoredValue) -> Value {
    Value {
        data: v.value,
        expires_at_ms: v.expires_at_unix_ms,
        written_at_ms: v.written_at_unix_ms,
    }
}
