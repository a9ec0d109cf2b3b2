//! Desired Kubernetes objects, each a pure function of the `KVCluster`.
//!
//! Nothing here talks to the API server: the reconciler applies what these
//! functions return (server-side apply, one field manager), so every field the
//! operator owns is visible and unit-tested here. The only inputs that are not
//! in the spec are the ones the planner decides per reconcile: a zone's
//! `replicas` and rollout `partition`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{KVCluster, ReclaimPolicy, ServiceType, ZoneSpec};
use crate::names;

pub const PORT_GOSSIP: i32 = 7000;
pub const PORT_INTERNODE: i32 = 7001;
pub const PORT_GRPC: i32 = 7070;
pub const PORT_HTTP: i32 = 8080;
/// The uid the image runs as (see the Dockerfile).
pub const NODE_UID: i64 = 10001;
pub const DATA_DIR: &str = "/var/lib/ringkv";
pub const CONFIG_DIR: &str = "/etc/ringkv/config";
pub const CONFIG_FILE: &str = "ringkv.yaml";
pub const TLS_DIR: &str = "/etc/ringkv/tls";
/// Pod-template annotation carrying a hash of the node configuration, so a
/// configuration change rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "ringkv.io/config-hash";
/// StatefulSet annotation carrying a hash of the pod template the operator
/// last applied; the planner compares it with the desired one to detect a rollout.
pub const ANNOTATION_TEMPLATE_HASH: &str = "ringkv.io/template-hash";
/// Time a node gets to drain (flush memtable and hints) before SIGKILL.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Error building objects for a cluster that lacks API-server-assigned fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("KVCluster has no {0} (was it read from the API server?)")]
    MissingMetadata(&'static str),
    #[error("zone index {0} is out of range")]
    NoSuchZone(usize),
}

/// Everything a builder needs besides the spec.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    pub cluster: &'a KVCluster,
    /// Image used when the spec does not pin one (the operator's own version).
    pub default_image: &'a str,
}

impl<'a> BuildContext<'a> {
    pub fn new(cluster: &'a KVCluster, default_image: &'a str) -> Self {
        Self {
            cluster,
            default_image,
        }
    }

    fn name(&self) -> String {
        self.cluster.name_any()
    }

    fn namespace(&self) -> Result<String, BuildError> {
        self.cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))
    }

    fn owner(&self) -> Result<OwnerReference, BuildError> {
        self.cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))
    }

    fn meta(&self, name: String) -> Result<ObjectMeta, BuildError> {
        Ok(ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace()?),
            labels: Some(names::common_labels(&self.name())),
            owner_references: Some(vec![self.owner()?]),
            ..ObjectMeta::default()
        })
    }

    pub fn image(&self) -> String {
        self.cluster
            .spec
            .image
            .clone()
            .unwrap_or_else(|| self.default_image.to_string())
    }
}

/// Identity of the node pods. Nodes never call the Kubernetes API, so no token is mounted.
pub fn service_account(ctx: &BuildContext) -> Result<ServiceAccount, BuildError> {
    Ok(ServiceAccount {
        metadata: ctx.meta(names::service_account(&ctx.name()))?,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// Node settings shared by every pod (per-pod values come from the environment).
pub fn config_map(ctx: &BuildContext) -> Result<ConfigMap, BuildError> {
    Ok(ConfigMap {
        metadata: ctx.meta(names::config_map(&ctx.name()))?,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            node_config_yaml(ctx),
        )])),
        ..ConfigMap::default()
    })
}

