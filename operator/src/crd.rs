//! The `KVCluster` custom resource (`ringkv.io/v1alpha1`).
//!
//! The Rust types are the single source of truth: `crdgen` turns them into
//! `crds/kvclusters.ringkv.io.yaml`, and a test fails when the committed YAML
//! drifts. Every CEL rule in the schema has a Rust twin in [`KVClusterSpec::validate`]
//! so the operator refuses a bad spec even on an API server that did not
//! evaluate the rule (and so the rules' logic is tested without an API server).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every ringkv custom resource.
pub const GROUP: &str = "ringkv.io";
/// Finalizer the operator puts on every `KVCluster` so deletion is orderly.
pub const FINALIZER: &str = "ringkv.io/cleanup";
/// Node label that selects a zone unless `spec.zoneLabelKey` says otherwise.
pub const DEFAULT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Longest StatefulSet name: the `controller-revision-hash` label is
/// `<statefulset>-<10 chars>` and labels are limited to 63 characters.
pub const MAX_STATEFULSET_NAME: usize = 52;
/// Upper bound on zones; keeps CEL cost estimates bounded.
pub const MAX_ZONES: usize = 16;

/// Desired state of a ringkv cluster.
///
/// `replicas` is the total number of nodes. It is spread over `zones` in spec
/// order: every zone gets `replicas / zones` nodes and the first
/// `replicas % zones` zones get one more (7 nodes over zones a, b, c = 3, 2, 2).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ringkv.io",
    version = "v1alpha1",
    kind = "KVCluster",
    plural = "kvclusters",
    singular = "kvcluster",
    shortname = "kvc",
    category = "ringkv",
    namespaced,
    status = "KVClusterStatus",
    derive = "PartialEq",
    doc = "A ringkv cluster: one StatefulSet per zone, scaled and upgraded without losing data.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".spec.replicas", description = "Desired number of nodes"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Nodes passing readiness"),
    printcolumn(name = "N/W/R", type_ = "string", json_path = ".status.replication", description = "Replication factor and default write/read quorums"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("self.spec.zones.all(z, size(self.metadata.name) + size(z.name) <= 51)").message("<cluster name>-<zone name> must be at most 52 characters (the StatefulSet name limit)")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.replication.w <= self.replication.n", "message": "replication.w must not exceed replication.n"},
    {"rule": "self.replication.r <= self.replication.n", "message": "replication.r must not exceed replication.n"},
    {"rule": "self.replication.n <= self.replicas", "message": "replication.n must not exceed replicas (the total number of nodes)"},
    {"rule": "size(self.zones) > 0", "message": "at least one zone is required"},
    {"rule": "self.zones.all(z, self.zones.exists_one(y, y.name == z.name))", "message": "zone names must be unique"},
    {"rule": "oldSelf.zones.all(z, self.zones.exists(y, y.name == z.name))", "message": "zones cannot be removed or renamed (add new zones instead)"}
]))]
pub struct KVClusterSpec {
    /// Total number of nodes over all zones (the scale subresource drives this).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// Failure domains. Each gets its own StatefulSet `<cluster>-<zone>` whose
    /// pods are pinned to Kubernetes nodes labelled `<zoneLabelKey>=<nodeLabelValue>`.
    /// Zones may be appended later but not removed or renamed.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub zones: Vec<ZoneSpec>,

    /// Kubernetes node label that identifies a zone.
    #[serde(default = "default_zone_label")]
    #[schemars(length(min = 1, max = 253))]
    pub zone_label_key: String,

    /// Replication factor and default quorums.
    #[serde(default)]
    pub replication: Replication,

    /// Tokens per node on the hash ring. Chosen once: it cannot change after creation.
    #[serde(default = "default_vnodes")]
    #[schemars(range(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "vnodes cannot change after creation (tokens are persisted per node)"}
    ]))]
    pub vnodes: i32,

    /// How concurrent writes are resolved. Cannot change after creation.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "conflictMode cannot change after creation"}
    ]))]
    pub conflict_mode: ConflictMode,

    /// Node image. Defaults to the image the operator was deployed with, so
    /// upgrading the operator rolls clusters that do not pin an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of node pods.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory requests and limits of each node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Per-node persistent volume.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Scheduled Merkle anti-entropy.
    #[serde(default)]
    pub repair: RepairSpec,

    /// Hints older than this are dropped (anti-entropy covers the rest).
    #[serde(default = "default_hint_window")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"), length(max = 32))]
    pub hinted_handoff_window: String,

    /// TLS for client and internode gRPC (the admin API included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The Service applications connect to.
    #[serde(default)]
    pub client_service: ClientServiceSpec,

    /// Additions to the node pod template.
    #[serde(default)]
    pub pod: PodOverrides,
}

