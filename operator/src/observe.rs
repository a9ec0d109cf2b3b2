//! Everything the operator observes about a cluster, as plain data: the
//! StatefulSets, pods and volumes (from the Kubernetes API) and what nodes say
//! about themselves and the ring (from the Admin gRPC API). The planner and the
//! status both read [`Observed`]; nothing here decides anything.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use ringkv_proto::v1 as pb;

use crate::crd::SpecError;
use crate::names;

/// StatefulSet annotation: the replicas the operator last applied. A live
/// `spec.replicas` that differs was changed by someone else (drift).
pub const ANNOTATION_REPLICAS: &str = "ringkv.io/replicas";
/// StatefulSet annotation carrying a hash of the pod template the operator
/// last applied; the planner compares it with the desired one to detect a rollout.
pub const ANNOTATION_TEMPLATE_HASH: &str = "ringkv.io/template-hash";
/// PVC annotation: the node on this volume was decommissioned (its data was
/// streamed away) at this time; the volume must never be reused as is.
pub const ANNOTATION_DECOMMISSIONED: &str = "ringkv.io/decommissioned-at";
/// Pod annotation: replace this node, which is gone for good (its volume is
/// lost): remove it from the ring (`RemoveNode`), then re-create its pod on a
/// new, empty volume as a new node. Any value but `false` asks for it.
pub const ANNOTATION_REPLACE: &str = "ringkv.io/replace";

/// What the operator saw this reconcile.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub name: String,
    pub generation: i64,
    pub created_unix_ms: i64,
    pub now_unix_ms: i64,
    /// Live StatefulSet per spec zone.
    pub zones: Vec<Option<StsObservation>>,
    /// Node pods of the cluster, by name.
    pub pods: BTreeMap<String, PodObservation>,
    /// Node volumes of the cluster, by PVC name.
    pub pvcs: BTreeMap<String, PvcObservation>,
    /// Whether the volumes' StorageClass allows expansion; `None` when unknown
    /// (no volume yet, or the class cannot be read).
    pub volume_expansion: Option<bool>,
    /// Versioned ConfigMaps of the cluster, by name.
    pub config_maps: Vec<String>,
    /// Names other KVClusters of the namespace claimed first.
    pub collisions: Vec<SpecError>,
    /// Answers to `Admin.Status`, by pod name.
    pub nodes: BTreeMap<String, NodeObservation>,
}

impl Observed {
    /// Pods of a zone's StatefulSet, by ordinal.
    pub fn zone_pods(&self, cluster: &str, zone: &str) -> BTreeMap<i32, &PodObservation> {
        let prefix = format!("{}-", names::statefulset(cluster, zone));
        self.pods
            .iter()
            .filter_map(|(name, p)| {
                let o = name.strip_prefix(&prefix)?.parse::<i32>().ok()?;
                Some((o, p))
            })
            .collect()
    }
}

/// The part of a StatefulSet the planner reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StsObservation {
    /// `spec.replicas`.
    pub replicas: i32,
    /// The replicas the operator applied last (annotation); `None` on objects
    /// written by older operator versions.
    pub operator_replicas: Option<i32>,
    /// `spec.updateStrategy.rollingUpdate.partition`.
    pub partition: i32,
    /// Template hash the operator last applied.
    pub template_hash: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub status_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// Being deleted (orphaning its pods, for a volume expansion).
    pub deleting: bool,
    /// Size and class of the volume claim template.
    pub volume_size: Option<String>,
    pub volume_class: Option<String>,
    /// Image of the node container.
    pub image: Option<String>,
}

impl StsObservation {
    pub fn from_statefulset(s: &StatefulSet) -> Self {
        let st = s.status.clone().unwrap_or_default();
        let vct = s
            .spec
            .volume_claim_templates
            .as_ref()
            .and_then(|v| {
                v.iter()
                    .find(|c| c.metadata.name.as_deref() == Some(names::VOLUME))
            })
            .and_then(|c| c.spec.as_ref());
        let annotation = |k: &str| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k).cloned())
        };
        Self {
            replicas: s.spec.replicas.unwrap_or(1),
            operator_replicas: annotation(ANNOTATION_REPLICAS).and_then(|v| v.parse().ok()),
            partition: s
                .spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
            template_hash: annotation(ANNOTATION_TEMPLATE_HASH),
            generation: s.metadata.generation.unwrap_or(0),
            observed_generation: st.observed_generation.unwrap_or(0),
            status_replicas: st.replicas,
            ready_replicas: st.ready_replicas.unwrap_or(0),
            updated_replicas: st.updated_replicas.unwrap_or(0),
            current_revision: st.current_revision,
            update_revision: st.update_revision,
            deleting: s.metadata.deletion_timestamp.is_some(),
            volume_size: vct
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            volume_class: vct.and_then(|c| c.storage_class_name.clone()),
            image: s
                .spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone()),
        }
    }

    /// The StatefulSet controller has acted on the latest spec and the pod count matches.
    pub fn settled(&self) -> bool {
        self.observed_generation >= self.generation && self.status_replicas == self.replicas
    }

    /// Some pods still run an older template.
    pub fn rollout_pending(&self) -> bool {
        self.replicas > 0
            && (self.updated_replicas < self.replicas
                || self.current_revision != self.update_revision)
    }
}

