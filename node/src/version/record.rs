//! The record a replica stores for one key: a DVV sibling set (causal mode)
//! or a single last-write-wins value, plus conversion to the protobuf form
//! that is both the wire format and the on-disk format.

use bytes::Bytes;
use prost::Message as _;
use ringkv_proto::v1 as pb;

use super::context::VersionVector;
use super::dvv::{DvvSet, Entry};

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
pub enum RecordDecodeError {
    #[error("record does not decode: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
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
    /// never depend on what was read).
    pub fn context(&self) -> VersionVector {
        match self {
            Record::Causal(d) => d.join(),
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

    /// Validates what a peer (or the disk) sent: a record that breaks the DVV
    /// invariants would corrupt every merge it touches.
    pub fn from_proto(p: pb::Record) -> Result<Record, RecordDecodeError> {
        match p.kind {
            None => Err(RecordDecodeError::Malformed("record without kind")),
            Some(pb::record::Kind::Lww(l)) => Ok(Record::Lww(LwwValue {
                hlc: l.hlc,
                writer: l.writer,
                value: value_from_proto(
                    l.value
                        .ok_or(RecordDecodeError::Malformed("lww record without value"))?,
                ),
            })),
            Some(pb::record::Kind::Causal(c)) => {
                let mut entries: Vec<Entry<Value>> = Vec::with_capacity(c.entries.len());
                for e in c.entries {
                    if e.node.is_empty() {
                        return Err(RecordDecodeError::Malformed("empty writer id"));
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

    pub fn decode(bytes: &[u8]) -> Result<Record, RecordDecodeError> {
        Record::from_proto(pb::Record::decode(bytes)?)
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