/// One failure domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpec {
    /// Zone name: part of the StatefulSet name and passed to nodes as their zone.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Value of the zone label on the Kubernetes nodes of this zone.
    #[schemars(length(min = 1, max = 63))]
    pub node_label_value: String,
}

/// Replication factor `n` and default quorums `w` and `r`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// Replicas per key.
    #[serde(default = "default_n")]
    #[schemars(range(min = 1, max = 15))]
    pub n: i32,
    /// Acknowledgements a write waits for.
    #[serde(default = "default_w")]
    #[schemars(range(min = 1, max = 15))]
    pub w: i32,
    /// Replies a read waits for.
    #[serde(default = "default_r")]
    #[schemars(range(min = 1, max = 15))]
    pub r: i32,
}

impl Default for Replication {
    fn default() -> Self {
        Self { n: 3, w: 2, r: 2 }
    }
}

/// Conflict resolution mode (see the node's `conflict_mode`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Dotted version vectors; concurrent writes become siblings.
    #[default]
    Causal,
    /// Last write wins (one of two concurrent writes is lost).
    Lww,
}

impl ConflictMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Causal => "causal",
            Self::Lww => "lww",
        }
    }
}

/// Container image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Persistent storage of each node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size (a Kubernetes quantity).
    #[serde(default = "default_storage_size")]
    #[schemars(
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"),
        length(max = 32)
    )]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to volumes when the KVCluster is deleted. Volumes of
    /// decommissioned nodes are always deleted: their data was streamed away.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            reclaim_policy: ReclaimPolicy::default(),
        }
    }
}

/// Fate of node volumes when the cluster is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the PersistentVolumeClaims (re-creating the cluster reuses them).
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaims with the cluster.
    Delete,
}

/// Scheduled anti-entropy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairSpec {
    /// How often every zone is repaired (`24h`, `90m`, ...), or `off`.
    #[serde(default = "default_repair_interval")]
    #[schemars(regex(pattern = r"^(off|([0-9]+(ms|s|m|h|d))+)$"), length(max = 32))]
    pub interval: String,
}

impl Default for RepairSpec {
    fn default() -> Self {
        Self {
            interval: default_repair_interval(),
        }
    }
}

/// TLS material for the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret in the cluster's namespace with `tls.crt`, `tls.key` and `ca.crt`.
    /// The certificate must be valid for `*.<cluster>-peers.<namespace>.svc.cluster.local`
    /// (nodes and the operator verify each other by that name) and for
    /// `127.0.0.1` (the preStop drain); the operator trusts `ca.crt`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Kind of the client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The Service applications use (gRPC 7070, HTTP 8080).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Fixed node port for gRPC when `type` is NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc_node_port: Option<i32>,
    /// Fixed node port for HTTP when `type` is NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_node_port: Option<i32>,
    /// Annotations of the Service (load-balancer settings, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Additions to every node pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KVClusterStatus {
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Summary of what the cluster is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Creating,
    Running,
    Scaling,
    Upgrading,
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
    /// `joining`, `normal`, `leaving`, `left` or `unknown`.
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

fn is_zero(v: &i32) -> bool {
    *v == 0
}

fn default_replicas() -> i32 {
    3
}
fn default_zone_label() -> String {
    DEFAULT_ZONE_LABEL.to_string()
}
fn default_vnodes() -> i32 {
    128
}
fn default_n() -> i32 {
    3
}
fn default_w() -> i32 {
    2
}
fn default_r() -> i32 {
    2
}
fn default_storage_size() -> String {
    "10Gi".to_string()
}
fn default_repair_interval() -> String {
    "24h".to_string()
}
fn default_hint_window() -> String {
    "3h".to_string()
}

