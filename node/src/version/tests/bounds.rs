//! Untrusted contexts and records: forged counters, oversized writer sets,
//! and the promise that every context the server hands out is accepted back
//! (issue 9, findings 1 and 5).

use proptest::prelude::*;
use ringkv_proto::v1 as pb;

use super::NOW;
use crate::version::*;

fn val(s: &str) -> Value {
    Value {
        data: Some(bytes::Bytes::copy_from_slice(s.as_bytes())),
        expires_at_ms: 0,
        written_at_ms: 1,
    }
}

fn ctx_of(prefix: &str, n: usize, counter: u64) -> VersionVector {
    let mut e: Vec<(String, u64)> = (0..n)
        .map(|i| (format!("{prefix}-{i:04}"), counter))
        .collect();
    e.sort();
    let mut vv = VersionVector::new();
    for (id, c) in e {
        vv = vv.with(&id, c);
    }
    vv
}

/// The context from the issue: node-0's counter = 2^64-1.
const FORGED: &str = "AQEGbm9kZS0w____________Adexhew";

#[test]
fn the_issues_forged_context_is_refused_with_a_clear_error() {
    let e = VersionVector::decode(FORGED).unwrap_err();
    assert!(
        matches!(&e, ContextError::CounterTooLarge { node, counter, .. } if node == "node-0" && *counter == u64::MAX),
        "{e:?}"
    );
    assert!(e.to_string().contains("node-0"), "{e}");
    // Just above the ceiling is refused; at it, accepted.
    let ceiling = counter_ceiling(NOW);
    let at = VersionVector::new().with("node-0", ceiling).encode();
    assert_eq!(
        VersionVector::decode_at(&at, NOW).unwrap().get("node-0"),
        ceiling
    );
    let over = VersionVector::new().with("node-0", ceiling + 1).encode();
    assert!(matches!(
        VersionVector::decode_at(&over, NOW),
        Err(ContextError::CounterTooLarge { .. })
    ));
}

#[test]
fn the_ceiling_leaves_room_for_every_later_write_and_never_nears_u64() {
    let c = counter_ceiling(NOW);
    assert!(c < MAX_COUNTER && MAX_COUNTER < u64::MAX / 2);
    assert!(counter_ceiling(NOW + 1) > c, "grows with time");
    // A clock before the epoch still accepts every realistic counter.
    assert!(counter_ceiling(0) >= 1 << 40);
    assert_eq!(counter_ceiling(u64::MAX), MAX_COUNTER);
    // A write on top of the largest accepted context still makes a record
    // that decodes, from disk and from a peer a millisecond later.
    let ctx = VersionVector::decode_at(&VersionVector::new().with("n1", c).encode(), NOW).unwrap();
    let mut d = DvvSet::update(&DvvSet::default(), &ctx, "n1", val("x"));
    for _ in 0..1000 {
        d = DvvSet::update(&d, &d.join(), "n1", val("y"));
    }
    let rec = Record::Causal(d);
    assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
    assert_eq!(Record::from_proto_at(rec.to_proto(), NOW + 1).unwrap(), rec);
    assert!(VersionVector::decode_at(&rec.context().encode(), NOW + 1).is_ok());
}

fn causal(entries: Vec<pb::DvvEntry>) -> pb::Record {
    pb::Record {
        kind: Some(pb::record::Kind::Causal(pb::CausalRecord { entries })),
    }
}

fn entry(node: &str, counter: u64, values: usize) -> pb::DvvEntry {
    pb::DvvEntry {
        node: node.into(),
        counter,
        values: (0..values)
            .map(|_| pb::StoredValue {
                value: Some(bytes::Bytes::from_static(b"v")),
                expires_at_unix_ms: 0,
                written_at_unix_ms: 1,
            })
            .collect(),
    }
}

