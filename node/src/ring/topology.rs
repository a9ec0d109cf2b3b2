//! The ring as built from one membership view. Rebuilt (never mutated) on
//! every membership change, and shared by reference with in-flight requests.
//!
//! Two rings: `ring` is who serves now (NORMAL, LEAVING and REPAIRING
//! members — a repairing one takes writes, not reads) and `future` is who
//! will once every move completes (NORMAL, JOINING, REPAIRING). Reads
//! use `ring`; writes also reach the replicas `future` adds ("pending"), so a
//! range moving to a joining node, or away from a leaving one, gets every
//! write on both its old and new owners during the move.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Ring, RingNode, Token, key_token};
use crate::membership::{Member, MembershipView, NodeState};

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub view: Arc<MembershipView>,
    pub ring: Ring,
    pub future: Ring,
    /// `view.members`, shared: a request's plan holds these, not copies.
    members: Vec<Arc<Member>>,
    /// Preference lists of every range for the node's N, computed once per
    /// topology (the request path looks them up instead of walking the ring).
    current: RangeTable,
    /// The same for the future ring; empty unless a node joins or leaves.
    moving: RangeTable,
    n: usize,
}

/// Per range of a ring (sorted by end token): its replicas, as indices
/// into `Topology::members`, primary first.
#[derive(Debug, Clone, Default)]
struct RangeTable {
    ends: Vec<Token>,
    replicas: Vec<Box<[u32]>>,
}

impl RangeTable {
    fn build(ring: &Ring, n: usize, members: &[Arc<Member>]) -> RangeTable {
        let index = |id: &str| {
            members
                .iter()
                .position(|m| m.node_id == id)
                .map(|i| i as u32)
        };
        let mut rows: Vec<(Token, Box<[u32]>)> = ring
            .ranges()
            .into_iter()
            .map(|(_, end, _)| {
                let reps: Vec<u32> = ring
                    .preference_list(end, n)
                    .into_iter()
                    .filter_map(|r| index(&r.id))
                    .collect();
                (end, reps.into_boxed_slice())
            })
            .collect();
        rows.sort_by_key(|(end, _)| *end);
        rows.dedup_by_key(|(end, _)| *end);
        RangeTable {
            ends: rows.iter().map(|(e, _)| *e).collect(),
            replicas: rows.into_iter().map(|(_, r)| r).collect(),
        }
    }

    fn lookup(&self, t: Token) -> &[u32] {
        if self.ends.is_empty() {
            return &[];
        }
        let i = self.ends.partition_point(|&e| e < t);
        &self.replicas[if i == self.ends.len() { 0 } else { i }]
    }
}

/// Where one write goes.
#[derive(Debug, Clone, Default)]
pub struct WritePlan {
    /// The key's replicas in the current ring, primary first.
    pub replicas: Vec<Arc<Member>>,
    /// Replicas the future ring adds.
    pub pending: Vec<Arc<Member>>,
}

fn ring_of(view: &MembershipView, keep: impl Fn(NodeState) -> bool) -> Ring {
    Ring::new(
        view.members
            .iter()
            .filter(|m| keep(m.state) && !m.tokens.is_empty())
            .map(|m| RingNode {
                id: m.node_id.clone(),
                zone: m.zone.clone(),
                tokens: m.tokens.as_ref().clone(),
            })
            .collect(),
    )
}

impl Topology {
    pub fn new(view: Arc<MembershipView>) -> Topology {
        Topology::with_replication(view, 0)
    }

    /// A topology whose preference lists for replication factor `n` are
    /// computed up front (`n` = 0: none, everything computed on demand).
    pub fn with_replication(view: Arc<MembershipView>, n: usize) -> Topology {
        let ring = ring_of(&view, |s| s.in_ring());
        let future = ring_of(&view, |s| {
            matches!(
                s,
                NodeState::Normal | NodeState::Joining | NodeState::Repairing
            )
        });
        let members: Vec<Arc<Member>> = view.members.iter().cloned().map(Arc::new).collect();
        let moving = future.nodes().len() != ring.nodes().len()
            || view
                .members
                .iter()
                .any(|m| matches!(m.state, NodeState::Joining | NodeState::Leaving));
        let (current, moving) = if n == 0 {
            Default::default()
        } else {
            (
                RangeTable::build(&ring, n, &members),
                if moving {
                    RangeTable::build(&future, n, &members)
                } else {
                    RangeTable::default()
                },
            )
        };
        Topology {
            ring,
            future,
            view,
            members,
            current,
            moving,
            n,
        }
    }

    fn members_of(&self, idx: &[u32]) -> Vec<Arc<Member>> {
        idx.iter()
            .map(|&i| self.members[i as usize].clone())
            .collect()
    }

    fn member_arc(&self, id: &str) -> Option<Arc<Member>> {
        self.members.iter().find(|m| m.node_id == id).cloned()
    }

    /// The replicas of `key`, primary first, shared (no copies).
    pub fn replica_set(&self, key: &[u8], n: usize) -> Vec<Arc<Member>> {
        let t = key_token(key);
        if n == self.n && !self.ring.is_empty() {
            return self.members_of(self.current.lookup(t));
        }
        self.ring
            .preference_list(t, n)
            .into_iter()
            .filter_map(|r| self.member_arc(&r.id))
            .collect()
    }