/// Why a spec cannot be reconciled. Each variant mirrors a CEL rule or schema
/// constraint so the operator refuses what the API server should have refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("replication.w ({w}) must not exceed replication.n ({n})")]
    WriteQuorumAboveN { w: i32, n: i32 },
    #[error("replication.r ({r}) must not exceed replication.n ({n})")]
    ReadQuorumAboveN { r: i32, n: i32 },
    #[error("replication.{field} must be at least 1")]
    ZeroReplication { field: &'static str },
    #[error("replication.n ({n}) must not exceed replicas ({replicas}), the total number of nodes")]
    NAboveNodes { n: i32, replicas: i32 },
    #[error("replicas must be at least 1 (got {0})")]
    NoReplicas(i32),
    #[error("at least one zone is required")]
    NoZones,
    #[error("at most {MAX_ZONES} zones are supported (got {0})")]
    TooManyZones(usize),
    #[error("zone name {0:?} appears more than once")]
    DuplicateZone(String),
    #[error(
        "zone name {0:?} is not a DNS label (lower-case letters, digits and '-', at most 40 characters)"
    )]
    BadZoneName(String),
    #[error("zone {0:?} has an empty nodeLabelValue")]
    EmptyNodeLabelValue(String),
    #[error(
        "StatefulSet name {0:?} is longer than {MAX_STATEFULSET_NAME} characters: shorten the cluster or zone name"
    )]
    NameTooLong(String),
    #[error("vnodes must be between 1 and 4096 (got {0})")]
    BadVnodes(i32),
    #[error("vnodes cannot change after creation (created with {created}, spec says {requested})")]
    VnodesChanged { created: i32, requested: i32 },
    #[error("{field}: {value:?} is not a duration like 30m, 24h or 7d")]
    BadDuration { field: &'static str, value: String },
    #[error("repair.interval must be at least 1m or `off` (got {0:?})")]
    RepairTooFrequent(String),
    #[error("storage.size {0:?} is not a Kubernetes quantity like 10Gi")]
    BadStorageSize(String),
    #[error("zone {0:?} was removed or renamed; zones can only be added")]
    ZoneRemoved(String),
}

