//! The `KVCluster` custom resource (`ringkv.io/v1alpha1`).
//!
//! The Rust types are the single source of truth: `crdgen` turns them into
//! `crds/kvclusters.ringkv.io.yaml`, and a test fails when the committed YAML
//! drifts. Every CEL rule in the schema has a Rust twin in [`KVClusterSpec::validate`]
//! so the operator refuses a bad spec even on an API server that did not
//! evaluate the rule (and so the rules' logic is tested without an API server).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every ringkv custom resource.
pub const GROUP: &str = "ringkv.io";
/// Finalizer older operator versions put on every `KVCluster`. It is no longer
/// set (owner references and each pod's preStop drain stop a deleted cluster in
/// order, and a finalizer hangs deletion once the operator is uninstalled); the
/// operator removes it from clusters that still carry it.
pub const LEGACY_FINALIZER: &str = "ringkv.io/cleanup";
/// Suffix of the peer Service's name; reserved so no cluster's client Service
/// can take another cluster's peer Service name.
pub const PEER_SUFFIX: &str = "-peers";
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
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason", description = "Why the cluster is not simply Running (the Progressing or Degraded condition's reason)"),
    printcolumn(name = "Zones", type_ = "string", json_path = ".status.zoneSummary", priority = 1, description = "Ready/desired nodes per zone"),
    printcolumn(name = "Last Repair", type_ = "date", json_path = ".status.lastRepairTime", priority = 1, description = "Oldest zone's last completed anti-entropy"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.image", priority = 1, description = "Node image the cluster runs"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("self.spec.zones.all(z, size(self.metadata.name) + size(z.name) <= 51)").message("<cluster name>-<zone name> must be at most 52 characters (the StatefulSet name limit)"),
    validation = kube::core::Rule::new("!self.metadata.name.endsWith('-peers')").message("metadata.name must not end in -peers (reserved for peer Services: kv-peers is the peer Service of cluster kv)")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.replication.w <= self.replication.n", "message": "replication.w must not exceed replication.n"},
    {"rule": "self.replication.r <= self.replication.n", "message": "replication.r must not exceed replication.n"},
    {"rule": "self.replication.n <= self.replicas", "message": "replication.n must not exceed replicas (the total number of nodes)"},
    {"rule": "size(self.zones) > 0", "message": "at least one zone is required"},
    {"rule": "self.zones.all(z, self.zones.exists_one(y, y.name == z.name))", "message": "zone names must be unique"},
    {"rule": "oldSelf.zones.all(z, self.zones.exists(y, y.name == z.name))", "message": "zones cannot be removed or renamed (add new zones instead)"},
    {"rule": "has(self.tls) == has(oldSelf.tls)", "message": "tls cannot be added or removed after creation (nodes with and without mutual TLS cannot talk; create a new cluster and restore a backup into it)"}
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

    /// Node image. When unset, the image the operator was deployed with at the
    /// cluster's creation, recorded in `status.image`: upgrading the operator
    /// does not restart clusters; changing this field does (one pod at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of node pods.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory of each node container. Unset: 1 CPU and 2Gi, requests =
    /// limits (Guaranteed QoS). Limits left out default to the requests, so a
    /// node is never BestEffort or Burstable by accident.
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

    /// TLS on every node listener, mutual TLS between nodes and for Admin,
    /// authenticated gossip. Set it at creation: adding or removing it later
    /// would split the ring during the rollout (CEL refuses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Bearer tokens on the client APIs (roles read, readwrite, admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Scheduled backups to an object store, with retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Load this backup once the new cluster is up (any topology: records
    /// merge into their current replicas). Only used at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "restoreFrom cannot change after creation"}
    ]))]
    pub restore_from: Option<RestoreSource>,

    /// The Service applications connect to.
    #[serde(default)]
    pub client_service: ClientServiceSpec,

    /// Additions to the node pod template.
    #[serde(default)]
    pub pod: PodOverrides,

    /// How long a step (a node joining, a decommission, a pod restart) may take
    /// before the cluster is reported `Degraded` with the step's reason.
    #[serde(default = "default_progress_deadline")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"), length(max = 32))]
    pub progress_deadline: String,

    /// The PodDisruptionBudget of the node pods.
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,
}