/// The part of a node pod the planner reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodObservation {
    pub uid: String,
    pub phase: String,
    pub ready: bool,
    /// Template revision the pod runs (`controller-revision-hash`).
    pub revision: Option<String>,
    pub deleting: bool,
    /// The scheduler's reason when the pod cannot be placed.
    pub unschedulable: Option<String>,
    /// A container waiting with a reason (`ImagePullBackOff`,
    /// `CrashLoopBackOff`, ...): (reason, message).
    pub waiting: Option<(String, String)>,
    /// A container of the pod has run at some point.
    pub started: bool,
    /// Carries the [`ANNOTATION_REPLACE`] annotation.
    pub replace_requested: bool,
}

impl PodObservation {
    pub fn from_pod(p: &Pod) -> Self {
        let st = p.status.clone().unwrap_or_default();
        let conditions = st.conditions.unwrap_or_default();
        let cond = |t: &str| conditions.iter().find(|c| c.type_ == t);
        let statuses = st.container_statuses.unwrap_or_default();
        let waiting = statuses.iter().find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.clone()?;
            // A container that is merely being created is not stuck.
            (reason != "ContainerCreating" && reason != "PodInitializing")
                .then(|| (reason, w.message.clone().unwrap_or_default()))
        });
        Self {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            phase: st.phase.unwrap_or_default(),
            ready: cond("Ready").is_some_and(|c| c.status == "True"),
            revision: p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::LABEL_REVISION).cloned()),
            deleting: p.metadata.deletion_timestamp.is_some(),
            unschedulable: cond("PodScheduled")
                .filter(|c| c.status == "False")
                .map(|c| c.message.clone().unwrap_or_else(|| "not scheduled".into())),
            waiting,
            started: statuses.iter().any(|c| {
                c.restart_count > 0
                    || c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            }),
            replace_requested: p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REPLACE))
                .is_some_and(|v| !v.trim().is_empty() && v.trim() != "false"),
        }
    }

    /// Never ran a container and cannot start one (not schedulable, or its
    /// image cannot be pulled): its node cannot have joined the ring. A pod
    /// that is merely being created does not count: it may start any moment.
    pub fn cannot_start(&self) -> bool {
        const STUCK: [&str; 6] = [
            "ErrImagePull",
            "ImagePullBackOff",
            "ErrImageNeverPull",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
        ];
        !self.started
            && self.phase == "Pending"
            && (self.unschedulable.is_some()
                || self
                    .waiting
                    .as_ref()
                    .is_some_and(|(r, _)| STUCK.contains(&r.as_str())))
    }
}

/// The part of a node volume the planner reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PvcObservation {
    /// `spec.resources.requests.storage`.
    pub requested: Option<String>,
    /// `status.capacity.storage`.
    pub capacity: Option<String>,
    pub class: Option<String>,
    pub deleting: bool,
    /// Belonged to a decommissioned node.
    pub decommissioned: bool,
    pub uid: String,
    /// Lost its PersistentVolume (`status.phase: Lost`): the data is gone.
    pub lost: bool,
}

impl PvcObservation {
    pub fn from_pvc(c: &PersistentVolumeClaim) -> Self {
        let spec = c.spec.clone().unwrap_or_default();
        Self {
            requested: spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").map(|q| q.0.clone())),
            capacity: c
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage").map(|q| q.0.clone())),
            class: spec.storage_class_name,
            deleting: c.metadata.deletion_timestamp.is_some(),
            decommissioned: c
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_DECOMMISSIONED)),
            uid: c.metadata.uid.clone().unwrap_or_default(),
            lost: c
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Lost"),
        }
    }
}

/// Membership state of a node, as in `ringkv.v1.NodeState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    Joining,
    Normal,
    Leaving,
    Left,
    /// Restoring lost data (not serving reads yet).
    Repairing,
    Unknown,
}

