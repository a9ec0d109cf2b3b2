//! Who is in the cluster: members, their zones, addresses, tokens, states and
//! generations, and whether this node currently hears from them.
//!
//! Consumers (the coordinator's topology, Admin.Status) only see
//! [`MembershipView`] snapshots through a `watch` channel, never the gossip
//! that fills them ([`gossip`]: chitchat's Scuttlebutt gossip with a
//! phi-accrual failure detector), behind a socket that authenticates and
//! bounds every datagram ([`guard`]).

pub mod generation;
mod gossip;
pub mod guard;
pub mod removal;
mod udp;

pub use gossip::{GENERATION_SKEW, GossipOptions, Membership, MembershipError};
pub use guard::{DropReason, GossipSecret};
pub use removal::Removal;

use std::sync::Arc;

use ringkv_proto::v1 as pb;

/// A node's lifecycle state in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Joining,
    Normal,
    Leaving,
    Left,
    /// Lost its data and is being restored: a replica for writes, not for
    /// reads (see `NODE_STATE_REPAIRING`).
    Repairing,
}

impl NodeState {
    pub fn to_proto(self) -> pb::NodeState {
        match self {
            NodeState::Joining => pb::NodeState::Joining,
            NodeState::Normal => pb::NodeState::Normal,
            NodeState::Leaving => pb::NodeState::Leaving,
            NodeState::Left => pb::NodeState::Left,
            NodeState::Repairing => pb::NodeState::Repairing,
        }
    }
    pub fn from_proto(s: i32) -> Option<NodeState> {
        match pb::NodeState::try_from(s).ok()? {
            pb::NodeState::Joining => Some(NodeState::Joining),
            pb::NodeState::Normal => Some(NodeState::Normal),
            pb::NodeState::Leaving => Some(NodeState::Leaving),
            pb::NodeState::Left => Some(NodeState::Left),
            pb::NodeState::Repairing => Some(NodeState::Repairing),
            pb::NodeState::Unspecified => None,
        }
    }
    /// Whether the node's tokens count in the ring (it serves its ranges).
    pub fn in_ring(self) -> bool {
        matches!(
            self,
            NodeState::Normal | NodeState::Leaving | NodeState::Repairing
        )
    }

    /// Whether reads may count the node's answer (it holds its data).
    pub fn serves_reads(self) -> bool {
        matches!(self, NodeState::Normal | NodeState::Leaving)
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub zone: String,
    pub state: NodeState,
    pub generation: u64,
    pub tokens: Arc<Vec<u64>>,
    pub internode_addr: String,
    pub client_grpc_addr: String,
    pub http_addr: String,
    pub gossip_addr: String,
    /// This node's verdict: it heard from the member recently (always true for itself).
    pub alive: bool,
}

impl Member {
    pub fn from_info(info: &pb::MemberInfo, alive: bool) -> Option<Member> {
        Some(Member {
            node_id: info.node_id.clone(),
            zone: info.zone.clone(),
            state: NodeState::from_proto(info.state)?,
            generation: info.generation,
            tokens: Arc::new(info.tokens.clone()),
            internode_addr: info.internode_addr.clone(),
            client_grpc_addr: info.client_grpc_addr.clone(),
            http_addr: info.http_addr.clone(),
            gossip_addr: info.gossip_addr.clone(),
            alive,
        })
    }
}

/// An immutable snapshot of the membership; `version` grows with every change.
#[derive(Debug, Clone, Default)]
pub struct MembershipView {
    pub version: u64,
    /// Sorted by node id; includes this node.
    pub members: Vec<Member>,
}

impl MembershipView {
    pub fn get(&self, node_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.node_id == node_id)
    }
}
