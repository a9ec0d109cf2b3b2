//! Dotted version vector sets (Almeida, Baquero et al., "Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", 2014; Riak's
//! `dvvset`). One vector entry per writer holds a counter and the values of
//! that writer's newest events that no other version has superseded, so
//! siblings stay bounded by true concurrency instead of exploding like
//! per-client vector clocks.

use super::context::{MAX_CONTEXT_ENTRIES, MAX_COUNTER, VersionVector};

/// Writers a client write may bring into a record it has never seen (see
/// [`DvvSet::update`]). Real writers are the coordinators of the key, a
/// handful; anything past this comes from a forged or stale context.
pub const MAX_WRITERS: usize = MAX_CONTEXT_ENTRIES;

/// One writer's entry: events `1..=counter` seen; `values[i]` is the value of
/// event `counter - i` (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<V> {
    pub node: String,
    pub counter: u64,
    pub values: Vec<V>,
}

/// A DVV set. Entries are sorted by node id, each node at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvvSet<V> {
    pub entries: Vec<Entry<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        DvvSet {
            entries: Vec::new(),
        }
    }
}

impl<V: Clone> DvvSet<V> {
    /// The causal history of a context, with no values.
    pub fn from_context(vv: &VersionVector) -> Self {
        DvvSet {
            entries: vv
                .iter()
                .map(|(node, counter)| Entry {
                    node: node.to_string(),
                    counter,
                    values: Vec::new(),
                })
                .collect(),
        }
    }

    /// The version vector summarising everything this set has seen.
    pub fn join(&self) -> VersionVector {
        VersionVector::from_sorted(
            self.entries
                .iter()
                .map(|e| (e.node.clone(), e.counter))
                .collect(),
        )
    }

