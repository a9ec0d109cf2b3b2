//! Desired Kubernetes objects, each a pure function of the `KVCluster` and a
//! few values the operator resolved (the node image, the cluster domain).
//!
//! Nothing here talks to the API server: the reconciler applies what these
//! functions return (server-side apply, one field manager), so every field the
//! operator owns is visible and unit-tested here. The only inputs that are not
//! in the spec are the ones the planner decides per reconcile ([`ZoneScale`]).

mod config;
mod pdb;
mod services;
mod statefulset;

pub use config::{config_hash, config_map, node_config_yaml};
pub use pdb::{max_unavailable, pdb};
pub use services::{client_service, peer_service, service_account};
pub use statefulset::{desired_template_hash, node_resources, statefulset};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::KVCluster;
use crate::names;
use crate::security::CertSource;

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
pub use crate::observe::{ANNOTATION_REPLICAS, ANNOTATION_TEMPLATE_HASH};

/// Error building objects for a cluster that lacks API-server-assigned fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// The node image (see `status.image`: resolved once, not per operator version).
    pub image: &'a str,
    /// DNS domain of the Kubernetes cluster (`cluster.local` unless configured).
    pub cluster_domain: &'a str,
    /// Where node certificates come from (`None`: no TLS).
    pub cert_source: Option<CertSource>,
}

impl<'a> BuildContext<'a> {
    pub fn new(cluster: &'a KVCluster, image: &'a str, cluster_domain: &'a str) -> Self {
        // Without observations: the Secret when named, else the operator's CA
        // (the reconciler resolves cert-manager and stickiness, see
        // `security::cert_source`).
        let cert_source = cluster
            .spec
            .tls
            .as_ref()
            .map(|t| crate::security::cert_source(t, None, false));
        Self {
            cluster,
            image,
            cluster_domain,
            cert_source,
        }
    }

    /// The same context with a resolved certificate source.
    pub fn with_cert_source(mut self, source: Option<CertSource>) -> Self {
        self.cert_source = source;
        self
    }

    pub(crate) fn name(&self) -> String {
        self.cluster.name_any()
    }

    pub(crate) fn namespace(&self) -> Result<String, BuildError> {
        self.cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))
    }

    fn owner(&self) -> Result<OwnerReference, BuildError> {
        self.cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))
    }

    pub(crate) fn meta(&self, name: String) -> Result<ObjectMeta, BuildError> {
        Ok(ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace()?),
            labels: Some(names::common_labels(&self.name())),
            owner_references: Some(vec![self.owner()?]),
            ..ObjectMeta::default()
        })
    }

    /// DNS name of the peer Service (gossip seed, node advertise hosts).
    fn peers_dns(&self) -> Result<String, BuildError> {
        Ok(names::peers_dns(
            &self.name(),
            &self.namespace()?,
            self.cluster_domain,
        ))
    }
}

/// What the planner decides for one zone's StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneScale {
    pub replicas: i32,
    /// Pods with an ordinal >= partition run the newest template.
    pub partition: i32,
    /// Size of the volume claim template when it must stay what the live
    /// StatefulSet has (the template is immutable; a size change goes through
    /// an expansion); `None` = `spec.storage.size`.
    pub volume_size: Option<String>,
}

impl ZoneScale {
    pub fn new(replicas: i32, partition: i32) -> Self {
        Self {
            replicas,
            partition,
            volume_size: None,
        }
    }
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
pub(crate) mod testutil {
    use super::*;
    use crate::crd::KVClusterSpec;

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

    pub(crate) fn ctx(c: &KVCluster) -> BuildContext<'_> {
        BuildContext::new(c, "ringkv:default", names::DEFAULT_CLUSTER_DOMAIN)
    }

    pub(crate) fn assert_owned(meta: &ObjectMeta, name: &str) {
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
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

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
            statefulset(&ctx(&c), 3, &ZoneScale::new(1, 0)).unwrap_err(),
            BuildError::NoSuchZone(3)
        );
    }

    #[test]
    fn applied_objects_carry_api_version_and_kind() {
        // Server-side apply needs both in the body.
        let c = cluster();
        let ctx = ctx(&c);
        let scale = ZoneScale::new(1, 0);
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
                serde_json::to_value(statefulset(&ctx, 0, &scale).unwrap()).unwrap(),
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
    fn fnv_is_stable() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
