//! The node configuration and the ConfigMap that carries it.
//!
//! The ConfigMap is versioned by its content (`<cluster>-config-<hash>`) and the
//! pod template names its version: a pod that restarts mid-rollout (or crashes
//! below the rollout partition) reads the configuration of the template it
//! runs, never the next one early. The planner deletes versions no StatefulSet
//! revision uses any more.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{
    BuildContext, BuildError, CONFIG_FILE, DATA_DIR, PORT_GOSSIP, PORT_GRPC, PORT_HTTP,
    PORT_INTERNODE, TLS_DIR, fnv1a_hex,
};
use crate::names;
use crate::security::{AUTH_DIR, GOSSIP_DIR, GOSSIP_KEY, TOKENS_KEY};

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
    if let (Some(tls), Some(source)) = (&spec.tls, &ctx.cert_source) {
        put("tls_mode", Value::from(tls.mode.as_node_str()));
        put("tls_ca", Value::from(format!("{TLS_DIR}/ca.crt")));
        // Per-pod files are named by the pod: the pod's environment
        // (RINGKV_TLS_CERT/KEY, see statefulset.rs) names them instead.
        if !source.per_pod_files() {
            put("tls_cert", Value::from(format!("{TLS_DIR}/tls.crt")));
            put("tls_key", Value::from(format!("{TLS_DIR}/tls.key")));
        }
        put(
            "gossip_secret_file",
            Value::from(format!("{GOSSIP_DIR}/{GOSSIP_KEY}")),
        );
    }
    if spec.auth.is_some() {
        put(
            "auth_tokens_file",
            Value::from(format!("{AUTH_DIR}/{TOKENS_KEY}")),
        );
    }
    serde_yaml::to_string(&m).expect("a string map always serializes")
}

/// Version of the configuration: part of the ConfigMap's name.
pub fn config_hash(ctx: &BuildContext) -> String {
    fnv1a_hex(node_config_yaml(ctx).as_bytes())[..10].to_string()
}

/// Node settings shared by every pod (per-pod values come from the environment).
pub fn config_map(ctx: &BuildContext) -> Result<ConfigMap, BuildError> {
    let mut meta = ctx.meta(names::config_map(&ctx.name(), &config_hash(ctx)))?;
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(names::LABEL_COMPONENT.into(), "config".into());
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            node_config_yaml(ctx),
        )])),
        // A version never changes: a new configuration is a new ConfigMap.
        immutable: Some(true),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::crd::{AuthSpec, TlsMode, TlsSpec};

    #[test]
    fn config_map_carries_the_cluster_settings() {
        let mut c = cluster();
        c.spec.replication.w = 3;
        c.spec.hinted_handoff_window = "1h".into();
        let cm = config_map(&ctx(&c)).unwrap();
        let name = format!("kv-config-{}", config_hash(&ctx(&c)));
        assert_owned(&cm.metadata, &name);
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()[names::LABEL_COMPONENT],
            "config"
        );
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
        assert!(v.get("tls_mode").is_none());
        assert!(v.get("gossip_secret_file").is_none());
        assert!(v.get("auth_tokens_file").is_none());
        c.spec.tls = Some(TlsSpec {
            secret_name: Some("kv-tls".into()),
            mode: TlsMode::Required,
            ..TlsSpec::default()
        });
        c.spec.auth = Some(AuthSpec::default());
        let v: serde_yaml::Value = serde_yaml::from_str(&node_config_yaml(&ctx(&c))).unwrap();
        assert_eq!(v["tls_mode"], "required");
        assert_eq!(v["tls_cert"], "/etc/ringkv/tls/tls.crt");
        assert_eq!(v["tls_key"], "/etc/ringkv/tls/tls.key");
        assert_eq!(v["tls_ca"], "/etc/ringkv/tls/ca.crt");
        assert_eq!(v["gossip_secret_file"], "/etc/ringkv/gossip/secret");
        assert_eq!(v["auth_tokens_file"], "/etc/ringkv/auth/tokens");
        // Automatic TLS: per-pod files come from the environment.
        c.spec.tls = Some(TlsSpec::default());
        let v: serde_yaml::Value = serde_yaml::from_str(&node_config_yaml(&ctx(&c))).unwrap();
        assert_eq!(v["tls_mode"], "enabled");
        assert_eq!(v["tls_ca"], "/etc/ringkv/tls/ca.crt");
        assert!(v.get("tls_cert").is_none());
    }

    #[test]
    fn each_configuration_is_its_own_config_map() {
        let mut c = cluster();
        let first = config_map(&ctx(&c)).unwrap().metadata.name;
        assert_eq!(first, config_map(&ctx(&c)).unwrap().metadata.name);
        c.spec.replication.r = 3;
        let second = config_map(&ctx(&c)).unwrap().metadata.name;
        assert_ne!(first, second, "a new configuration is a new version");
        // The image is not configuration: it does not make a new version.
        let other_image = BuildContext::new(&c, "ringkv:other", "cluster.local");
        assert_eq!(config_map(&other_image).unwrap().metadata.name, second);
    }
}