    /// Every sibling value, any order stable for equal inputs.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().flat_map(|e| e.values.iter())
    }

    /// Mutable access to every value (e.g. to rewrite metadata in place).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().flat_map(|e| e.values.iter_mut())
    }

    /// The version sync: the union of both causal histories keeping only the
    /// values neither side has superseded. Commutative, associative, idempotent.
    pub fn sync(&self, other: &Self) -> Self {
        let (a, b) = (&self.entries, &other.entries);
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].node < b[j].node) {
                out.push(a[i].clone());
                i += 1;
            } else if i == a.len() || b[j].node < a[i].node {
                out.push(b[j].clone());
                j += 1;
            } else {
                out.push(merge_entry(&a[i], &b[j]));
                i += 1;
                j += 1;
            }
        }
        DvvSet { entries: out }
    }

    /// A new event by writer `node` with `value`, on top of this history.
    pub fn event(&self, node: &str, value: V) -> Self {
        let mut entries = self.entries.clone();
        match entries.binary_search_by(|e| e.node.as_str().cmp(node)) {
            Ok(i) => {
                let e = &mut entries[i];
                // Decoders cap counters at MAX_COUNTER (2^56), far above any
                // reachable count (contexts and peers are held to
                // `counter_ceiling`); saturating there keeps every record
                // this produces decodable, whatever came in.
                e.counter = e.counter.saturating_add(1).min(MAX_COUNTER);
                e.values.insert(0, value);
            }
            Err(i) => entries.insert(
                i,
                Entry {
                    node: node.to_string(),
                    counter: 1,
                    values: vec![value],
                },
            ),
        }
        DvvSet { entries }
    }

    /// A client write: `value` supersedes what `ctx` saw of `local`, and stays
    /// concurrent with what it did not see.
    ///
    /// The context is untrusted: writers it names that `local` has never
    /// seen are kept only while the record stays within [`MAX_WRITERS`]
    /// (highest counters first). Dropping one only costs a false sibling if
    /// that writer's event reaches this replica later (the next sync with a
    /// replica that saw the overwrite removes it again); keeping them all
    /// lets three PUTs build a record no context can name (issue 9,
    /// finding 5). Entries `local` already holds are never dropped, so a
    /// writer's counter never goes back (no dot is ever minted twice).
    pub fn update(local: &Self, ctx: &VersionVector, node: &str, value: V) -> Self {
        let known = |n: &str| n == node || local.position(n).is_some();
        let mut foreign: Vec<(&str, u64)> = ctx.iter().filter(|(n, _)| !known(n)).collect();
        let mine = usize::from(local.position(node).is_none());
        let room = MAX_WRITERS.saturating_sub(local.entries.len().saturating_add(mine));
        let ctx = if foreign.len() > room {
            foreign.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            foreign.truncate(room);
            let mut kept: Vec<(String, u64)> = ctx
                .iter()
                .filter(|(n, _)| known(n))
                .chain(foreign)
                .map(|(n, c)| (n.to_string(), c))
                .collect();
            kept.sort();
            std::borrow::Cow::Owned(VersionVector::from_sorted(kept))
        } else {
            std::borrow::Cow::Borrowed(ctx)
        };
        Self::from_context(&ctx).sync(local).event(node, value)
    }

    /// The causal context a reader gets: [`Self::join`], trimmed to
    /// [`MAX_CONTEXT_ENTRIES`] so the server always accepts it back. Writers
    /// with live values (siblings, tombstones) go first, then the highest
    /// counters. A writer left out has no value here, so the coordinator's
    /// own record still supersedes it; only a stale coordinator can show a
    /// false sibling, which the next sync removes.
    pub fn client_context(&self) -> VersionVector {
        if self.entries.len() <= MAX_CONTEXT_ENTRIES {
            return self.join();
        }
        let mut idx: Vec<usize> = (0..self.entries.len()).collect();
        idx.sort_by(|&a, &b| {
            let (ea, eb) = (&self.entries[a], &self.entries[b]);
            (!eb.values.is_empty())
                .cmp(&!ea.values.is_empty())
                .then(eb.counter.cmp(&ea.counter))
                .then(ea.node.cmp(&eb.node))
        });
        idx.truncate(MAX_CONTEXT_ENTRIES);
        idx.sort_unstable();
        VersionVector::from_sorted(
            idx.into_iter()
                .map(|i| (self.entries[i].node.clone(), self.entries[i].counter))
                .collect(),
        )
    }

    /// The context a writer gets back after `update(_, ctx, node, _)`
    /// produced `self`: what its context saw that this record kept, plus
    /// the new dot, within [`MAX_CONTEXT_ENTRIES`].
    pub fn write_context(&self, ctx: &VersionVector, node: &str) -> VersionVector {
        let mut e: Vec<(String, u64)> = ctx
            .iter()
            .filter(|(n, _)| *n != node && self.position(n).is_some())
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        if e.len() >= MAX_CONTEXT_ENTRIES {
            e.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            e.truncate(MAX_CONTEXT_ENTRIES - 1);
        }
        e.push((node.to_string(), self.counter_of(node)));
        e.sort();
        VersionVector::from_sorted(e)
    }

    fn position(&self, node: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.node.as_str().cmp(node))
            .ok()
    }

    /// True when `self` has seen strictly less than `other`.
    pub fn less_than(&self, other: &Self) -> bool {
        self.join().less_than(&other.join())
    }

    pub fn counter_of(&self, node: &str) -> u64 {
        self.entries
            .iter()
            .find(|e| e.node == node)
            .map(|e| e.counter)
            .unwrap_or(0)
    }
}

fn merge_entry<V: Clone>(a: &Entry<V>, b: &Entry<V>) -> Entry<V> {
    // Decoders guarantee values.len() <= counter; `min` keeps this total
    // (no underflow) even if that invariant were ever broken.
    let (n1, n2) = (a.counter, b.counter);
    let l1 = (a.values.len() as u64).min(n1);
    let l2 = (b.values.len() as u64).min(n2);
    // The entry with the larger counter wins; its value list is cut to the
    // events the other side has not superseded (Riak dvvset's merge/5).
    let (winner, keep) = if n1 >= n2 {
        if n1 - l1 >= n2 - l2 {
            (a, l1)
        } else {
            (a, (n1 - n2).saturating_add(l2))
        }
    } else if n2 - l2 >= n1 - l1 {
        (b, l2)
    } else {
        (b, (n2 - n1).saturating_add(l1))
    };
    Entry {
        node: winner.node.clone(),
        counter: winner.counter,
        values: winner
            .values
            .iter()
            .take(usize::try_from(keep).unwrap_or(usize::MAX))
            .cloned()
            .collect(),
    }
}