impl KVClusterSpec {
    /// Checks everything a single spec can get wrong (the CEL rules without
    /// `oldSelf`, plus the schema constraints that matter to the operator).
    /// `cluster_name` is needed for the StatefulSet name limit.
    pub fn validate(&self, cluster_name: &str) -> Result<(), Vec<SpecError>> {
        let mut errs = Vec::new();
        let Replication { n, w, r } = self.replication;
        for (field, v) in [("n", n), ("w", w), ("r", r)] {
            if v < 1 {
                errs.push(SpecError::ZeroReplication { field });
            }
        }
        if w > n {
            errs.push(SpecError::WriteQuorumAboveN { w, n });
        }
        if r > n {
            errs.push(SpecError::ReadQuorumAboveN { r, n });
        }
        if self.replicas < 1 {
            errs.push(SpecError::NoReplicas(self.replicas));
        } else if n > self.replicas {
            errs.push(SpecError::NAboveNodes {
                n,
                replicas: self.replicas,
            });
        }
        if self.zones.is_empty() {
            errs.push(SpecError::NoZones);
        }
        if self.zones.len() > MAX_ZONES {
            errs.push(SpecError::TooManyZones(self.zones.len()));
        }
        for (i, z) in self.zones.iter().enumerate() {
            if !is_zone_name(&z.name) {
                errs.push(SpecError::BadZoneName(z.name.clone()));
            }
            if z.node_label_value.is_empty() {
                errs.push(SpecError::EmptyNodeLabelValue(z.name.clone()));
            }
            if self.zones[..i].iter().any(|o| o.name == z.name) {
                errs.push(SpecError::DuplicateZone(z.name.clone()));
            }
            let sts = crate::names::statefulset(cluster_name, &z.name);
            if sts.len() > MAX_STATEFULSET_NAME {
                errs.push(SpecError::NameTooLong(sts));
            }
        }
        if !(1..=4096).contains(&self.vnodes) {
            errs.push(SpecError::BadVnodes(self.vnodes));
        }
        match self.repair_interval() {
            Err(e) => errs.push(e),
            Ok(Some(d)) if d < Duration::from_secs(60) => {
                errs.push(SpecError::RepairTooFrequent(self.repair.interval.clone()))
            }
            Ok(_) => {}
        }
        if let Err(e) = parse_duration("hintedHandoffWindow", &self.hinted_handoff_window) {
            errs.push(e);
        }
        if !is_quantity(&self.storage.size) {
            errs.push(SpecError::BadStorageSize(self.storage.size.clone()));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Checks the transition rules (CEL `oldSelf`) against what the operator
    /// recorded when it created the cluster.
    pub fn validate_against(&self, status: &KVClusterStatus) -> Result<(), Vec<SpecError>> {
        let mut errs = Vec::new();
        if let Some(created) = status.vnodes
            && created != self.vnodes
        {
            errs.push(SpecError::VnodesChanged {
                created,
                requested: self.vnodes,
            });
        }
        for z in &status.zones {
            if !self.zones.iter().any(|s| s.name == z.name) {
                errs.push(SpecError::ZoneRemoved(z.name.clone()));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// `None` when repair is `off`.
    pub fn repair_interval(&self) -> Result<Option<Duration>, SpecError> {
        if self.repair.interval == "off" {
            return Ok(None);
        }
        parse_duration("repair.interval", &self.repair.interval).map(Some)
    }

    /// Desired nodes per zone, in spec order (see the type's docs).
    pub fn zone_targets(&self) -> Vec<i32> {
        zone_targets(self.replicas.max(0), self.zones.len())
    }

    pub fn replication_summary(&self) -> String {
        let Replication { n, w, r } = self.replication;
        format!("{n}/{w}/{r}")
    }
}

/// Spreads `total` nodes over `zones` zones: equal shares, the remainder to the
/// first zones. Balanced zones keep every zone holding a full replica set when
/// there are at least N zones.
pub fn zone_targets(total: i32, zones: usize) -> Vec<i32> {
    if zones == 0 {
        return Vec::new();
    }
    let z = zones as i32;
    (0..z)
        .map(|i| total / z + i32::from(i < total % z))
        .collect()
}

fn parse_duration(field: &'static str, value: &str) -> Result<Duration, SpecError> {
    // The schema pattern only allows compact forms ("1h30m"); humantime parses them.
    let compact = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || "mshd".contains(c))
        && value.starts_with(|c: char| c.is_ascii_digit());
    match humantime::parse_duration(value) {
        Ok(d) if compact && !d.is_zero() => Ok(d),
        _ => Err(SpecError::BadDuration {
            field,
            value: value.to_string(),
        }),
    }
}

fn is_zone_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let num = SUFFIXES
        .iter()
        .find_map(|suf| s.strip_suffix(suf))
        .unwrap_or(s);
    let mut parts = num.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> KVClusterSpec {
        serde_json::from_value(serde_json::json!({
            "replicas": 3,
            "zones": [
                {"name": "zone-a", "nodeLabelValue": "zone-a"},
                {"name": "zone-b", "nodeLabelValue": "zone-b"},
                {"name": "zone-c", "nodeLabelValue": "zone-c"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let s = spec();
        assert_eq!(s.replication, Replication { n: 3, w: 2, r: 2 });
        assert_eq!(s.vnodes, 128);
        assert_eq!(s.conflict_mode, ConflictMode::Causal);
        assert_eq!(s.storage.size, "10Gi");
        assert_eq!(s.storage.reclaim_policy, ReclaimPolicy::Retain);
        assert_eq!(s.repair.interval, "24h");
        assert_eq!(s.hinted_handoff_window, "3h");
        assert_eq!(s.zone_label_key, DEFAULT_ZONE_LABEL);
        assert_eq!(s.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(s.client_service.type_, ServiceType::ClusterIP);
        assert!(s.validate("demo").is_ok());
    }

    #[test]
    fn zone_targets_are_balanced_with_remainder_first() {
        assert_eq!(zone_targets(3, 3), vec![1, 1, 1]);
        assert_eq!(zone_targets(7, 3), vec![3, 2, 2]);
        assert_eq!(zone_targets(8, 3), vec![3, 3, 2]);
        assert_eq!(zone_targets(2, 3), vec![1, 1, 0]);
        assert_eq!(zone_targets(5, 1), vec![5]);
        assert!(zone_targets(5, 0).is_empty());
        for total in 0..50 {
            for zones in 1..7 {
                let t = zone_targets(total, zones);
                assert_eq!(t.iter().sum::<i32>(), total);
                assert!(t.iter().max().unwrap() - t.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn quorum_above_n_is_rejected() {
        let mut s = spec();
        s.replication = Replication { n: 3, w: 4, r: 4 };
        let errs = s.validate("demo").unwrap_err();
        assert!(errs.contains(&SpecError::WriteQuorumAboveN { w: 4, n: 3 }));
        assert!(errs.contains(&SpecError::ReadQuorumAboveN { r: 4, n: 3 }));
    }

    #[test]
    fn n_above_nodes_is_rejected() {
        let mut s = spec();
        s.replicas = 2;
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::NAboveNodes { n: 3, replicas: 2 }]
        );
        s.replicas = 0;
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::NoReplicas(0)]
        );
    }

    #[test]
    fn zones_must_exist_be_unique_and_named_well() {
        let mut s = spec();
        s.zones.clear();
        assert_eq!(s.validate("demo").unwrap_err(), vec![SpecError::NoZones]);
        let mut s = spec();
        s.zones[2].name = "zone-a".into();
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::DuplicateZone("zone-a".into())]
        );
        let mut s = spec();
        s.zones[0].name = "Zone_A".into();
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::BadZoneName("Zone_A".into())]
        );
        let mut s = spec();
        s.zones[0].node_label_value.clear();
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::EmptyNodeLabelValue("zone-a".into())]
        );
    }

    #[test]
    fn statefulset_names_must_fit() {
        let s = spec();
        let long = "c".repeat(46);
        let errs = s.validate(&long).unwrap_err();
        assert_eq!(errs.len(), 3);
        assert!(matches!(&errs[0], SpecError::NameTooLong(n) if n.len() == 53));
        assert!(s.validate(&"c".repeat(45)).is_ok());
    }

    #[test]
    fn durations_and_sizes_are_checked() {
        let mut s = spec();
        s.repair.interval = "off".into();
        assert_eq!(s.repair_interval(), Ok(None));
        assert!(s.validate("demo").is_ok());
        s.repair.interval = "1h30m".into();
        assert_eq!(s.repair_interval(), Ok(Some(Duration::from_secs(5400))));
        s.repair.interval = "10s".into();
        assert_eq!(
            s.validate("demo").unwrap_err(),
            vec![SpecError::RepairTooFrequent("10s".into())]
        );
        s.repair.interval = "daily".into();
        assert!(matches!(
            s.validate("demo").unwrap_err()[0],
            SpecError::BadDuration {
                field: "repair.interval",
                ..
            }
        ));
        let mut s = spec();
        s.hinted_handoff_window = "0s".into();
        assert!(matches!(
            s.validate("demo").unwrap_err()[0],
            SpecError::BadDuration {
                field: "hintedHandoffWindow",
                ..
            }
        ));
        let mut s = spec();
        for ok in ["10Gi", "1.5Ti", "500M", "1024"] {
            s.storage.size = ok.into();
            assert!(s.validate("demo").is_ok(), "{ok}");
        }
        for bad in ["", "ten", "10GB", "1.", ".5Gi"] {
            s.storage.size = bad.into();
            assert_eq!(
                s.validate("demo").unwrap_err(),
                vec![SpecError::BadStorageSize(bad.into())],
                "{bad}"
            );
        }
    }

    #[test]
    fn transition_rules_compare_with_recorded_status() {
        let s = spec();
        let mut st = KVClusterStatus {
            vnodes: Some(128),
            ..Default::default()
        };
        assert!(s.validate_against(&st).is_ok());
        st.vnodes = Some(256);
        assert_eq!(
            s.validate_against(&st).unwrap_err(),
            vec![SpecError::VnodesChanged {
                created: 256,
                requested: 128
            }]
        );
        st.vnodes = None;
        st.zones.push(ZoneStatus {
            name: "zone-z".into(),
            ..Default::default()
        });
        assert_eq!(
            s.validate_against(&st).unwrap_err(),
            vec![SpecError::ZoneRemoved("zone-z".into())]
        );
    }

    #[test]
    fn replication_summary_is_n_w_r() {
        assert_eq!(spec().replication_summary(), "3/2/2");
    }
}
