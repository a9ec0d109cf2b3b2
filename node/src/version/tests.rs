use proptest::prelude::*;

use super::*;

mod bounds;

/// A fixed "now" (2027-01-15) so ceilings do not depend on the test machine.
pub(super) const NOW: u64 = 1_800_000_000_000;

/// Values carry their own dot, so tests can tell exactly which event survived.
type Dot = (String, u64);

fn dots(s: &DvvSet<Dot>) -> Vec<Dot> {
    let mut v: Vec<Dot> = s.values().cloned().collect();
    v.sort();
    v
}

/// A client write through `DvvSet::update`, tagging the value with its new dot.
fn put(local: &DvvSet<Dot>, ctx: &VersionVector, node: &str) -> (DvvSet<Dot>, Dot) {
    let dot = (
        node.to_string(),
        local.counter_of(node).max(ctx.get(node)) + 1,
    );
    (DvvSet::update(local, ctx, node, dot.clone()), dot)
}

#[derive(Debug, Clone)]
enum Op {
    /// Replica `r` coordinates a put whose context is the `c`-th context read so far (or none).
    Put {
        r: usize,
        c: Option<prop::sample::Index>,
    },
    /// Replica `a` syncs replica `b`'s state into its own.
    Sync { a: usize, b: usize },
    /// A client reads replica `r` and keeps its context.
    Read { r: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, prop::option::of(any::<prop::sample::Index>()))
            .prop_map(|(r, c)| Op::Put { r, c }),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Sync { a, b }),
        (0..3usize).prop_map(|r| Op::Read { r }),
    ]
}

/// Replays a random history over three replicas; returns their states.
fn run(ops: &[Op]) -> (Vec<DvvSet<Dot>>, Vec<VersionVector>) {
    let ids = ["a", "b", "c"];
    let mut reps = vec![DvvSet::<Dot>::default(); 3];
    let mut ctxs: Vec<VersionVector> = Vec::new();
    for o in ops {
        match o {
            Op::Put { r, c } => {
                let ctx = match c {
                    Some(i) if !ctxs.is_empty() => ctxs[i.index(ctxs.len())].clone(),
                    _ => VersionVector::new(),
                };
                reps[*r] = put(&reps[*r], &ctx, ids[*r]).0;
            }
            Op::Sync { a, b } => reps[*a] = reps[*a].sync(&reps[*b]),
            Op::Read { r } => ctxs.push(reps[*r].join()),
        }
    }
    (reps, ctxs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sync_is_commutative_associative_idempotent(ops in prop::collection::vec(op(), 0..40)) {
        let (r, _) = run(&ops);
        prop_assert_eq!(r[0].sync(&r[1]), r[1].sync(&r[0]));
        prop_assert_eq!(r[0].sync(&r[1]).sync(&r[2]), r[0].sync(&r[1].sync(&r[2])));
        prop_assert_eq!(r[0].sync(&r[0]), r[0].clone());
        // Merging never loses or invents history.
        let m = r[0].sync(&r[1]);
        prop_assert!(m.join().descends_from(&r[0].join()) && m.join().descends_from(&r[1].join()));
    }

    #[test]
    fn a_put_supersedes_exactly_what_its_context_saw(ops in prop::collection::vec(op(), 0..40), r in 0..3usize, read_from in 0..3usize, more in prop::collection::vec(op(), 0..20)) {
        let (reps, _) = run(&ops);
        // A client reads replica `read_from`, then more history happens, then it writes at `r`.
        let ctx = reps[read_from].join();
        let mut all = ops.clone();
        all.extend(more);
        let (later, _) = run(&all);
        let before = &later[r];
        let (after, new_dot) = put(before, &ctx, ["a", "b", "c"][r]);
        let covered = |d: &Dot| d.1 <= ctx.get(&d.0);
        let mut expected: Vec<Dot> = dots(before).into_iter().filter(|d| !covered(d)).collect();
        expected.push(new_dot);
        expected.sort();
        prop_assert_eq!(dots(&after), expected);
    }

    #[test]
    fn two_puts_from_one_context_are_siblings_and_a_merged_context_collapses_them(ops in prop::collection::vec(op(), 0..30), r1 in 0..3usize, r2 in 0..3usize) {
        let ids = ["a", "b", "c"];
        let (reps, _) = run(&ops);
        let base = reps[0].sync(&reps[1]).sync(&reps[2]);
        let ctx = base.join();
        let (x, dx) = put(&base, &ctx, ids[r1]);
        // The second put lands on a replica that already has the first (worst case for lost updates).
        let (y, dy) = put(&x, &ctx, ids[r2]);
        let mut both = vec![dx, dy];
        both.sort();
        prop_assert_eq!(dots(&y), both);
        let (z, dz) = put(&y, &y.join(), ids[r1]);
        prop_assert_eq!(dots(&z), vec![dz]);
    }

    #[test]
    fn context_roundtrips_and_garbage_is_rejected(entries in prop::collection::btree_map("[a-z0-9-]{1,12}", 1u64..counter_ceiling(NOW), 0..8), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let vv = VersionVector::from_sorted(entries.into_iter().collect());
        let s = vv.encode();
        prop_assert_eq!(VersionVector::decode_at(&s, NOW).unwrap(), vv);
        use base64::Engine as _;
        let junk_s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&junk);
        if junk_s.is_empty() {
            // The empty string is, by definition, the empty context.
            prop_assert_eq!(VersionVector::decode_at(&junk_s, NOW).unwrap(), VersionVector::new());
        } else if let Ok(decoded) = VersionVector::decode_at(&junk_s, NOW) {
            // Only a junk string that happens to be a valid encoding may decode.
            prop_assert_eq!(decoded.encode(), junk_s);
        }
    }

    #[test]
    fn record_merge_laws_hold_for_lww(a in (any::<u64>(), "[ab]"), b in (any::<u64>(), "[ab]"), c in (any::<u64>(), "[ab]")) {
        let rec = |(h, w): (u64, String)| Record::Lww(LwwValue { hlc: h, writer: w.clone(), value: Value { data: Some(bytes::Bytes::from(format!("{h}{w}"))), expires_at_ms: 0, written_at_ms: 0 } });
        let (a, b, c) = (rec(a), rec(b), rec(c));
        prop_assert_eq!(a.merge(&b), b.merge(&a));
        prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        prop_assert_eq!(a.merge(&a), a.clone());
    }
}

