//! The ring as built from one membership view. Rebuilt (never mutated) on
//! every membership change, and shared by reference with in-flight requests.

use std::sync::Arc;

use crate::membership::{Member, MembershipView};
use crate::ring::{Ring, RingNode, key_token};

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub view: Arc<MembershipView>,
    pub ring: Ring,
}

impl Topology {
    pub fn new(view: Arc<MembershipView>) -> Topology {
        let nodes = view
            .members
            .iter()
            .filter(|m| m.state.in_ring() && !m.tokens.is_empty())
            .map(|m| RingNode {
                id: m.node_id.clone(),
                zone: m.zone.clone(),
                tokens: m.tokens.as_ref().clone(),
            })
            .collect();
        Topology {
            ring: Ring::new(nodes),
            view,
        }
    }

    /// The replicas of `key`, primary first.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<&Member> {
        self.ring
            .preference_list(key_token(key), n)
            .into_iter()
            .filter_map(|r| self.view.get(&r.id))
            .collect()
    }
}