impl NodeState {
    pub fn from_proto(v: i32) -> Self {
        match pb::NodeState::try_from(v) {
            Ok(pb::NodeState::Joining) => Self::Joining,
            Ok(pb::NodeState::Normal) => Self::Normal,
            Ok(pb::NodeState::Leaving) => Self::Leaving,
            Ok(pb::NodeState::Left) => Self::Left,
            Ok(pb::NodeState::Repairing) => Self::Repairing,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Normal => "normal",
            Self::Leaving => "leaving",
            Self::Left => "left",
            Self::Repairing => "repairing",
            Self::Unknown => "unknown",
        }
    }

    pub fn to_proto(self) -> pb::NodeState {
        match self {
            Self::Joining => pb::NodeState::Joining,
            Self::Normal => pb::NodeState::Normal,
            Self::Leaving => pb::NodeState::Leaving,
            Self::Left => pb::NodeState::Left,
            Self::Repairing => pb::NodeState::Repairing,
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

/// Cleanup state of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanupReport {
    pub running: bool,
    pub cleanup_id: u64,
    /// Unix ms of the last cleanup that finished every range; 0 = never.
    pub last_completed_unix_ms: u64,
    /// Why the last cleanup did not finish every range (empty if it did).
    pub last_error: String,
    pub keys_dropped: u64,
}

/// Phase of a removal (`RemoveNode`) a node coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalPhase {
    NotStarted,
    Announcing,
    Streaming,
    Done,
    Failed,
    Unknown,
}

impl RemovalPhase {
    pub fn from_proto(v: i32) -> Self {
        use pb::remove_node_status::Phase;
        match Phase::try_from(v) {
            Ok(Phase::NotStarted) => Self::NotStarted,
            Ok(Phase::Announcing) => Self::Announcing,
            Ok(Phase::Streaming) => Self::Streaming,
            Ok(Phase::Done) => Self::Done,
            Ok(Phase::Failed) => Self::Failed,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "NotStarted",
            Self::Announcing => "Announcing",
            Self::Streaming => "Streaming",
            Self::Done => "Done",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Progress of a removal a node coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalReport {
    pub node_id: String,
    pub phase: RemovalPhase,
    pub ranges_total: u32,
    pub ranges_done: u32,
    pub keys_streamed: u64,
    pub error: String,
}

impl From<&pb::RemoveNodeStatus> for RemovalReport {
    fn from(r: &pb::RemoveNodeStatus) -> Self {
        Self {
            node_id: r.node_id.clone(),
            phase: RemovalPhase::from_proto(r.phase),
            ranges_total: r.ranges_total,
            ranges_done: r.ranges_done,
            keys_streamed: r.keys_streamed,
            error: r.error.clone(),
        }
    }
}

/// A node's answer to `Admin.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node_id: String,
    pub state: NodeState,
    pub members: Vec<Member>,
    pub decommission: Option<DecommissionReport>,
    pub repair: RepairReport,
    pub cleanup: CleanupReport,
    /// The running or last backup of this node.
    pub backup: crate::planner::backup::NodeBackup,
    /// The running or last restore this node drives.
    pub restore: Option<RestoreReport>,
}

/// A node's `Status.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreReport {
    pub running: bool,
    pub backup_id: String,
    /// downloading | loading | done | failed
    pub phase: String,
    pub keys_loaded: u64,
    pub error: String,
}

impl From<&pb::StatusResponse> for NodeReport {
    fn from(s: &pb::StatusResponse) -> Self {
        Self {
            backup: s
                .backup
                .as_ref()
                .map(|b| crate::planner::backup::NodeBackup {
                    running: b.running,
                    backup_id: b.backup_id.clone(),
                    error: b.error.clone(),
                    last_completed_id: b.last_completed_id.clone(),
                    files_total: u64::from(b.files_total),
                    bytes_total: b.bytes_total,
                    bytes_uploaded: b.bytes_uploaded,
                })
                .unwrap_or_default(),
            restore: s.restore.as_ref().map(|r| RestoreReport {
                running: r.running,
                backup_id: r.backup_id.clone(),
                phase: r.phase.clone(),
                keys_loaded: r.keys_loaded,
                error: r.error.clone(),
            }),
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
            cleanup: s
                .cleanup
                .as_ref()
                .map(|c| CleanupReport {
                    running: c.running,
                    cleanup_id: c.cleanup_id,
                    last_completed_unix_ms: c.last_completed_unix_ms,
                    last_error: c.last_error.clone(),
                    keys_dropped: c.keys_dropped,
                })
                .unwrap_or_default(),
        }
    }
}

/// What the operator learned by asking one node for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
// One per node per reconcile: boxing the report would buy nothing.
#[allow(clippy::large_enum_variant)]
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
