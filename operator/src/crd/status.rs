//! `KVCluster.status`: observed state, written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KVClusterStatus {
    /// Scheduled and one-off backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::ClusterBackupStatus>,
    /// The restore of `spec.restoreFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<super::RestoreProgress>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for humans; conditions carry the details.
    #[serde(default)]
    pub phase: Phase,
    /// Nodes the StatefulSets currently run (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the node pods (scale subresource, for HPAs).
    #[serde(default)]
    pub selector: String,
    /// `N/W/R`, for the printer column.
    #[serde(default)]
    pub replication: String,
    /// vnodes the cluster was created with; a later change is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnodes: Option<i32>,
    /// Replication factor the cluster was created with; a later change is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// The node image: `spec.image`, or the operator's default image when the
    /// cluster was created. It changes only when `spec.image` does, so an
    /// operator upgrade never restarts a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Reason of the condition that explains the phase (`NodesNotNormal`,
    /// `PodPending`, `RolloutStuck`, ...), empty when Running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Ready/desired nodes per zone (`zone-a=2/2 zone-b=1/2`), for `-o wide`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone_summary: String,
    /// The oldest of the zones' `lastRepairTime` (unset until every zone was repaired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneStatus>,
    /// Ring members as a node reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The decommission in progress, if any (survives operator restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommission: Option<DecommissionProgress>,
    /// The repair in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairProgress>,
    /// Cleanup after a scale-up or a node replacement: every node drops
    /// what it no longer replicates, one at a time (survives operator restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupProgress>,
    /// The node replacement in progress, if any (a node gone for good:
    /// removed from the ring, then re-created on an empty volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<ReplaceProgress>,
    /// The ring-changing step in progress (a node joining, a decommission, a
    /// pod restart), for its progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A step the operator started and waits on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// `ScaleUp`, `Decommission` or `Restart`.
    pub action: String,
    /// The pod (= node id) the step is about.
    pub node: String,
    pub started_at: Time,
}

/// Summary of what the cluster is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Creating,
    Running,
    Scaling,
    Upgrading,
    /// Growing the node volumes.
    Expanding,
    Repairing,
    Degraded,
    Invalid,
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Running => "Running",
            Self::Scaling => "Scaling",
            Self::Upgrading => "Upgrading",
            Self::Expanding => "Expanding",
            Self::Repairing => "Repairing",
            Self::Degraded => "Degraded",
            Self::Invalid => "Invalid",
            Self::Terminating => "Terminating",
        }
    }
}

/// Per-zone state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    pub name: String,
    /// Nodes this zone should have once scaling is done.
    #[serde(default)]
    pub desired_replicas: i32,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// When every node of this zone last completed anti-entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_time: Option<Time>,
}

/// A ring member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: String,
    #[serde(default)]
    pub zone: String,
    /// `joining`, `normal`, `leaving`, `left`, `repairing` or `unknown`.
    pub state: String,
    pub alive: bool,
}

/// Progress of a node's decommission.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecommissionProgress {
    /// Pod name (= node id) being decommissioned.
    pub node: String,
    pub zone: String,
    /// `NotStarted`, `Streaming`, `Done` or `Failed`.
    pub phase: String,
    #[serde(default)]
    pub ranges_done: i64,
    #[serde(default)]
    pub ranges_total: i64,
    #[serde(default)]
    pub keys_streamed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Progress of a scheduled repair round over one zone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairProgress {
    pub zone: String,
    /// Node currently running anti-entropy.
    pub node: String,
    #[serde(default)]
    pub repair_id: i64,
    /// Unix ms when the operator asked `node` to repair.
    #[serde(default)]
    pub node_started_unix_ms: i64,
    /// The node's last completed repair (Unix ms) when it was asked; it is done
    /// once its last completion is newer. Unset until the node has been asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_completed_unix_ms: Option<i64>,
    /// Nodes of the zone already repaired in this round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_done: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Failed runs of `node` in a row; each failure doubles the wait before
    /// the next attempt (30s, 1m, 2m, ... at most 10m).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    /// Unix ms before which `node` is not asked again after a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_unix_ms: Option<i64>,
    /// The node's error for its last failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Cleanup of every node after the ring gained a node: each drops the
/// records of ranges it no longer replicates (`Admin.Cleanup`), one at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupProgress {
    /// What made it necessary (`ScaleUp of kv-zone-a-3`, ...).
    pub reason: String,
    /// Node cleaning up now; empty until the ring is settled and the first is asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default)]
    pub cleanup_id: i64,
    /// The node's last completed cleanup (Unix ms) when it was asked; it is
    /// done once its last completion is newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_completed_unix_ms: Option<i64>,
    /// Nodes already cleaned up in this round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_done: Vec<String>,
    /// Records dropped by the nodes done so far.
    #[serde(default)]
    pub keys_dropped: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Failed runs of `node` in a row (a replica was down, say); each
    /// doubles the wait before the next attempt (30s, 1m, ... at most 10m).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_unix_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Replacement of a node gone for good (its pod annotated `ringkv.io/replace`
/// or its volume `Lost`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaceProgress {
    /// Pod name (= node id) being replaced.
    pub node: String,
    pub zone: String,
    /// `Removing` (its ranges stream from the surviving replicas to their new
    /// owners, `RemoveNode` run by `coordinator`), then `Recreating` (its
    /// volume and pod are deleted; the new pod joins as a new node).
    pub phase: String,
    /// Why: `annotation` or `volume lost`.
    pub reason: String,
    /// The node that runs `RemoveNode`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub coordinator: String,
    /// Uid of the dead node's pod and volume (the new ones differ).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub old_pod_uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub old_volume_uid: String,
    #[serde(default)]
    pub ranges_done: i64,
    #[serde(default)]
    pub ranges_total: i64,
    #[serde(default)]
    pub keys_streamed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}