    /// The replicas of `key`, primary first.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<&Member> {
        self.replicas_of_token(key_token(key), n)
    }

    pub fn replicas_of_token(&self, t: Token, n: usize) -> Vec<&Member> {
        self.ring
            .preference_list(t, n)
            .into_iter()
            .filter_map(|r| self.view.get(&r.id))
            .collect()
    }

    /// Replicas of token `t` once every pending move is done.
    pub fn future_replicas_of_token(&self, t: Token, n: usize) -> Vec<&Member> {
        self.future
            .preference_list(t, n)
            .into_iter()
            .filter_map(|r| self.view.get(&r.id))
            .collect()
    }

    pub fn write_plan(&self, key: &[u8], n: usize) -> WritePlan {
        let t = key_token(key);
        let replicas = self.replica_set(key, n);
        let moving = self.future.nodes().len() != self.ring.nodes().len()
            || self
                .view
                .members
                .iter()
                .any(|m| matches!(m.state, NodeState::Joining | NodeState::Leaving));
        let pending = if !moving {
            Vec::new()
        } else {
            let future: Vec<Arc<Member>> = if n == self.n && !self.future.is_empty() {
                self.members_of(self.moving.lookup(t))
            } else {
                self.future
                    .preference_list(t, n)
                    .into_iter()
                    .filter_map(|r| self.member_arc(&r.id))
                    .collect()
            };
            future
                .into_iter()
                .filter(|m| !replicas.iter().any(|r| r.node_id == m.node_id))
                .collect()
        };
        WritePlan { replicas, pending }
    }

    /// Alive nodes clockwise from `key`'s owner that are not in `exclude`:
    /// the substitutes of a sloppy quorum, nearest first.
    pub fn substitutes(&self, key: &[u8], exclude: &[String]) -> Vec<Arc<Member>> {
        self.ring
            .clockwise(key_token(key))
            .into_iter()
            .filter(|r| !exclude.contains(&r.id))
            .filter_map(|r| self.member_arc(&r.id))
            .filter(|m| m.alive && m.state == NodeState::Normal)
            .collect()
    }
}

/// The current topology, shared by the coordinator, repair and hand-off;
/// replaced whole on every membership change, read without locking.
#[derive(Debug, Default)]
pub struct SharedTopology(ArcSwap<Topology>);

impl SharedTopology {
    pub fn get(&self) -> Arc<Topology> {
        self.0.load_full()
    }

    pub fn set(&self, t: Topology) {
        self.0.store(Arc::new(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::SplitMix64;

    fn member(id: &str, zone: &str, state: NodeState, rng: &mut SplitMix64) -> Member {
        Member {
            node_id: id.into(),
            zone: zone.into(),
            state,
            generation: 1,
            tokens: Arc::new((0..16).map(|_| rng.next_u64()).collect()),
            internode_addr: String::new(),
            client_grpc_addr: String::new(),
            http_addr: String::new(),
            gossip_addr: String::new(),
            alive: true,
        }
    }

    /// The precomputed tables answer exactly what walking the ring answers.
    #[test]
    fn precomputed_preference_lists_match_the_ring() {
        let mut rng = SplitMix64::new(7);
        let states = [
            NodeState::Normal,
            NodeState::Normal,
            NodeState::Joining,
            NodeState::Normal,
            NodeState::Leaving,
            NodeState::Normal,
        ];
        let members: Vec<Member> = states
            .iter()
            .enumerate()
            .map(|(i, s)| member(&format!("n{i}"), &format!("z{}", i % 3), *s, &mut rng))
            .collect();
        let view = Arc::new(MembershipView {
            version: 1,
            members,
        });
        let fast = Topology::with_replication(view.clone(), 3);
        let slow = Topology::new(view);
        let ids = |v: Vec<Arc<Member>>| v.iter().map(|m| m.node_id.clone()).collect::<Vec<_>>();
        for i in 0..2000u32 {
            let key = i.to_be_bytes();
            assert_eq!(
                ids(fast.replica_set(&key, 3)),
                ids(slow.replica_set(&key, 3))
            );
            let (a, b) = (fast.write_plan(&key, 3), slow.write_plan(&key, 3));
            assert_eq!(ids(a.replicas), ids(b.replicas));
            assert_eq!(ids(a.pending), ids(b.pending));
            // Another N than the table's still works (computed on demand).
            assert_eq!(
                ids(fast.replica_set(&key, 2)),
                ids(slow.replica_set(&key, 2))
            );
        }
        // The boundaries: a range's own end token, and past the last end.
        for t in fast
            .ring
            .ranges()
            .iter()
            .map(|(_, e, _)| *e)
            .chain([0, u64::MAX])
        {
            let via_ring: Vec<String> = fast
                .ring
                .preference_list(t, 3)
                .iter()
                .map(|r| r.id.clone())
                .collect();
            let via_table: Vec<String> = fast
                .current
                .lookup(t)
                .iter()
                .map(|&i| fast.members[i as usize].node_id.clone())
                .collect();
            assert_eq!(via_ring, via_table, "token {t}");
        }
    }
}
