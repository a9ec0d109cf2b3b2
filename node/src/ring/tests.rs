use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn node(id: usize, zone: &str, tokens: Vec<Token>) -> RingNode {
    RingNode {
        id: format!("n{id:02}"),
        zone: zone.into(),
        tokens,
    }
}

/// Nodes joining one at a time, each allocating tokens against the ring so far.
fn grow(count: usize, vnodes: u32, seed: u64, zones: usize) -> Ring {
    let mut rng = SplitMix64::new(seed);
    let mut nodes = Vec::new();
    for i in 0..count {
        let ring = Ring::new(nodes.clone());
        let zone = format!("z{}", i % zones.max(1));
        let tokens = allocate_tokens(&ring, &zone, vnodes, &mut rng);
        nodes.push(node(i, &zone, tokens));
    }
    Ring::new(nodes)
}

fn max_over_mean(own: &std::collections::HashMap<String, f64>) -> f64 {
    let mean = own.values().sum::<f64>() / own.len() as f64;
    own.values().cloned().fold(0.0, f64::max) / mean
}

/// Fraction of sampled keys whose primary changed.
fn moved_fraction(a: &Ring, b: &Ring, seed: u64) -> f64 {
    let mut rng = SplitMix64::new(seed);
    let samples = 20_000;
    let moved = (0..samples)
        .filter(|_| {
            let t = rng.next_u64();
            a.primary(t).map(|n| &n.id) != b.primary(t).map(|n| &n.id)
        })
        .count();
    moved as f64 / samples as f64
}

/// Fraction of sampled (key, replica) assignments with N=3 that changed:
/// the share of stored data that has to stream.
fn moved_replicas(a: &Ring, b: &Ring, seed: u64) -> f64 {
    let mut rng = SplitMix64::new(seed);
    let samples = 10_000;
    let (mut moved, mut total) = (0usize, 0usize);
    for _ in 0..samples {
        let t = rng.next_u64();
        let before: HashSet<&str> = a
            .preference_list(t, 3)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        let after: HashSet<&str> = b
            .preference_list(t, 3)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        moved += after.difference(&before).count();
        total += after.len();
    }
    moved as f64 / total as f64
}

#[test]
fn key_token_is_xxh3() {
    assert_eq!(key_token(b"hello"), xxhash_rust::xxh3::xxh3_64(b"hello"));
}

#[test]
fn preference_list_is_distinct_and_starts_at_the_primary() {
    let ring = Ring::new(vec![
        node(0, "a", vec![10, 40]),
        node(1, "a", vec![20]),
        node(2, "a", vec![30]),
    ]);
    let ids = |t| {
        ring.preference_list(t, 3)
            .iter()
            .map(|n| n.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(15), vec!["n01", "n02", "n00"]);
    assert_eq!(ids(35), vec!["n00", "n01", "n02"]);
    // Wraps around the top of the token space.
    assert_eq!(ids(u64::MAX), vec!["n00", "n01", "n02"]);
    assert_eq!(ring.preference_list(0, 5).len(), 3);
}

#[test]
fn zones_are_preferred_over_ring_order() {
    // Clockwise from 15: n1(a) n2(a) n3(b) — with two zones the second replica is n3.
    let ring = Ring::new(vec![
        node(0, "a", vec![10]),
        node(1, "a", vec![20]),
        node(2, "a", vec![25]),
        node(3, "b", vec![30]),
    ]);
    let ids: Vec<_> = ring
        .preference_list(15, 2)
        .iter()
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(ids, vec!["n01", "n03"]);
}

#[test]
fn tokens_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, created) = load_or_create_tokens(dir.path(), || vec![3, 1, 2]).unwrap();
    assert!(created);
    let (b, created) = load_or_create_tokens(dir.path(), || vec![9]).unwrap();
    assert!(!created);
    assert_eq!(a, b);
    std::fs::write(dir.path().join("tokens"), "12\nnot-a-number\n").unwrap();
    assert!(matches!(
        load_or_create_tokens(dir.path(), Vec::new),
        Err(TokenFileError::Corrupt { .. })
    ));
}