/// The node's YAML configuration (keys from docs/node-config.md).
pub fn node_config_yaml(ctx: &BuildContext) -> String {
    use serde_yaml::Value;
    let spec = &ctx.cluster.spec;
    let mut m = serde_yaml::Mapping::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    put("n", Value::from(spec.replication.n));
    put("w", Value::from(spec.replication.w));
    put("r", Value::from(spec.replication.r));
    put("vnodes", Value::from(spec.vnodes));
    put("conflict_mode", Value::from(spec.conflict_mode.as_str()));
    put(
        "max_hint_window",
        Value::from(spec.hinted_handoff_window.as_str()),
    );
    // The operator schedules repair itself, one node at a time.
    put("repair_interval", Value::from("off"));
    put("data_dir", Value::from(DATA_DIR));
    put(
        "listen_gossip",
        Value::from(format!("0.0.0.0:{PORT_GOSSIP}")),
    );
    put(
        "listen_internode",
        Value::from(format!("0.0.0.0:{PORT_INTERNODE}")),
    );
    put("listen_grpc", Value::from(format!("0.0.0.0:{PORT_GRPC}")));
    put("listen_http", Value::from(format!("0.0.0.0:{PORT_HTTP}")));
    if spec.tls.is_some() {
        put("tls_cert", Value::from(format!("{TLS_DIR}/tls.crt")));
        put("tls_key", Value::from(format!("{TLS_DIR}/tls.key")));
        put("tls_ca", Value::from(format!("{TLS_DIR}/ca.crt")));
    }
    serde_yaml::to_string(&m).expect("a string map always serializes")
}

