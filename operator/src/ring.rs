//! What nodes say about themselves and the ring, as plain data the planner can
//! reason about (converted from the Admin gRPC messages).

use ringkv_proto::v1 as pb;

/// Membership state of a node, as in `ringkv.v1.NodeState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    Joining,
    Normal,
    Leaving,
    Left,
    Unknown,
}

impl NodeState {
    pub fn from_proto(v: i32) -> Self {
        match pb::NodeState::try_from(v) {
            Ok(pb::NodeState::Joining) => Self::Joining,
            Ok(pb::NodeState::Normal) => Self::Normal,
            Ok(pb::NodeState::Leaving) => Self::Leaving,
            Ok(pb::NodeState::Left) => Self::Left,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Normal => "normal",
            Self::Leaving => "leaving",
            Self::Left => "left",
            Self::Unknown => "unknown",
        }
    }

    pub fn to_proto(self) -> pb::NodeState {
        match self {
            Self::Joining => pb::NodeState::Joining,
            Self::Normal => pb::NodeState::Normal,
            Self::Leaving => pb::NodeState::Leaving,
            Self::Left => pb::NodeState::Left,
            Self::Unknown => pb::NodeState::Unspecified,
        }
    }
}

/// A ring member as some node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub zone: String,
    pub state: NodeState,
    pub alive: bool,
}

/// Phase of a node's decommission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecommissionPhase {
    NotStarted,
    Streaming,
    Done,
    Failed,
    Unknown,
}

impl DecommissionPhase {
    pub fn from_proto(v: i32) -> Self {
        use pb::decommission_status::Phase;
        match Phase::try_from(v) {
            Ok(Phase::NotStarted) => Self::NotStarted,
            Ok(Phase::Streaming) => Self::Streaming,
            Ok(Phase::Done) => Self::Done,
            Ok(Phase::Failed) => Self::Failed,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "NotStarted",
            Self::Streaming => "Streaming",
            Self::Done => "Done",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Decommission progress of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecommissionReport {
    pub phase: DecommissionPhase,
    pub ranges_total: u32,
    pub ranges_done: u32,
    pub keys_streamed: u64,
    pub error: String,
}

impl From<&pb::DecommissionStatus> for DecommissionReport {
    fn from(d: &pb::DecommissionStatus) -> Self {
        Self {
            phase: DecommissionPhase::from_proto(d.phase),
            ranges_total: d.ranges_total,
            ranges_done: d.ranges_done,
            keys_streamed: d.keys_streamed,
            error: d.error.clone(),
        }
    }
}

/// Anti-entropy state of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairReport {
    pub running: bool,
    pub repair_id: u64,
    /// Unix ms of the last repair that completed every range; 0 = never.
    pub last_completed_unix_ms: u64,
    /// Why the last repair did not complete every range (empty if it did).
    pub last_error: String,
}

/// A node's answer to `Admin.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node_id: String,
    pub state: NodeState,
    pub members: Vec<Member>,
    pub decommission: Option<DecommissionReport>,
    pub repair: RepairReport,
}

impl From<&pb::StatusResponse> for NodeReport {
    fn from(s: &pb::StatusResponse) -> Self {
        Self {
            node_id: s.node_id.clone(),
            state: NodeState::from_proto(s.state),
            members: s
                .members
                .iter()
                .map(|m| Member {
                    node_id: m.node_id.clone(),
                    zone: m.zone.clone(),
                    state: NodeState::from_proto(m.state),
                    alive: m.alive,
                })
                .collect(),
            decommission: s.decommission.as_ref().map(DecommissionReport::from),
            repair: s
                .repair
                .as_ref()
                .map(|r| RepairReport {
                    running: r.running,
                    repair_id: r.repair_id,
                    last_completed_unix_ms: r.last_completed_unix_ms,
                    last_error: r.last_error.clone(),
                })
                .unwrap_or_default(),
        }
    }
}

/// What the operator learned by asking one node for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeObservation {
    Report(NodeReport),
    /// The node could not be asked (pod not running, network, timeout).
    Unreachable(String),
}

impl NodeObservation {
    pub fn report(&self) -> Option<&NodeReport> {
        match self {
            Self::Report(r) => Some(r),
            Self::Unreachable(_) => None,
        }
    }

    /// The node's own view of its state.
    pub fn state(&self) -> Option<NodeState> {
        self.report().map(|r| r.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_status_response() {
        let resp = pb::StatusResponse {
            node_id: "kv-zone-a-0".into(),
            state: pb::NodeState::Leaving as i32,
            members: vec![pb::Member {
                node_id: "kv-zone-b-0".into(),
                zone: "zone-b".into(),
                state: pb::NodeState::Normal as i32,
                alive: true,
                ..Default::default()
            }],
            decommission: Some(pb::DecommissionStatus {
                phase: pb::decommission_status::Phase::Streaming as i32,
                ranges_total: 10,
                ranges_done: 4,
                keys_streamed: 99,
                ..Default::default()
            }),
            repair: Some(pb::RepairStatus {
                running: true,
                repair_id: 7,
                last_completed_unix_ms: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = NodeReport::from(&resp);
        assert_eq!(r.state, NodeState::Leaving);
        assert_eq!(r.members[0].state, NodeState::Normal);
        assert_eq!(r.members[0].zone, "zone-b");
        let d = r.decommission.unwrap();
        assert_eq!(
            (d.phase, d.ranges_done, d.ranges_total, d.keys_streamed),
            (DecommissionPhase::Streaming, 4, 10, 99)
        );
        assert_eq!(
            r.repair,
            RepairReport {
                running: true,
                repair_id: 7,
                last_completed_unix_ms: 5,
                last_error: String::new(),
            }
        );
        assert_eq!(NodeState::from_proto(42), NodeState::Unknown);
        assert_eq!(DecommissionPhase::from_proto(0), DecommissionPhase::Unknown);
        for s in [
            NodeState::Joining,
            NodeState::Normal,
            NodeState::Leaving,
            NodeState::Left,
        ] {
            assert_eq!(NodeState::from_proto(s.to_proto() as i32), s);
        }
    }
}
