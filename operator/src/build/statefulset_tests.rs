use super::super::testutil::*;
use super::*;
use crate::crd::{KVCluster, TlsSpec};

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

#[test]
fn statefulset_identity_scale_and_storage() {
    let c = cluster();
    let sts = statefulset(&ctx(&c), 1, &ZoneScale::new(4, 2)).unwrap();
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
    assert_eq!(
        ret.when_scaled.as_deref(),
        Some("Retain"),
        "a scale-down behind the operator's back keeps the volume"
    );
    let pvc = &s.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(pvc.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        sts.metadata.annotations.as_ref().unwrap()[ANNOTATION_REPLICAS],
        "4"
    );
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
    let sts = statefulset(&ctx(&c), 0, &ZoneScale::new(1, 0)).unwrap();
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
    let sts = statefulset(&ctx(&c), 2, &ZoneScale::new(1, 0)).unwrap();
    let aff = sts.spec.template.spec.clone().unwrap().affinity.unwrap();
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
    assert!(aff.pod_anti_affinity.is_none());
    let tsc = &sts
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .topology_spread_constraints;
    let tsc = &tsc.as_ref().unwrap()[0];
    assert_eq!(tsc.topology_key, "kubernetes.io/hostname");
    assert_eq!(tsc.when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(
        tsc.label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &names::zone_selector_labels("kv", "zone-c")
    );
}

#[test]
fn node_container_gets_identity_zone_peers_and_probes() {
    let c = cluster();
    let sts = statefulset(&ctx(&c), 0, &ZoneScale::new(3, 0)).unwrap();
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
    let sts = statefulset(&ctx(&c), 0, &ZoneScale::new(3, 0)).unwrap();
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
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
}

#[test]
fn overrides_image_resources_and_tls_reach_the_pod() {
    use k8s_openapi::api::core::v1::Toleration;
    let mut c = cluster();
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
        secret_name: Some("kv-tls".into()),
        ..TlsSpec::default()
    });
    let sts = statefulset(
        &BuildContext::new(&c, "registry/ringkv:2", names::DEFAULT_CLUSTER_DOMAIN),
        0,
        &ZoneScale::new(3, 0),
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
        let sts = statefulset(&ctx(c), 0, &ZoneScale::new(replicas, 0)).unwrap();
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
    let img = {
        let sts = statefulset(
            &BuildContext::new(&c, "ringkv:new", "cluster.local"),
            0,
            &ZoneScale::new(3, 0),
        )
        .unwrap();
        sts.metadata.annotations.unwrap()[ANNOTATION_TEMPLATE_HASH].clone()
    };
    assert_ne!(base, img);
    c.spec.replication.w = 3;
    assert_ne!(base, h(&c, 3), "a config change rolls the pods");
}

#[test]
fn resources_default_to_guaranteed_and_limits_follow_requests() {
    let mut c = cluster();
    let r = node_resources(&c.spec);
    assert_eq!(r.requests, r.limits, "requests = limits: Guaranteed QoS");
    assert_eq!(
        r.requests.as_ref().unwrap()["memory"],
        Quantity("2Gi".into())
    );
    c.spec.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("4Gi".into()),
        )])),
        ..ResourceRequirements::default()
    });
    let r = node_resources(&c.spec);
    assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("4Gi".into()));
    let explicit = ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_string(), Quantity("1".into()))])),
        limits: Some(BTreeMap::from([("cpu".to_string(), Quantity("2".into()))])),
        ..ResourceRequirements::default()
    };
    c.spec.resources = Some(explicit.clone());
    assert_eq!(
        node_resources(&c.spec),
        explicit,
        "explicit limits are kept"
    );
    let sts = statefulset(&ctx(&c), 0, &ZoneScale::new(1, 0)).unwrap();
    assert_eq!(container(&sts).resources.as_ref(), Some(&explicit));
}