#[test]
fn records_from_peers_are_checked_like_contexts_and_disk_only_for_hard_limits() {
    let ceiling = counter_ceiling(NOW);
    let peer = |r: pb::Record| Record::from_proto_at(r, NOW);
    assert!(peer(causal(vec![entry("a", ceiling, 1)])).is_ok());
    // The issue's wrapped record, and a counter no node could have issued.
    let wrapped = causal(vec![entry("node-0", 0, 1)]);
    assert!(peer(wrapped.clone()).is_err());
    assert!(Record::decode(&prost::Message::encode_to_vec(&wrapped)).is_err());
    let forged = causal(vec![entry("node-0", u64::MAX, 1)]);
    assert!(matches!(
        peer(forged.clone()),
        Err(RecordDecodeError::CounterTooLarge { .. })
    ));
    assert!(Record::decode(&prost::Message::encode_to_vec(&forged)).is_err());
    let above_ceiling = causal(vec![entry("a", ceiling + 1, 1)]);
    assert!(peer(above_ceiling.clone()).is_err());
    // From disk, a counter above today's ceiling (say the clock went back)
    // still reads: the key stays readable.
    assert!(Record::decode(&prost::Message::encode_to_vec(&above_ceiling)).is_ok());
    // Structure.
    assert!(
        peer(causal(vec![entry("a", 1, 2)])).is_err(),
        "more values than events"
    );
    assert!(peer(causal(vec![entry("", 1, 1)])).is_err());
    assert!(peer(causal(vec![entry(&"x".repeat(321), 1, 1)])).is_err());
    // The longest writer id a node can have: a 253-byte node id and `~epoch`.
    let longest = format!("{}~{}", "n".repeat(253), NOW);
    assert!(peer(causal(vec![entry(&longest, 1, 1)])).is_ok());
    let ctx = VersionVector::new().with(&longest, 1).encode();
    assert!(VersionVector::decode_at(&ctx, NOW).is_ok());
    assert!(peer(causal(vec![entry("b", 1, 1), entry("a", 1, 1)])).is_err());
    let many: Vec<pb::DvvEntry> = (0..=MAX_RECORD_WRITERS)
        .map(|i| entry(&format!("w{i:05}"), 1, 0))
        .collect();
    assert!(matches!(
        peer(causal(many)),
        Err(RecordDecodeError::TooManyWriters { .. })
    ));
    // LWW: a timestamp far in the future would freeze every node's clock.
    let lww = |ms: u64| pb::Record {
        kind: Some(pb::record::Kind::Lww(pb::LwwRecord {
            hlc: ms << 16,
            writer: "a".into(),
            value: Some(pb::StoredValue::default()),
        })),
    };
    assert!(peer(lww(NOW)).is_ok());
    assert!(matches!(
        peer(lww(NOW + 2 * 86_400_000)),
        Err(RecordDecodeError::FromTheFuture { .. })
    ));
    let h = Hlc::new();
    h.observe(u64::MAX);
    assert_eq!(h.now(), u64::MAX, "saturates instead of wrapping");
}

#[test]
fn three_puts_with_full_contexts_leave_a_record_whose_context_is_accepted_back() {
    // Three writers each pass a valid, maximal context of writers the key
    // never had (the issue used 1024 entries: now refused at decode).
    let big = ctx_of("ghost", 1024, 5);
    assert!(matches!(
        VersionVector::decode_at(&big.encode(), NOW),
        Err(ContextError::TooManyEntries { count: 1024, .. })
    ));
    let mut rec = DvvSet::<Value>::default();
    let mut outs = Vec::new();
    for (i, node) in ["node-0", "node-1", "node-2"].iter().enumerate() {
        let ctx = ctx_of(&format!("ghost{i}"), MAX_CONTEXT_ENTRIES, 7);
        let ctx = VersionVector::decode_at(&ctx.encode(), NOW).unwrap();
        rec = DvvSet::update(&rec, &ctx, node, val(node));
        let wctx = rec.write_context(&ctx, node);
        assert!(wctx.len() <= MAX_CONTEXT_ENTRIES);
        assert!(VersionVector::decode_at(&wctx.encode(), NOW).is_ok());
        outs.push(wctx);
    }
    // The ghosts fill the budget once; real coordinators always get their entry.
    assert_eq!(rec.entries.len(), MAX_WRITERS + 2);
    assert_eq!(
        rec.values().count(),
        3,
        "three concurrent writes, three siblings"
    );
    // The context a reader gets is accepted and resolves the siblings.
    let read = Record::Causal(rec.clone()).context();
    let read = VersionVector::decode_at(&read.encode(), NOW).unwrap();
    let resolved = DvvSet::update(&rec, &read, "node-0", val("final"));
    let vals: Vec<&Value> = resolved.values().collect();
    assert_eq!(vals, vec![&val("final")]);
}

