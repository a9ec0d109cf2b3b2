//! Dotted version vector sets (Almeida, Baquero et al., "Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", 2014; Riak's
//! `dvvset`). One vector entry per writer holds a counter and the values of
//! that writer's newest events that no other version has superseded, so
//! siblings stay bounded by true concurrency instead of exploding like
//! per-client vector clocks.

use super::context::VersionVector;

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
                e.counter += 1;
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
    pub fn update(local: &Self, ctx: &VersionVector, node: &str, value: V) -> Self {
        Self::from_context(ctx).sync(local).event(node, value)
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
    let (n1, l1, n2, l2) = (
        a.counter,
        a.values.len() as u64,
        b.counter,
        b.values.len() as u64,
    );
    // The entry with the larger counter wins; its value list is cut to the
    // events the other side has not superseded (Riak dvvset's merge/5).
    let (winner, keep) = if n1 >= n2 {
        if n1 - l1 >= n2 - l2.min(n2) {
            (a, l1)
        } else {
            (a, n1 - n2 + l2)
        }
    } else if n2 - l2 >= n1 - l1.min(n1) {
        (b, l2)
    } else {
        (b, n2 - n1 + l1)
    };
    Entry {
        node: winner.node.clone(),
        counter: winner.counter,
        values: winner.values.iter().take(keep as usize).cloned().collect(),
    }
}