#[test]
fn scheduling_knobs_reach_the_pod_and_keep_the_zone_pinning() {
    use k8s_openapi::api::core::v1::{
        LocalObjectReference, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint,
    };
    let mut c = cluster();
    c.spec.pod.image_pull_secrets = vec![LocalObjectReference {
        name: "regcred".into(),
    }];
    c.spec
        .pod
        .node_selector
        .insert("disktype".into(), "ssd".into());
    c.spec.pod.termination_grace_period_seconds = 300;
    // Two user node-affinity terms (ORed): each must still require the zone.
    let term = |k: &str| NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: k.into(),
            operator: "Exists".into(),
            values: None,
        }]),
        ..NodeSelectorTerm::default()
    };
    c.spec.pod.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![term("gen-a"), term("gen-b")],
            }),
            ..NodeAffinity::default()
        }),
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });
    c.spec.pod.topology_spread_constraints = vec![TopologySpreadConstraint {
        max_skew: 2,
        topology_key: "rack".into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        ..TopologySpreadConstraint::default()
    }];
    let sts = statefulset(&ctx(&c), 1, &ZoneScale::new(1, 0)).unwrap();
    let pod = sts.spec.template.spec.unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(pod.node_selector.unwrap()["disktype"], "ssd");
    assert_eq!(pod.termination_grace_period_seconds, Some(300));
    let aff = pod.affinity.unwrap();
    let terms = aff
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 2);
    for t in &terms {
        let e = t.match_expressions.as_ref().unwrap();
        assert_eq!(e[0].key, crate::crd::DEFAULT_ZONE_LABEL);
        assert_eq!(e[0].values.as_ref().unwrap(), &vec!["eu-1b".to_string()]);
        assert_eq!(e.len(), 2, "the user's requirement stays");
    }
    assert!(aff.pod_anti_affinity.is_some());
    let tsc = pod.topology_spread_constraints.unwrap();
    assert_eq!(tsc.len(), 1, "the user's spread replaces the default");
    assert_eq!(tsc[0].topology_key, "rack");
}

#[test]
fn the_cluster_domain_names_peers_and_the_volume_size_can_be_held() {
    let c = cluster();
    let sts = statefulset(
        &BuildContext::new(&c, "ringkv:1", "corp.example"),
        0,
        &ZoneScale {
            replicas: 1,
            partition: 0,
            volume_size: Some("5Gi".into()),
        },
    )
    .unwrap();
    let ct = container(&sts);
    assert_eq!(
        env_of(ct, "RINGKV_SEEDS"),
        Some("kv-peers.db.svc.corp.example:7000")
    );
    assert_eq!(
        env_of(ct, "RINGKV_ADVERTISE_HOST"),
        Some("$(POD_NAME).kv-peers.db.svc.corp.example")
    );
    let vct = &sts.spec.volume_claim_templates.unwrap()[0];
    assert_eq!(
        vct.spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("5Gi".into()),
        "an expansion in progress keeps the live template"
    );
    // The config volume names the versioned ConfigMap.
    let cm = sts.spec.template.spec.unwrap().volumes.unwrap()[0]
        .config_map
        .clone()
        .unwrap()
        .name;
    assert_eq!(cm, names::config_map("kv", &config_hash(&ctx(&c))));
}

#[test]
fn automatic_tls_mounts_per_zone_certificates_gossip_and_tokens() {
    let mut c = cluster();
    c.spec.tls = Some(TlsSpec::default());
    c.spec.auth = Some(crate::crd::AuthSpec::default());
    let sts = statefulset(&ctx(&c), 1, &ZoneScale::new(3, 0)).unwrap();
    let pod = sts.spec.template.spec.as_ref().unwrap();
    let secret_of = |vol: &str| {
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == vol)
            .and_then(|v| v.secret.as_ref()?.secret_name.clone())
    };
    assert_eq!(
        secret_of("tls").as_deref(),
        Some("kv-zone-b-tls"),
        "zone index 1"
    );
    assert_eq!(secret_of("gossip").as_deref(), Some("kv-gossip"));
    assert_eq!(secret_of("auth").as_deref(), Some("kv-auth"));
    let ct = container(&sts);
    let env: BTreeMap<_, _> = ct
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["RINGKV_TLS_CERT"], "/etc/ringkv/tls/$(POD_NAME).crt");
    assert_eq!(env["RINGKV_TLS_KEY"], "/etc/ringkv/tls/$(POD_NAME).key");
    let drain = ct.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    let cmd = drain.exec.as_ref().unwrap().command.as_ref().unwrap();
    assert_eq!(cmd[3], "https://127.0.0.1:7001");
    assert_eq!(cmd.len(), 4);
    // The CLI's own variables: the cluster CA, the pod's certificate, and
    // the tokens file it takes the admin token from.
    assert_eq!(env["RINGKV_CACERT"], "/etc/ringkv/tls/ca.crt");
    assert_eq!(env["RINGKV_CERT"], "/etc/ringkv/tls/$(POD_NAME).crt");
    assert_eq!(env["RINGKV_KEY"], "/etc/ringkv/tls/$(POD_NAME).key");
    assert_eq!(env["RINGKV_TOKEN_FILE"], "/etc/ringkv/auth/tokens");
    // Without TLS: none of it.
    let plain = statefulset(&ctx(&cluster()), 1, &ZoneScale::new(3, 0)).unwrap();
    let pod = plain.spec.template.spec.as_ref().unwrap();
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.secret.is_none())
    );
}
