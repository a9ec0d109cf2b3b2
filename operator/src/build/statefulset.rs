//! The StatefulSet of one zone and its pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_REPLICAS, ANNOTATION_TEMPLATE_HASH, BuildContext,
    BuildError, CONFIG_DIR, CONFIG_FILE, DATA_DIR, NODE_UID, PORT_GOSSIP, PORT_GRPC, PORT_HTTP,
    PORT_INTERNODE, TLS_DIR, ZoneScale, config_hash, fnv1a_hex,
};
use crate::crd::{KVClusterSpec, ReclaimPolicy, ZoneSpec};
use crate::names;
use crate::security::{self, AUTH_DIR, GOSSIP_DIR};

/// The StatefulSet of zone `zone_index`, with the planner's replicas and partition.
pub fn statefulset(
    ctx: &BuildContext,
    zone_index: usize,
    scale: &ZoneScale,
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
    meta.annotations = Some(BTreeMap::from([
        (
            ANNOTATION_TEMPLATE_HASH.to_string(),
            template_hash(&template),
        ),
        // Written with replicas in one apply: a different live value is drift.
        (ANNOTATION_REPLICAS.to_string(), scale.replicas.to_string()),
    ]));
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
                    // A scale-down the operator did not make (kubectl scale, GitOps
                    // drift) must not take the node's data with it: the operator
                    // reverts it and the pod comes back on its volume. Volumes of
                    // decommissioned nodes are removed by the operator itself.
                    when_scaled: Some("Retain".into()),
                },
            ),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(names::VOLUME.into()),
                    labels: Some(names::selector_labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(
                                scale
                                    .volume_size
                                    .clone()
                                    .unwrap_or_else(|| storage.size.clone()),
                            ),
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
    let peers_dns = ctx.peers_dns()?;

    let mut labels = spec.pod.labels.clone();
    labels.extend(names::zone_selector_labels(&name, &zone.name));
    labels.insert(names::LABEL_COMPONENT.into(), "node".into());
    labels.insert(names::LABEL_MANAGED_BY.into(), names::MANAGER.into());
    let mut annotations = spec.pod.annotations.clone();
    annotations.insert(ANNOTATION_CONFIG_HASH.into(), config_hash(ctx));

    let env_vars = vec![
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
    let mut env_vars = env_vars;
    let mut mounts = vec![
        mount("data", DATA_DIR, false),
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&name, &config_hash(ctx)),
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
    let secret_volume = |vol: &str, secret: String| Volume {
        name: vol.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            // Owner-only: the node runs as NODE_UID (fsGroup makes it the group).
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    if let (Some(_), Some(source)) = (&spec.tls, &ctx.cert_source) {
        // Secret volumes (not subPath mounts) so the kubelet's updates reach
        // the pod: the node re-reads renewed certificates without a restart.
        mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(secret_volume("tls", source.node_secret(&name, &zone.name)));
        mounts.push(mount("gossip", GOSSIP_DIR, true));
        volumes.push(secret_volume("gossip", security::names::gossip(&name)));
        let (cert, key) = if source.per_pod_files() {
            (
                format!("{TLS_DIR}/$(POD_NAME).crt"),
                format!("{TLS_DIR}/$(POD_NAME).key"),
            )
        } else {
            (format!("{TLS_DIR}/tls.crt"), format!("{TLS_DIR}/tls.key"))
        };
        if source.per_pod_files() {
            env_vars.push(env("RINGKV_TLS_CERT", &cert));
            env_vars.push(env("RINGKV_TLS_KEY", &key));
        }
        // The preStop drain is the `ringkv` CLI: it trusts the cluster CA
        // and presents the pod's own certificate (Admin needs mutual TLS),
        // through its RINGKV_CACERT/RINGKV_CERT/RINGKV_KEY variables.
        env_vars.push(env("RINGKV_CACERT", &format!("{TLS_DIR}/ca.crt")));
        env_vars.push(env("RINGKV_CERT", &cert));
        env_vars.push(env("RINGKV_KEY", &key));
    }
    if let Some(tokens) = security::tokens_secret(&name, spec) {
        mounts.push(mount("auth", AUTH_DIR, true));
        volumes.push(secret_volume("auth", tokens));
        // The CLI takes the admin token from the node's tokens file.
        env_vars.push(env(
            "RINGKV_TOKEN_FILE",
            &format!("{AUTH_DIR}/{}", security::TOKENS_KEY),
        ));
    }
    let drain = vec![
        "ringkv".to_string(),
        "drain".into(),
        "--admin".into(),
        format!("{scheme}://127.0.0.1:{PORT_INTERNODE}"),
    ];

    let container = Container {
        name: "node".into(),
        image: Some(ctx.image.to_string()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        command: Some(vec!["ringkv-node".into()]),
        ports: Some(vec![
            container_port("gossip", PORT_GOSSIP, "UDP"),
            container_port("internode", PORT_INTERNODE, "TCP"),
            container_port("grpc", PORT_GRPC, "TCP"),
            container_port("http", PORT_HTTP, "TCP"),
        ]),
        env: Some(env_vars),
        resources: Some(node_resources(spec)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // WAL replay after a crash may take a while; do not let liveness kill it.
        startup_probe: Some(http_probe("/healthz", 5, 120)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(drain),
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
            termination_grace_period_seconds: Some(spec.pod.termination_grace_period_seconds),
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
            affinity: Some(affinity(spec, zone)),
            topology_spread_constraints: Some(spread(spec, &name, zone)),
            node_selector: (!spec.pod.node_selector.is_empty())
                .then(|| spec.pod.node_selector.clone()),
            tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
            image_pull_secrets: (!spec.pod.image_pull_secrets.is_empty())
                .then(|| spec.pod.image_pull_secrets.clone()),
            priority_class_name: spec.pod.priority_class_name.clone(),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    })
}

/// Pin pods to the zone: every node affinity term requires it (terms are
/// ORed, so the zone requirement is added to each of the user's terms); the
/// user's pod (anti-)affinity is kept as is.
fn affinity(spec: &KVClusterSpec, zone: &ZoneSpec) -> Affinity {
    let zone_req = NodeSelectorRequirement {
        key: spec.zone_label_key.clone(),
        operator: "In".into(),
        values: Some(vec![zone.node_label_value.clone()]),
    };
    let mut a = spec.pod.affinity.clone().unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .insert(0, zone_req.clone());
    }
    a
}

/// The user's spread constraints, or: the pods of a zone over its hosts
/// (preferred, so a small cluster with one host per zone still schedules).
fn spread(spec: &KVClusterSpec, cluster: &str, zone: &ZoneSpec) -> Vec<TopologySpreadConstraint> {
    if !spec.pod.topology_spread_constraints.is_empty() {
        return spec.pod.topology_spread_constraints.clone();
    }
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(names::zone_selector_labels(cluster, &zone.name)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

/// CPU and memory of the node container: `spec.resources` with missing limits
/// set to the requests, or 1 CPU and 2Gi. Requests = limits gives Guaranteed
/// QoS, so a node is the last thing the kubelet evicts under pressure.
pub fn node_resources(spec: &KVClusterSpec) -> ResourceRequirements {
    let default = || {
        BTreeMap::from([
            ("cpu".to_string(), Quantity("1".into())),
            ("memory".to_string(), Quantity("2Gi".into())),
        ])
    };
    match spec.resources.clone() {
        None => ResourceRequirements {
            requests: Some(default()),
            limits: Some(default()),
            ..ResourceRequirements::default()
        },
        Some(mut r) => {
            if r.limits.as_ref().is_none_or(BTreeMap::is_empty) {
                r.limits = r.requests.clone();
            }
            r
        }
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

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
