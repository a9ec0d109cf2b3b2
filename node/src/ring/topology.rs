//! The ring as built from one membership view. Rebuilt (never mutated) on
//! every membership change, and shared by reference with in-flight requests.
//!
//! Two rings: `ring` is who serves now (NORMAL and LEAVING members) and
//! `future` is who will once every move completes (NORMAL and JOINING). Reads
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
}

/// Where one write goes.
#[derive(Debug, Clone, Default)]
pub struct WritePlan {
    /// The key's replicas in the current ring, primary first.
    pub replicas: Vec<Member>,
    /// Replicas the future ring adds.
    pub pending: Vec<Member>,
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
        Topology {
            ring: ring_of(&view, |s| s.in_ring()),
            future: ring_of(&view, |s| {
                matches!(s, NodeState::Normal | NodeState::Joining)
            }),
            view,
        }
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
        let replicas: Vec<Member> = self.replicas_of_token(t, n).into_iter().cloned().collect();
        let pending = if self.future.nodes().len() == self.ring.nodes().len()
            && self
                .view
                .members
                .iter()
                .all(|m| !matches!(m.state, NodeState::Joining | NodeState::Leaving))
        {
            Vec::new()
        } else {
            self.future_replicas_of_token(t, n)
                .into_iter()
                .filter(|m| !replicas.iter().any(|r| r.node_id == m.node_id))
                .cloned()
                .collect()
        };
        WritePlan { replicas, pending }
    }

    /// Alive nodes clockwise from `key`'s owner that are not in `exclude`:
    /// the substitutes of a sloppy quorum, nearest first.
    pub fn substitutes(&self, key: &[u8], exclude: &[String]) -> Vec<Member> {
        self.ring
            .clockwise(key_token(key))
            .into_iter()
            .filter(|r| !exclude.contains(&r.id))
            .filter_map(|r| self.view.get(&r.id))
            .filter(|m| m.alive && m.state == NodeState::Normal)
            .cloned()
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