#[test]
fn merged_records_beyond_the_limit_still_give_an_accepted_context() {
    // Three coordinators each let a different forged context in before
    // they synced: the merge holds more writers than a context may name.
    let mut parts = Vec::new();
    for (i, node) in ["node-0", "node-1", "node-2"].iter().enumerate() {
        let ctx = ctx_of(&format!("g{i}"), MAX_CONTEXT_ENTRIES, 3);
        parts.push(DvvSet::update(&DvvSet::default(), &ctx, node, val(node)));
    }
    let merged = parts[0].sync(&parts[1]).sync(&parts[2]);
    assert!(merged.entries.len() > MAX_CONTEXT_ENTRIES);
    assert!(merged.entries.len() <= MAX_RECORD_WRITERS);
    let ctx = merged.client_context();
    assert_eq!(ctx.len(), MAX_CONTEXT_ENTRIES);
    for n in ["node-0", "node-1", "node-2"] {
        assert!(ctx.get(n) > 0, "writers of live siblings are always named");
    }
    let ctx = VersionVector::decode_at(&ctx.encode(), NOW).unwrap();
    let next = DvvSet::update(&merged, &ctx, "node-1", val("one"));
    assert_eq!(next.values().collect::<Vec<_>>(), vec![&val("one")]);
    // Nothing the merged record knew was forgotten.
    for e in &merged.entries {
        assert!(next.counter_of(&e.node) >= e.counter);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever a record holds, its client context is accepted back,
    /// names every writer with a live value when they fit, and an update
    /// never forgets a writer the record had (so no dot is minted twice).
    #[test]
    fn contexts_handed_out_are_always_accepted_and_updates_never_forget(
        writers in prop::collection::btree_map("[a-z]{1,6}", (1u64..1000, 0usize..3), 0..150),
        foreign in prop::collection::btree_map("[A-Z]{1,6}", 1u64..1000, 0..MAX_CONTEXT_ENTRIES),
        coord in "[a-z]{1,6}",
    ) {
        let d = DvvSet {
            entries: writers
                .into_iter()
                .map(|(node, (c, nv))| Entry { node, counter: c, values: (0..nv.min(c as usize)).map(|i| val(&i.to_string())).collect() })
                .collect(),
        };
        let ctx = d.client_context();
        prop_assert!(ctx.len() <= MAX_CONTEXT_ENTRIES);
        prop_assert_eq!(VersionVector::decode_at(&ctx.encode(), NOW).unwrap(), ctx.clone());
        let live = d.entries.iter().filter(|e| !e.values.is_empty()).count();
        if live <= MAX_CONTEXT_ENTRIES {
            for e in d.entries.iter().filter(|e| !e.values.is_empty()) {
                prop_assert_eq!(ctx.get(&e.node), e.counter);
            }
        }
        let mut fctx = ctx.clone();
        for (n, c) in &foreign {
            fctx = fctx.with(n, *c);
        }
        let next = DvvSet::update(&d, &fctx, &coord, val("new"));
        for e in &d.entries {
            prop_assert!(next.counter_of(&e.node) >= e.counter);
        }
        prop_assert!(next.counter_of(&coord) > d.counter_of(&coord));
        prop_assert!(next.entries.len() <= d.entries.len().max(MAX_WRITERS) + 1);
        let w = next.write_context(&fctx, &coord);
        prop_assert!(w.len() <= MAX_CONTEXT_ENTRIES);
        prop_assert!(VersionVector::decode_at(&w.encode(), NOW).is_ok());
        prop_assert_eq!(w.get(&coord), next.counter_of(&coord));
    }
}
