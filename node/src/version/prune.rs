//! Forgetting writer ids that can never write again (Riak prunes its vector
//! clocks for the same reason: without it a record names every writer that
//! ever touched the key).
//!
//! A node mints dots under `node` or `node~epoch`, and after every unclean
//! stop under a new `node~epoch` whose epoch is the wall-clock time of that
//! start (`replica::writer`); a node id that comes back with lost data also
//! gets a new epoch. So once a record names `node~e2`, every older id of the
//! same node (`node`, `node~e` with `e < e2`) stopped minting by `e2` at the
//! latest. Each crash of a coordinator would otherwise add an entry to every
//! key it writes afterwards, for good.
//!
//! An entry of such a retired id is dropped when it holds no value (all its
//! events superseded) and the newer id is at least the tombstone grace old.
//! This is the tombstone rule: within the grace every replica has converged
//! on the retired writer's events (repair runs, hints are delivered within
//! `max_hint_window`), so every copy holds the same value-less entry, and
//! merging a pruned copy with an unpruned one only brings back an entry
//! that holds nothing. A replica left unrepaired for longer than the grace
//! could show an overwritten value of the retired writer again, as it could
//! a deleted one. Pruning never loses a write: no new dot is ever minted
//! under a retired id, and this node's own id is never pruned (which also
//! covers a wall clock that went back across a restart).

use std::collections::BTreeMap;

use super::dvv::DvvSet;

/// `(node id, epoch)` of a writer id; a plain node id is epoch 0. `None` for
/// an id of another shape (never pruned, never counted as newer).
fn writer_epoch(id: &str) -> Option<(&str, u64)> {
    match id.split_once('~') {
        None => Some((id, 0)),
        Some((node, epoch)) => epoch.parse().ok().map(|e| (node, e)),
    }
}

impl<V: Clone> DvvSet<V> {
    /// Drops the value-less entries of retired writer ids (see the module
    /// docs) whose successor started at least `grace_ms` before `now_ms`,
    /// never `keep` (this node's own writer id). Returns how many it dropped.
    pub fn prune_retired(&mut self, keep: &str, now_ms: u64, grace_ms: u64) -> usize {
        // The common case, on every write: no id with an epoch, so no id
        // has a successor (checked without allocating).
        if !self.entries.iter().any(|e| e.node.contains('~')) {
            return 0;
        }
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &self.entries {
            if let Some((node, epoch)) = writer_epoch(&e.node) {
                let n = newest.entry(node).or_insert(epoch);
                *n = (*n).max(epoch);
            }
        }
        let retired: Vec<bool> = self
            .entries
            .iter()
            .map(|e| {
                e.values.is_empty()
                    && e.node != keep
                    && writer_epoch(&e.node).is_some_and(|(node, epoch)| {
                        let successor = newest[node];
                        successor > epoch && successor.saturating_add(grace_ms) <= now_ms
                    })
            })
            .collect();
        let dropped = retired.iter().filter(|r| **r).count();
        if dropped > 0 {
            let mut flags = retired.into_iter();
            self.entries.retain(|_| !flags.next().unwrap_or(false));
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Entry;

    const GRACE: u64 = 1_000;

    fn entry(node: &str, counter: u64, values: &[&'static str]) -> Entry<&'static str> {
        Entry {
            node: node.to_string(),
            counter,
            values: values.to_vec(),
        }
    }

    fn set(entries: Vec<Entry<&'static str>>) -> DvvSet<&'static str> {
        let mut entries = entries;
        entries.sort_by(|a, b| a.node.cmp(&b.node));
        DvvSet { entries }
    }

    fn nodes<'a>(d: &'a DvvSet<&'static str>) -> Vec<&'a str> {
        d.entries.iter().map(|e| e.node.as_str()).collect()
    }

    #[test]
    fn a_retired_id_with_nothing_left_goes_once_its_successor_is_a_grace_old() {
        let base = set(vec![
            entry("a", 4, &[]),
            entry("a~5000", 2, &[]),
            entry("a~9000", 1, &["new"]),
            entry("b", 3, &["b3"]),
        ]);
        // Before the grace has passed since the successor started: kept.
        let mut d = base.clone();
        assert_eq!(d.prune_retired("me", 9000 + GRACE - 1, GRACE), 0);
        assert_eq!(d, base);
        // After: both older ids of `a` go; `a~9000` and `b` stay.
        assert_eq!(d.prune_retired("me", 9000 + GRACE, GRACE), 2);
        assert_eq!(nodes(&d), ["a~9000", "b"]);
        assert_eq!(d.values().copied().collect::<Vec<_>>(), ["new", "b3"]);
    }

    #[test]
    fn values_own_id_odd_ids_and_lone_ids_are_never_pruned() {
        let base = set(vec![
            entry("a", 4, &["still a sibling"]),
            entry("c", 2, &[]),
            entry("c~100", 1, &["c"]),
            entry("d~x", 1, &[]),
            entry("d~200", 1, &["d"]),
            entry("e~300", 7, &[]),
            entry("a~100", 1, &["a"]),
        ]);
        let mut d = base.clone();
        assert_eq!(d.prune_retired("c", u64::MAX, GRACE), 0, "{d:?}");
        assert_eq!(d, base);
        // Without the `keep`, `c` goes.
        assert_eq!(d.prune_retired("me", u64::MAX, GRACE), 1);
        assert!(!nodes(&d).contains(&"c"));
    }

    #[test]
    fn merging_a_pruned_copy_with_a_converged_one_changes_no_value() {
        // Two converged replicas: `a` (retired by `a~500`) holds nothing.
        let copy = set(vec![
            entry("a", 3, &[]),
            entry("a~500", 2, &["x"]),
            entry("b", 1, &["y"]),
        ]);
        let mut pruned = copy.clone();
        assert_eq!(pruned.prune_retired("me", 500 + GRACE, GRACE), 1);
        for m in [pruned.sync(&copy), copy.sync(&pruned)] {
            let mut vals: Vec<_> = m.values().copied().collect();
            vals.sort();
            assert_eq!(vals, ["x", "y"], "no value comes back or goes");
            let mut again = m.clone();
            again.prune_retired("me", 500 + GRACE, GRACE);
            assert_eq!(again, pruned, "pruning again converges");
        }
        // A client write through the new id after pruning supersedes what
        // its context saw, the retired id included.
        let ctx = copy.join();
        let next = DvvSet::update(&pruned, &ctx, "a~500", "z");
        let mut vals: Vec<_> = next.values().copied().collect();
        vals.sort();
        assert_eq!(vals, ["z"]);
    }
}