#[test]
fn altered_contexts_are_rejected() {
    let vv = VersionVector::new().with("node-a", 3).with("node-b", 1);
    let s = vv.encode();
    assert_eq!(VersionVector::decode("").unwrap(), VersionVector::new());
    assert!(matches!(
        VersionVector::decode("not base64!"),
        Err(ContextError::Base64(_))
    ));
    assert!(matches!(
        VersionVector::decode("AA"),
        Err(ContextError::Truncated)
    ));
    // Flip a character in the middle: checksum (or structure) must catch it.
    let mut bad: Vec<char> = s.chars().collect();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
    let bad: String = bad.into_iter().collect();
    assert!(VersionVector::decode(&bad).is_err());
    // Another format version.
    use base64::Engine as _;
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&s)
        .unwrap();
    raw[0] = 9;
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    assert!(matches!(
        VersionVector::decode(&other),
        Err(ContextError::Version(9))
    ));
}

#[test]
fn record_roundtrips_and_expiry_follows_the_grace_rule() {
    let v = |data: Option<&'static str>, exp, at| Value {
        data: data.map(|s: &'static str| bytes::Bytes::from_static(s.as_bytes())),
        expires_at_ms: exp,
        written_at_ms: at,
    };
    let d = DvvSet::default().event("n1", v(Some("x"), 0, 5));
    let rec = Record::Causal(d.clone());
    assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
    assert_eq!(
        rec.engine_expiry(100),
        0,
        "a live value without TTL never expires"
    );
    let tomb = Record::Causal(DvvSet::update(&d, &d.join(), "n1", v(None, 0, 50)));
    assert_eq!(
        tomb.engine_expiry(100),
        150,
        "a tombstone lives for the grace period"
    );
    assert!(tomb.live_values(0).is_empty());
    let ttl = Record::Causal(DvvSet::default().event("n1", v(Some("t"), 1000, 10)));
    assert_eq!(ttl.engine_expiry(100), 1100);
    assert_eq!(ttl.live_values(999).len(), 1);
    assert!(
        ttl.live_values(1000).is_empty(),
        "expired values are invisible at once"
    );
    assert!(Record::decode(b"\xff\xff").is_err());
}

#[test]
fn clients_see_identical_siblings_once_and_the_next_write_supersedes_both() {
    let v = |data: &'static str, exp| Value {
        data: Some(bytes::Bytes::from_static(data.as_bytes())),
        expires_at_ms: exp,
        written_at_ms: 1,
    };
    // One write applied twice from the same context (a retried forward).
    let base = DvvSet::default();
    let ctx = base.join();
    let a = DvvSet::update(&base, &ctx, "n1", v("x", 500));
    let b = DvvSet::update(&base, &ctx, "n2", v("x", 0));
    let c = DvvSet::update(&base, &ctx, "n3", v("y", 0));
    let both = Record::Causal(a.sync(&b));
    assert_eq!(both.live_values(0).len(), 2, "two dots are stored");
    let seen = both.client_values(0);
    assert_eq!(seen.len(), 1, "one value is shown: {seen:?}");
    assert_eq!(seen[0].expires_at_ms, 0, "the longest-lived copy wins");
    // A different value stays a sibling.
    let three = Record::Causal(a.sync(&b).sync(&c));
    assert_eq!(three.client_values(0).len(), 2);
    // Writing with what the read saw supersedes every copy.
    let Record::Causal(d) = &three else {
        unreachable!()
    };
    let next = Record::Causal(DvvSet::update(d, &three.context(), "n1", v("z", 0)));
    let vals: Vec<_> = next.client_values(0).into_iter().map(|v| v.data).collect();
    assert_eq!(vals, vec![Some(bytes::Bytes::from_static(b"z"))]);
}

#[test]
fn hlc_is_monotonic_and_moves_past_observed() {
    let h = Hlc::new();
    let a = h.now();
    let b = h.now();
    assert!(b > a);
    h.observe(b + (1 << 40));
    assert!(h.now() > b + (1 << 40));
}