/// Voluntary disruptions (node drains, cluster upgrades) the node pods allow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Node pods that may be evicted at once. Default: N−W, but at least 1 so
    /// a drain is never blocked forever (with N=W a drained node's writes go
    /// to substitutes as hints until it is back). 0 blocks every eviction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_unavailable: Option<i32>,
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
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.n == oldSelf.n", "message": "replication.n cannot change after creation (new replicas would stay empty and reads could miss acknowledged writes until a full repair); w and r can change"}
]))]
pub struct Replication {
    /// Replicas per key. Cannot change after creation.
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
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)", "message": "storage.storageClassName cannot change after creation"},
    {"rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0", "message": "storage.size cannot shrink (volumes can only be expanded)"}
]))]
pub struct StorageSpec {
    /// Volume size (a Kubernetes quantity). It can grow: when the StorageClass
    /// allows volume expansion, the operator resizes every node's volume
    /// without restarting pods; it cannot shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"),
        length(max = 32)
    )]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when unset. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to volumes the cluster no longer uses. `Delete`: removed
    /// with the KVCluster, and a decommissioned node's volume as soon as its
    /// pod is gone. `Retain`: kept in both cases; a decommissioned node's volume
    /// is deleted only right before a new node would reuse its ordinal (its
    /// data was streamed away, and a stale identity must not come back).
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

/// TLS of every node listener: client gRPC and HTTP, internode and Admin
/// (mutual TLS with the cluster CA). Also turns on authenticated gossip: the
/// operator generates the cluster's gossip secret into `<cluster>-gossip`.
///
/// Certificates come from, in order: `secretName` when set; cert-manager when
/// `issuer` is `CertManager`, or `Auto` and cert-manager's CRDs are installed;
/// otherwise the operator's own per-cluster CA (`<cluster>-ca`) and per-pod
/// certificates it renews before they expire.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Enabled`: TLS on every listener, mutual TLS on internode/Admin (7001).
    /// `Required`: clients of 7070/8080 must present a certificate signed by
    /// the cluster CA too.
    #[serde(default)]
    pub mode: TlsMode,
    /// Secret in the cluster's namespace with `tls.crt`, `tls.key` and `ca.crt`,
    /// used by every node and, as its client certificate, by the operator.
    /// The certificate must be valid for `*.<cluster>-peers.<namespace>.svc.<cluster domain>`
    /// (nodes and the operator verify each other by that name) and for
    /// `127.0.0.1` (the preStop drain), and allow client and server auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Who issues certificates when `secretName` is unset.
    #[serde(default)]
    pub issuer: TlsIssuer,
    /// cert-manager issuer of the node certificates. Unset: the operator
    /// creates a self-signed CA for the cluster through cert-manager
    /// (`<cluster>-selfsigned` Issuer, `<cluster>-ca` Certificate and Issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager_issuer: Option<IssuerRef>,
}

/// Client certificate requirement on the client APIs (internode is always mutual).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    #[default]
    Enabled,
    Required,
}

impl TlsMode {
    /// The node's `tls_mode` value.
    pub fn as_node_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Required => "required",
        }
    }
}

/// Source of generated certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsIssuer {
    /// cert-manager when its CRDs are installed, else `Operator`.
    #[default]
    Auto,
    /// The operator's own CA and per-pod certificates.
    Operator,
    /// cert-manager `Certificate` resources (the operator waits for them).
    CertManager,
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the cluster's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    #[schemars(regex(pattern = r"^(Issuer|ClusterIssuer)$"))]
    pub kind: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

/// Bearer-token authentication of client requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret with a `tokens` key: lines `<role> <token>`, roles `read`,
    /// `readwrite`, `admin`. Unset: the operator generates `<cluster>-auth`
    /// with one token of each role. The nodes re-read it when it changes, so
    /// tokens are rotated by editing the Secret (no restart). The operator
    /// uses the first `admin` token for its Admin calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tokens_secret_name: Option<String>,
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
    /// Extra labels of the Service (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Additions to every node pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Secrets for pulling the node image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node labels every node pod requires (on top of its zone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Extra affinity. Node affinity terms are combined with the zone pinning
    /// (each term also requires the zone); pod (anti-)affinity is added as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the default spread (the pods of a zone over hosts,
    /// `kubernetes.io/hostname`, maxSkew 1, ScheduleAnyway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Time a node gets to drain (flush memtable and hints) before SIGKILL.
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub termination_grace_period_seconds: i64,
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
fn default_progress_deadline() -> String {
    "10m".to_string()
}
fn default_grace_seconds() -> i64 {
    60
}

impl Default for PodOverrides {
    fn default() -> Self {
        Self {
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            priority_class_name: None,
            termination_grace_period_seconds: default_grace_seconds(),
        }
    }
}

mod backup;
mod status;
mod validate;

pub use backup::*;
pub use status::*;
pub use validate::*;