/// Measures and prints the balance for 3, 6 and 12 nodes in 1, 2 and 3 zones
/// (`cargo test -p ringkv-node balance_table -- --nocapture` shows the table).
/// "replica" is the share a node stores with N=3 (what Admin.Status reports
/// as owned_fraction); "primary" the share it owns as first replica.
#[test]
fn balance_table_for_3_6_12_nodes() {
    for zones in [1usize, 2, 3] {
        for count in [3usize, 6, 12] {
            let (mut worst_primary, mut worst_replica) = (0f64, 0f64);
            for seed in 0..20u64 {
                let ring = grow(count, 128, seed, zones);
                worst_primary = worst_primary.max(max_over_mean(&ring.primary_ownership()));
                worst_replica = worst_replica.max(max_over_mean(&ring.ownership(3)));
            }
            println!(
                "ring balance: {count:>2} nodes, {zones} zone(s), 128 vnodes, worst of 20 seeds: max/mean replica share {worst_replica:.3}, primary share {worst_primary:.3}"
            );
            assert!(worst_replica <= 1.3);
            if zones == 1 {
                assert!(worst_primary <= 1.3);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn most_loaded_node_owns_at_most_1_3x_the_mean(seed in any::<u64>(), count in prop::sample::select(vec![3usize, 6, 12]), zones in 1usize..4) {
        let ring = grow(count, 128, seed, zones);
        if zones == 1 {
            // With zones, tokens balance within each zone (that is what decides
            // what a node stores), so only single-zone primaries are even.
            let primary = max_over_mean(&ring.primary_ownership());
            prop_assert!(primary <= 1.3, "primary max/mean {primary:.3} for {count} nodes");
        }
        let replica = max_over_mean(&ring.ownership(3));
        prop_assert!(replica <= 1.3, "replica max/mean {replica:.3} for {count} nodes");
        let total: f64 = ring.ownership(3).values().sum();
        prop_assert!((total - 3f64.min(count as f64)).abs() < 1e-6);
    }

    #[test]
    fn adding_a_node_moves_about_1_over_n(seed in any::<u64>(), count in 3usize..12, zones in 1usize..4) {
        let before = grow(count, 128, seed, zones);
        let after = grow(count + 1, 128, seed, zones);
        let n = (count + 1) as f64;
        let data = moved_replicas(&before, &after, seed ^ 1);
        prop_assert!(data <= 1.5 / n, "moved {data:.3} of replicas > 1.5/{n}");
        prop_assert!(data > 0.5 / n, "moved {data:.3}: the new node took almost nothing");
        if zones == 1 {
            let moved = moved_fraction(&before, &after, seed ^ 1);
            prop_assert!(moved <= 1.5 / n, "moved {moved:.3} of primaries > 1.5/{n}");
        }
    }

    #[test]
    fn removing_a_node_moves_about_1_over_n(seed in any::<u64>(), count in 4usize..13, victim in any::<prop::sample::Index>(), zones in 1usize..4) {
        let before = grow(count, 128, seed, zones);
        let gone = victim.index(count);
        let remaining: Vec<RingNode> = before.nodes().iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.clone()).collect();
        let after = Ring::new(remaining);
        let n = count as f64;
        let data = moved_replicas(&before, &after, seed ^ 2);
        // What the victim stored has to move, and little else. That is about
        // 1/n, except with uneven zones: the only node of its zone holds a
        // replica of every key (1/3 of all replicas with N=3).
        let victim_id = before.nodes()[gone].id.clone();
        let share = before.ownership(3)[&victim_id] / 3.0;
        let bound = 1.5 * share.max(1.0 / n);
        prop_assert!(data <= bound, "moved {data:.3} of replicas > {bound:.3} (victim held {share:.3})");
        if zones == 1 {
            let moved = moved_fraction(&before, &after, seed ^ 2);
            prop_assert!(moved <= 1.5 / n, "moved {moved:.3} of primaries > 1.5/{n}");
        }
    }

    #[test]
    fn zone_rule_always_holds(
        seed in any::<u64>(),
        count in 1usize..14,
        zones in 1usize..5,
        n in 1usize..6,
        probes in prop::collection::vec(any::<u64>(), 32),
        random_tokens in any::<bool>(),
    ) {
        let ring = if random_tokens {
            let mut rng = SplitMix64::new(seed);
            Ring::new((0..count).map(|i| node(i, &format!("z{}", i % zones), (0..16).map(|_| rng.next_u64()).collect())).collect())
        } else {
            grow(count, 16, seed, zones)
        };
        let zone_total = zones.min(count);
        for t in probes {
            let list = ring.preference_list(t, n);
            prop_assert_eq!(list.len(), n.min(count));
            let ids: HashSet<_> = list.iter().map(|x| &x.id).collect();
            prop_assert_eq!(ids.len(), list.len(), "replicas must be distinct nodes");
            let zs: HashSet<_> = list.iter().map(|x| &x.zone).collect();
            prop_assert_eq!(zs.len(), n.min(zone_total), "replicas must spread over as many zones as possible");
            prop_assert_eq!(&list[0].id, &ring.primary(t).unwrap().id);
        }
    }
}
