//! Entry points for fuzzing the node's decoders of untrusted bytes (used by
//! `node/fuzz` and by `tests/decoders.rs`). Each takes arbitrary bytes and
//! must never panic, hang or allocate without bound; whatever decodes must
//! also behave (re-encode to itself, merge, hand out a context the decoder
//! accepts back).

use prost::Message as _;
use ringkv_proto::v1 as pb;

use crate::membership::guard::{self, GossipSecret, Guard, Opened};
use crate::version::{DvvSet, Record, Value, VersionVector};

/// A fixed clock (2027-01-15), so runs are reproducible.
pub const NOW_MS: u64 = 1_800_000_000_000;

/// A client causal context (the `X-Version-Context` header / gRPC field).
/// Returns how many writers it names, or the error text.
pub fn context(bytes: &[u8]) -> Result<usize, String> {
    let s = String::from_utf8_lossy(bytes);
    let vv = VersionVector::decode_at(&s, NOW_MS).map_err(|e| e.to_string())?;
    let again = VersionVector::decode_at(&vv.encode(), NOW_MS)
        .unwrap_or_else(|e| panic!("a decoded context does not re-decode: {e}"));
    assert_eq!(again, vv);
    // A write with it on an empty key, and the contexts that hands back.
    let d = DvvSet::update(&DvvSet::default(), &vv, "fuzz-node", value());
    check_causal(&d);
    let w = d.write_context(&vv, "fuzz-node");
    VersionVector::decode_at(&w.encode(), NOW_MS)
        .unwrap_or_else(|e| panic!("a write context is refused: {e}"));
    Ok(vv.len())
}

/// A record as stored on disk (and as hints hold them). Returns the number
/// of values, or the error text.
pub fn stored_record(bytes: &[u8]) -> Result<usize, String> {
    let r = Record::decode(bytes).map_err(|e| e.to_string())?;
    // The disk decoder takes counters past what any node could have issued
    // by now (so a clock set back never makes stored keys unreadable); the
    // context promise holds for what a node can hold by now: records it
    // wrote or accepted from a peer, checked here as from a peer.
    let held_now = pb::Record::decode(bytes)
        .ok()
        .is_some_and(|p| Record::from_proto_at(p, NOW_MS).is_ok());
    check_stored(&r, held_now);
    Ok(r.all_values().len())
}

/// Internode request bodies as a peer (or anyone reaching port 7001) sends
/// them, validated as the Internode service does. Returns the number of
/// records that passed.
pub fn internode(bytes: &[u8]) -> usize {
    let mut ok = 0;
    let mut record = |r: Option<pb::Record>| {
        if let Some(r) = r
            && let Ok(rec) = Record::from_proto_at(r, NOW_MS)
        {
            check_record(&rec);
            ok += 1;
        }
    };
    if let Ok(m) = pb::WriteReplicaRequest::decode(bytes) {
        record(m.record);
    }
    if let Ok(m) = pb::WriteBatchRequest::decode(bytes) {
        for it in m.items {
            record(it.record);
        }
    }
    if let Ok(m) = pb::KeyRecords::decode(bytes) {
        for it in m.items {
            record(it.record);
        }
    }
    if let Ok(m) = pb::ReadReplicaResponse::decode(bytes) {
        record(m.record);
    }
    if let Ok(m) = pb::CoordinateWriteRequest::decode(bytes) {
        let _ = VersionVector::decode_at(&m.context, NOW_MS);
    }
    ok
}

/// A gossip datagram through the guard, with and without a secret (the
/// bytes are also tried as a datagram sealed with that secret).
pub fn gossip_datagram(bytes: &[u8]) -> usize {
    let from = std::net::SocketAddr::from(([127, 0, 0, 1], 7000));
    let secret = GossipSecret::from_text("fuzzing-secret-0123456789").expect("valid");
    let mut passed = 0;
    let mut check = |o: Opened| {
        if let Opened::Payload(p) = o {
            assert!(p.len() <= guard::MAX_DATAGRAM);
            assert!(guard::decompression_bound(&p) <= guard::MAX_DECOMPRESSED);
            passed += 1;
        }
    };
    check(Guard::new(None).open(from, bytes, NOW_MS));
    let mut keyed = Guard::new(Some(secret.clone()));
    check(keyed.open(from, bytes, NOW_MS));
    let sealer = Guard::new(Some(secret));
    for d in sealer.seal(bytes, NOW_MS) {
        check(keyed.open(from, &d, NOW_MS));
    }
    passed
}

fn value() -> Value {
    Value {
        data: Some(bytes::Bytes::from_static(b"fuzz")),
        expires_at_ms: 0,
        written_at_ms: NOW_MS,
    }
}

fn check_record(r: &Record) {
    check_stored(r, true);
}

/// A decoded record behaves; with `contexts`, the context it hands out is
/// accepted back and a write with it works.
fn check_stored(r: &Record, contexts: bool) {
    let again = Record::decode(&r.encode())
        .unwrap_or_else(|e| panic!("a valid record does not re-decode: {e}"));
    assert_eq!(&again, r);
    assert_eq!(&r.merge(r), r, "merge is idempotent");
    let _ = r.live_values(NOW_MS);
    let _ = r.engine_expiry(1000);
    if let Record::Causal(d) = r {
        check_causal(d);
        // What a reader gets back is accepted, and writing with it works.
        if contexts {
            let ctx = VersionVector::decode_at(&r.context().encode(), NOW_MS)
                .unwrap_or_else(|e| panic!("a record's context is refused: {e}"));
            let next = DvvSet::update(d, &ctx, "fuzz-node", value());
            check_causal(&next);
        }
        // Pruning retired writer ids never drops a value, never drops the
        // kept id, and leaves a record that decodes.
        let mut pruned = d.clone();
        pruned.prune_retired("fuzz-node", u64::MAX, 0);
        assert_eq!(pruned.values().count(), d.values().count());
        assert_eq!(pruned.counter_of("fuzz-node"), d.counter_of("fuzz-node"));
        check_causal(&pruned);
    }
}

fn check_causal(d: &DvvSet<Value>) {
    let r = Record::Causal(d.clone());
    let back = Record::decode(&r.encode())
        .unwrap_or_else(|e| panic!("a record the DVV produced does not decode: {e}"));
    assert_eq!(back, r);
}