/// Headless Service: stable pod DNS names and the gossip seed. Not-ready pods
/// are published so joining nodes can find each other before they are ready.
pub fn peer_service(ctx: &BuildContext) -> Result<Service, BuildError> {
    let name = ctx.name();
    Ok(Service {
        metadata: ctx.meta(names::peer_service(&name))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::selector_labels(&name)),
            ports: Some(vec![
                port("gossip", PORT_GOSSIP, "UDP", None),
                port("internode", PORT_INTERNODE, "TCP", None),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Service applications connect to: gRPC and HTTP of every ready node.
pub fn client_service(ctx: &BuildContext) -> Result<Service, BuildError> {
    let name = ctx.name();
    let cs = &ctx.cluster.spec.client_service;
    let node_ports = cs.type_ != ServiceType::ClusterIP;
    let mut meta = ctx.meta(names::client_service(&name))?;
    if !cs.annotations.is_empty() {
        meta.annotations = Some(cs.annotations.clone());
    }
    Ok(Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(cs.type_.as_str().to_string()),
            selector: Some(names::selector_labels(&name)),
            ports: Some(vec![
                ServicePort {
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..port(
                        "grpc",
                        PORT_GRPC,
                        "TCP",
                        cs.grpc_node_port.filter(|_| node_ports),
                    )
                },
                port(
                    "http",
                    PORT_HTTP,
                    "TCP",
                    cs.http_node_port.filter(|_| node_ports),
                ),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn port(name: &str, port: i32, protocol: &str, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::String(name.into())),
        node_port,
        ..ServicePort::default()
    }
}

/// Voluntary disruptions (node drains, cluster upgrades) may take down at most
/// N−W nodes at once, so every key keeps W live replicas for writes.
pub fn pdb(ctx: &BuildContext) -> Result<PodDisruptionBudget, BuildError> {
    let name = ctx.name();
    let r = ctx.cluster.spec.replication;
    Ok(PodDisruptionBudget {
        metadata: ctx.meta(names::pdb(&name))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int((r.n - r.w).max(0))),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// What the planner decides for one zone's StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneScale {
    pub replicas: i32,
    /// Pods with an ordinal >= partition run the newest template.
    pub partition: i32,
}

/// The StatefulSet of zone `zone_index`, with the planner's replicas and partition.
pub fn statefulset(
    ctx: &BuildContext,
    zone_index: usize,
    scale: ZoneScale,
) -> Result<StatefulSet, BuildError> {
    let zone = ctx
        .cluster
        .spec
        .zones
        .get(zone_index)
        .ok_or(BuildError::NoSuchZone(zone_index))?;
    let name = ctx.name();
    let template = pod_template(ctx, zone)?;
    let mut meta = ctx.meta(names::statefulset(&name, &zone.name))?;
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(names::LABEL_ZONE.into(), zone.name.clone());
    meta.annotations = Some(BTreeMap::from([(
        ANNOTATION_TEMPLATE_HASH.to_string(),
        template_hash(&template),
    )]));
    let storage = &ctx.cluster.spec.storage;
    Ok(StatefulSet {
        metadata: meta,
        spec: StatefulSetSpec {
            service_name: Some(names::peer_service(&name)),
            replicas: Some(scale.replicas),
            // The operator paces joins and restarts itself; ordered start-up would
            // only block a zone's recovery behind its lowest ordinal.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(names::zone_selector_labels(&name, &zone.name)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(scale.partition),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        match storage.reclaim_policy {
                            ReclaimPolicy::Retain => "Retain",
                            ReclaimPolicy::Delete => "Delete",
                        }
                        .into(),
                    ),
                    // Scale-down only ever removes a decommissioned node whose ranges were
                    // streamed away; reusing its stale volume for a later node would
                    // resurrect a departed identity.
                    when_scaled: Some("Delete".into()),
                },
            ),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(names::selector_labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(storage.size.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            template,
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    })
}

/// Hash of the pod template a StatefulSet of `zone_index` would get: the
/// planner compares it with the live StatefulSet's annotation.
pub fn desired_template_hash(ctx: &BuildContext, zone_index: usize) -> Result<String, BuildError> {
    let zone = ctx
        .cluster
        .spec
        .zones
        .get(zone_index)
        .ok_or(BuildError::NoSuchZone(zone_index))?;
    Ok(template_hash(&pod_template(ctx, zone)?))
}

fn pod_template(ctx: &BuildContext, zone: &ZoneSpec) -> Result<PodTemplateSpec, BuildError> {
    let spec = &ctx.cluster.spec;
    let name = ctx.name();
    let ns = ctx.namespace()?;
    let peers_dns = format!("{}.{ns}.svc.cluster.local", names::peer_service(&name));

    let mut labels = spec.pod.labels.clone();
    labels.extend(names::zone_selector_labels(&name, &zone.name));
    labels.insert(names::LABEL_COMPONENT.into(), "node".into());
    labels.insert(names::LABEL_MANAGED_BY.into(), names::MANAGER.into());
    let mut annotations = spec.pod.annotations.clone();
    annotations.insert(
        ANNOTATION_CONFIG_HASH.into(),
        fnv1a_hex(node_config_yaml(ctx).as_bytes()),
    );

    let env = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env("RINGKV_CONFIG", &format!("{CONFIG_DIR}/{CONFIG_FILE}")),
        env("RINGKV_NODE_ID", "$(POD_NAME)"),
        env("RINGKV_ZONE", &zone.name),
        env("RINGKV_ADVERTISE_HOST", &format!("$(POD_NAME).{peers_dns}")),
        env("RINGKV_SEEDS", &format!("{peers_dns}:{PORT_GOSSIP}")),
        env("RINGKV_DATA_DIR", DATA_DIR),
    ];
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let mut mounts = vec![
        mount("data", DATA_DIR, false),
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
    ];
    if let Some(tls) = &spec.tls {
        mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: "node".into(),
        image: Some(ctx.image()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        command: Some(vec!["ringkv-node".into()]),
        ports: Some(vec![
            container_port("gossip", PORT_GOSSIP, "UDP"),
            container_port("internode", PORT_INTERNODE, "TCP"),
            container_port("grpc", PORT_GRPC, "TCP"),
            container_port("http", PORT_HTTP, "TCP"),
        ]),
        env: Some(env),
        resources: spec.resources.clone(),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // WAL replay after a crash may take a while; do not let liveness kill it.
        startup_probe: Some(http_probe("/healthz", 5, 120)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "ringkv".into(),
                        "drain".into(),
                        "--admin".into(),
                        format!("{scheme}://127.0.0.1:{PORT_INTERNODE}"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::service_account(&name)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NODE_UID),
                run_as_group: Some(NODE_UID),
                fs_group: Some(NODE_UID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            affinity: Some(affinity(&spec.zone_label_key, zone, &name)),
            tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
            priority_class_name: spec.pod.priority_class_name.clone(),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    })
}

/// Pin pods to the zone (required) and spread them over hosts (preferred, so a
/// small cluster with one host per zone still schedules).
fn affinity(label_key: &str, zone: &ZoneSpec, cluster: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: label_key.into(),
                        operator: "In".into(),
                        values: Some(vec![zone.node_label_value.clone()]),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(names::selector_labels(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..ContainerPort::default()
    }
}

/// Stable hash of a pod template (field order is fixed by the types, maps are sorted).
pub fn template_hash(t: &PodTemplateSpec) -> String {
    fnv1a_hex(&serde_json::to_vec(t).expect("a pod template always serializes"))
}

/// FNV-1a: tiny, dependency-free and stable across Rust releases (unlike `DefaultHasher`).
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{KVClusterSpec, TlsSpec};

    pub(crate) fn cluster() -> KVCluster {
        let spec: KVClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3,
            "zones": [
                {"name": "zone-a", "nodeLabelValue": "eu-1a"},
                {"name": "zone-b", "nodeLabelValue": "eu-1b"},
                {"name": "zone-c", "nodeLabelValue": "eu-1c"}
            ]
        }))
        .unwrap();
        let mut kvc = KVCluster::new("kv", spec);
        kvc.metadata.namespace = Some("db".into());
        kvc.metadata.uid = Some("uid-1".into());
        kvc
    }

    fn ctx(c: &KVCluster) -> BuildContext<'_> {
        BuildContext::new(c, "ringkv:default")
    }

    fn container(sts: &StatefulSet) -> &Container {
        &sts.spec.template.spec.as_ref().unwrap().containers[0]
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value
            .as_deref()
    }

    fn assert_owned(meta: &ObjectMeta, name: &str) {
        assert_eq!(meta.name.as_deref(), Some(name));
        assert_eq!(meta.namespace.as_deref(), Some("db"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "KVCluster");
        assert_eq!(owner.api_version, "ringkv.io/v1alpha1");
        assert_eq!(owner.name, "kv");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            meta.labels.as_ref().unwrap()[names::LABEL_MANAGED_BY],
            names::MANAGER
        );
        assert_eq!(meta.labels.as_ref().unwrap()[names::LABEL_INSTANCE], "kv");
    }

    #[test]
    fn missing_metadata_is_an_error_not_a_panic() {
        let mut c = cluster();
        c.metadata.uid = None;
        assert_eq!(
            service_account(&ctx(&c)).unwrap_err(),
            BuildError::MissingMetadata("uid")
        );
        c.metadata.namespace = None;
        assert_eq!(
            config_map(&ctx(&c)).unwrap_err(),
            BuildError::MissingMetadata("namespace")
        );
        let c = cluster();
        assert_eq!(
            statefulset(
                &ctx(&c),
                3,
                ZoneScale {
                    replicas: 1,
                    partition: 0
                }
            )
            .unwrap_err(),
            BuildError::NoSuchZone(3)
        );
    }

    #[test]
    fn applied_objects_carry_api_version_and_kind() {
        // Server-side apply needs both in the body.
        let c = cluster();
        let ctx = ctx(&c);
        let scale = ZoneScale {
            replicas: 1,
            partition: 0,
        };
        for (v, api, kind) in [
            (
                serde_json::to_value(service_account(&ctx).unwrap()).unwrap(),
                "v1",
                "ServiceAccount",
            ),
            (
                serde_json::to_value(config_map(&ctx).unwrap()).unwrap(),
                "v1",
                "ConfigMap",
            ),
            (
                serde_json::to_value(peer_service(&ctx).unwrap()).unwrap(),
                "v1",
                "Service",
            ),
            (
                serde_json::to_value(pdb(&ctx).unwrap()).unwrap(),
                "policy/v1",
                "PodDisruptionBudget",
            ),
            (
                serde_json::to_value(statefulset(&ctx, 0, scale).unwrap()).unwrap(),
                "apps/v1",
                "StatefulSet",
            ),
        ] {
            assert_eq!(
                (v["apiVersion"].as_str(), v["kind"].as_str()),
                (Some(api), Some(kind))
            );
        }
    }

    #[test]
    fn service_account_has_no_token() {
        let c = cluster();
        let sa = service_account(&ctx(&c)).unwrap();
        assert_owned(&sa.metadata, "kv-node");
        assert_eq!(sa.automount_service_account_token, Some(false));
    }

    #[test]
    fn config_map_carries_the_cluster_settings() {
        let mut c = cluster();
        c.spec.replication.w = 3;
        c.spec.hinted_handoff_window = "1h".into();
        let cm = config_map(&ctx(&c)).unwrap();
        assert_owned(&cm.metadata, "kv-config");
        let yaml = &cm.data.as_ref().unwrap()[CONFIG_FILE];
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(v["n"], 3);
        assert_eq!(v["w"], 3);
        assert_eq!(v["r"], 2);
        assert_eq!(v["vnodes"], 128);
        assert_eq!(v["conflict_mode"], "causal");
        assert_eq!(v["max_hint_window"], "1h");
        assert_eq!(v["repair_interval"], "off", "the operator schedules repair");
        assert_eq!(v["data_dir"], DATA_DIR);
        assert_eq!(v["listen_internode"], "0.0.0.0:7001");
        assert!(v.get("tls_cert").is_none());
        c.spec.tls = Some(TlsSpec {
            secret_name: "kv-tls".into(),
        });
        let v: serde_yaml::Value = serde_yaml::from_str(&node_config_yaml(&ctx(&c))).unwrap();
        assert_eq!(v["tls_cert"], "/etc/ringkv/tls/tls.crt");
        assert_eq!(v["tls_key"], "/etc/ringkv/tls/tls.key");
        assert_eq!(v["tls_ca"], "/etc/ringkv/tls/ca.crt");
    }

    #[test]
    fn peer_service_is_headless_and_publishes_not_ready_pods() {
        let c = cluster();
        let svc = peer_service(&ctx(&c)).unwrap();
        assert_owned(&svc.metadata, "kv-peers");
        let s = svc.spec.unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.selector.unwrap(), names::selector_labels("kv"));
        let ports = s.ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].port, ports[0].protocol.as_deref()),
            (7000, Some("UDP"))
        );
        assert_eq!(
            (ports[1].port, ports[1].protocol.as_deref()),
            (7001, Some("TCP"))
        );
    }

    #[test]
    fn client_service_exposes_grpc_and_http() {
        let mut c = cluster();
        let svc = client_service(&ctx(&c)).unwrap();
        assert_owned(&svc.metadata, "kv");
        let s = svc.spec.unwrap();
        assert_eq!(s.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            s.publish_not_ready_addresses, None,
            "only ready nodes serve clients"
        );
        let ports = s.ports.unwrap();
        assert_eq!(
            ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            vec![7070, 8080]
        );
        assert_eq!(ports[0].app_protocol.as_deref(), Some("kubernetes.io/h2c"));
        assert!(ports.iter().all(|p| p.node_port.is_none()));
        // Node ports are only set for NodePort/LoadBalancer services.
        c.spec.client_service.grpc_node_port = Some(30070);
        c.spec.client_service.http_node_port = Some(30080);
        let ports = client_service(&ctx(&c))
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap();
        assert!(ports.iter().all(|p| p.node_port.is_none()));
        c.spec.client_service.type_ = ServiceType::NodePort;
        c.spec
            .client_service
            .annotations
            .insert("a".into(), "b".into());
        let svc = client_service(&ctx(&c)).unwrap();
        assert_eq!(svc.metadata.annotations.unwrap()["a"], "b");
        let s = svc.spec.unwrap();
        assert_eq!(s.type_.as_deref(), Some("NodePort"));
        let ports = s.ports.unwrap();
        assert_eq!(ports[0].node_port, Some(30070));
        assert_eq!(ports[1].node_port, Some(30080));
    }

    #[test]
    fn pdb_allows_n_minus_w_unavailable() {
        let mut c = cluster();
        let p = pdb(&ctx(&c)).unwrap();
        assert_owned(&p.metadata, "kv");
        let s = p.spec.unwrap();
        assert_eq!(s.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(s.min_available, None);
        assert_eq!(
            s.selector.unwrap().match_labels.unwrap(),
            names::selector_labels("kv")
        );
        c.spec.replication.n = 5;
        c.spec.replication.w = 2;
        assert_eq!(
            pdb(&ctx(&c)).unwrap().spec.unwrap().max_unavailable,
            Some(IntOrString::Int(3))
        );
        c.spec.replication.w = 5;
        assert_eq!(
            pdb(&ctx(&c)).unwrap().spec.unwrap().max_unavailable,
            Some(IntOrString::Int(0))
        );
    }

    #[test]
    fn statefulset_identity_scale_and_storage() {
        let c = cluster();
        let sts = statefulset(
            &ctx(&c),
            1,
            ZoneScale {
                replicas: 4,
                partition: 2,
            },
        )
        .unwrap();
        assert_owned(&sts.metadata, "kv-zone-b");
        assert_eq!(
            sts.metadata.labels.as_ref().unwrap()[names::LABEL_ZONE],
            "zone-b"
        );
        let s = &sts.spec;
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.service_name.as_deref(), Some("kv-peers"));
        assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            s.selector.match_labels.as_ref().unwrap(),
            &names::zone_selector_labels("kv", "zone-b")
        );
        let us = s.update_strategy.as_ref().unwrap();
        assert_eq!(us.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(us.rolling_update.as_ref().unwrap().partition, Some(2));
        let ret = s.persistent_volume_claim_retention_policy.as_ref().unwrap();
        assert_eq!(ret.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(ret.when_scaled.as_deref(), Some("Delete"));
        let pvc = &s.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(pvc.metadata.name.as_deref(), Some("data"));
        let pvc_spec = pvc.spec.as_ref().unwrap();
        assert_eq!(
            pvc_spec.access_modes.as_ref().unwrap(),
            &vec!["ReadWriteOnce".to_string()]
        );
        assert_eq!(pvc_spec.storage_class_name, None);
        assert_eq!(
            pvc_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("10Gi".into())
        );
        // Pod labels must satisfy the selector.
        let tl = s
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in names::zone_selector_labels("kv", "zone-b") {
            assert_eq!(tl[&k], v);
        }
    }

    #[test]
    fn reclaim_policy_and_storage_class_map_to_the_statefulset() {
        let mut c = cluster();
        c.spec.storage.reclaim_policy = ReclaimPolicy::Delete;
        c.spec.storage.storage_class_name = Some("fast".into());
        c.spec.storage.size = "1Ti".into();
        let sts = statefulset(
            &ctx(&c),
            0,
            ZoneScale {
                replicas: 1,
                partition: 0,
            },
        )
        .unwrap();
        let s = sts.spec;
        assert_eq!(
            s.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        let pvc = s.volume_claim_templates.unwrap().remove(0).spec.unwrap();
        assert_eq!(pvc.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc.resources.unwrap().requests.unwrap()["storage"],
            Quantity("1Ti".into())
        );
    }

    #[test]
    fn pods_are_pinned_to_their_zone_and_spread_over_hosts() {
        let mut c = cluster();
        c.spec.zone_label_key = "example.com/rack".into();
        let sts = statefulset(
            &ctx(&c),
            2,
            ZoneScale {
                replicas: 1,
                partition: 0,
            },
        )
        .unwrap();
        let aff = sts.spec.template.spec.unwrap().affinity.unwrap();
        let req = aff
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        let expr = &req.node_selector_terms[0]
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(expr.key, "example.com/rack");
        assert_eq!(expr.operator, "In");
        assert_eq!(expr.values.as_ref().unwrap(), &vec!["eu-1c".to_string()]);
        let anti = aff.pod_anti_affinity.unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let pref = &anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(
            pref.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn node_container_gets_identity_zone_peers_and_probes() {
        let c = cluster();
        let sts = statefulset(
            &ctx(&c),
            0,
            ZoneScale {
                replicas: 3,
                partition: 0,
            },
        )
        .unwrap();
        let ct = container(&sts);
        assert_eq!(ct.image.as_deref(), Some("ringkv:default"));
        assert_eq!(ct.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            ct.command.as_ref().unwrap(),
            &vec!["ringkv-node".to_string()]
        );
        assert_eq!(env_of(ct, "RINGKV_NODE_ID"), Some("$(POD_NAME)"));
        assert_eq!(env_of(ct, "RINGKV_ZONE"), Some("zone-a"));
        assert_eq!(
            env_of(ct, "RINGKV_ADVERTISE_HOST"),
            Some("$(POD_NAME).kv-peers.db.svc.cluster.local")
        );
        assert_eq!(
            env_of(ct, "RINGKV_SEEDS"),
            Some("kv-peers.db.svc.cluster.local:7000")
        );
        assert_eq!(
            env_of(ct, "RINGKV_CONFIG"),
            Some("/etc/ringkv/config/ringkv.yaml")
        );
        assert_eq!(env_of(ct, "RINGKV_DATA_DIR"), Some(DATA_DIR));
        // POD_NAME must precede the variables that reference it.
        let names: Vec<_> = ct
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(
            names.iter().position(|n| *n == "POD_NAME")
                < names.iter().position(|n| *n == "RINGKV_NODE_ID")
        );
        let pod_name = &ct.env.as_ref().unwrap()[0];
        assert_eq!(
            pod_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );

        let ready = ct
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("http".into()));
        let live = ct
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let pre_stop = ct.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap(),
            &vec!["ringkv", "drain", "--admin", "http://127.0.0.1:7001"]
        );
        let ports: Vec<_> = ct
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.container_port, p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(
            ports,
            vec![
                (7000, "UDP".into()),
                (7001, "TCP".into()),
                (7070, "TCP".into()),
                (8080, "TCP".into())
            ]
        );
        let mounts: Vec<_> = ct
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, vec![DATA_DIR, CONFIG_DIR, "/tmp"]);
    }

    #[test]
    fn pods_run_non_root_with_a_read_only_root_filesystem() {
        let c = cluster();
        let sts = statefulset(
            &ctx(&c),
            0,
            ZoneScale {
                replicas: 3,
                partition: 0,
            },
        )
        .unwrap();
        let pod = sts.spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_user, Some(NODE_UID));
        assert_eq!(psc.fs_group, Some(NODE_UID));
        assert_eq!(psc.run_as_non_root, Some(true));
        let csc = container(&sts).security_context.as_ref().unwrap();
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("kv-node"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(TERMINATION_GRACE_SECONDS)
        );
    }

    #[test]
    fn overrides_image_resources_and_tls_reach_the_pod() {
        use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
        let mut c = cluster();
        c.spec.image = Some("registry/ringkv:2".into());
        c.spec.image_pull_policy = crate::crd::PullPolicy::Always;
        c.spec.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                Quantity("500m".into()),
            )])),
            ..ResourceRequirements::default()
        });
        c.spec.pod.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }];
        c.spec
            .pod
            .annotations
            .insert("team".into(), "storage".into());
        c.spec.pod.labels.insert("tier".into(), "db".into());
        // Operator labels win over user labels.
        c.spec
            .pod
            .labels
            .insert(names::LABEL_INSTANCE.into(), "hijack".into());
        c.spec.pod.priority_class_name = Some("critical".into());
        c.spec.tls = Some(TlsSpec {
            secret_name: "kv-tls".into(),
        });
        let sts = statefulset(
            &ctx(&c),
            0,
            ZoneScale {
                replicas: 3,
                partition: 0,
            },
        )
        .unwrap();
        let ct = container(&sts);
        assert_eq!(ct.image.as_deref(), Some("registry/ringkv:2"));
        assert_eq!(ct.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            ct.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
            Quantity("500m".into())
        );
        let tmpl = &sts.spec.template;
        let meta = tmpl.metadata.as_ref().unwrap();
        assert_eq!(meta.annotations.as_ref().unwrap()["team"], "storage");
        assert!(
            meta.annotations
                .as_ref()
                .unwrap()
                .contains_key(ANNOTATION_CONFIG_HASH)
        );
        assert_eq!(meta.labels.as_ref().unwrap()["tier"], "db");
        assert_eq!(meta.labels.as_ref().unwrap()[names::LABEL_INSTANCE], "kv");
        let pod = tmpl.spec.as_ref().unwrap();
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));
        let tls_vol = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            tls_vol.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("kv-tls")
        );
        assert!(
            ct.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == TLS_DIR)
        );
        let pre_stop = ct.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap()[3],
            "https://127.0.0.1:7001"
        );
    }

    #[test]
    fn template_hash_changes_with_image_and_config_but_not_scale() {
        let mut c = cluster();
        let h = |c: &KVCluster, replicas| {
            let sts = statefulset(
                &ctx(c),
                0,
                ZoneScale {
                    replicas,
                    partition: 0,
                },
            )
            .unwrap();
            sts.metadata.annotations.unwrap()[ANNOTATION_TEMPLATE_HASH].clone()
        };
        let base = h(&c, 3);
        assert_eq!(base, h(&c, 5), "scaling is not a rollout");
        assert_eq!(base, desired_template_hash(&ctx(&c), 0).unwrap());
        assert_ne!(
            base,
            desired_template_hash(&ctx(&c), 1).unwrap(),
            "zones differ"
        );
        c.spec.image = Some("ringkv:new".into());
        let img = h(&c, 3);
        assert_ne!(base, img);
        c.spec.replication.w = 3;
        assert_ne!(img, h(&c, 3), "a config change rolls the pods");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
