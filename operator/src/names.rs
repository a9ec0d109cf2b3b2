//! Names and labels of everything the operator creates. One place, so the
//! builders, the planner and the admin connector agree.

use std::collections::BTreeMap;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_ZONE: &str = "ringkv.io/zone";
/// Label the StatefulSet controller puts on each pod: its template revision.
pub const LABEL_REVISION: &str = "controller-revision-hash";
/// Name of the volume claim template (PVCs are `data-<statefulset>-<ordinal>`).
pub const VOLUME: &str = "data";
/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const APP: &str = "ringkv";
pub const MANAGER: &str = "ringkv-operator";

/// StatefulSet of one zone: `<cluster>-<zone>`.
pub fn statefulset(cluster: &str, zone: &str) -> String {
    format!("{cluster}-{zone}")
}

/// Pod (and node id) `ordinal` of a zone.
pub fn pod(cluster: &str, zone: &str, ordinal: i32) -> String {
    format!("{cluster}-{zone}-{ordinal}")
}

/// Headless Service that gives every pod a stable DNS name and serves as the gossip seed.
pub fn peer_service(cluster: &str) -> String {
    format!("{cluster}-peers")
}

/// Service applications connect to.
pub fn client_service(cluster: &str) -> String {
    cluster.to_string()
}

/// Node configuration, versioned by its content (`<cluster>-config-<hash>`): a
/// pod that restarts mid-rollout keeps the configuration of its own template.
pub fn config_map(cluster: &str, hash: &str) -> String {
    format!("{}{hash}", config_map_prefix(cluster))
}

/// Prefix of every versioned ConfigMap of a cluster.
pub fn config_map_prefix(cluster: &str) -> String {
    format!("{cluster}-config-")
}

/// PersistentVolumeClaim of pod `ordinal` of a zone.
pub fn pvc(cluster: &str, zone: &str, ordinal: i32) -> String {
    format!("{VOLUME}-{}", pod(cluster, zone, ordinal))
}

pub fn service_account(cluster: &str) -> String {
    format!("{cluster}-node")
}

pub fn pdb(cluster: &str) -> String {
    cluster.to_string()
}

/// DNS name of the peer Service.
pub fn peers_dns(cluster: &str, namespace: &str, domain: &str) -> String {
    format!("{}.{namespace}.svc.{domain}", peer_service(cluster))
}

/// Stable DNS name of a pod through the peer Service (the node's advertise host).
pub fn pod_dns(cluster: &str, namespace: &str, pod: &str, domain: &str) -> String {
    format!("{pod}.{}", peers_dns(cluster, namespace, domain))
}

/// (kind, name) of every object a cluster owns whose name another cluster
/// could also derive (ConfigMaps and the ServiceAccount carry fixed suffixes).
pub fn owned_objects(cluster: &str, zones: &[crate::crd::ZoneSpec]) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("Service", client_service(cluster)),
        ("Service", peer_service(cluster)),
        ("PodDisruptionBudget", pdb(cluster)),
        ("ServiceAccount", service_account(cluster)),
    ];
    v.extend(
        zones
            .iter()
            .map(|z| ("StatefulSet", statefulset(cluster, &z.name))),
    );
    v
}

/// Labels selecting every node pod of a cluster.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
    ])
}

/// Selector labels plus the zone: selects one StatefulSet's pods.
pub fn zone_selector_labels(cluster: &str, zone: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(LABEL_ZONE.to_string(), zone.to_string());
    l
}

/// Labels on every object the operator owns.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(LABEL_MANAGED_BY.to_string(), MANAGER.to_string());
    l
}

/// The selector as a string, for the scale subresource (`status.selector`).
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        assert_eq!(statefulset("kv", "zone-a"), "kv-zone-a");
        assert_eq!(pod("kv", "zone-a", 2), "kv-zone-a-2");
        assert_eq!(peer_service("kv"), "kv-peers");
        assert_eq!(
            pod_dns("kv", "db", "kv-zone-a-0", DEFAULT_CLUSTER_DOMAIN),
            "kv-zone-a-0.kv-peers.db.svc.cluster.local"
        );
        assert_eq!(
            peers_dns("kv", "db", "corp.example"),
            "kv-peers.db.svc.corp.example"
        );
        assert_eq!(pvc("kv", "zone-a", 1), "data-kv-zone-a-1");
        assert_eq!(config_map("kv", "0123"), "kv-config-0123");
        assert_eq!(
            selector_string("kv"),
            "app.kubernetes.io/instance=kv,app.kubernetes.io/name=ringkv"
        );
        assert_eq!(zone_selector_labels("kv", "z")[LABEL_ZONE], "z");
    }

    #[test]
    fn clusters_whose_names_nest_derive_the_same_statefulset() {
        let zone = |n: &str| crate::crd::ZoneSpec {
            name: n.into(),
            node_label_value: n.into(),
        };
        let a = owned_objects("kv", &[zone("a-b")]);
        let b = owned_objects("kv-a", &[zone("b")]);
        assert!(a.iter().any(|o| b.contains(o)));
        // A cluster named like another's peer Service collides through that Service.
        let c = owned_objects("kv-peers", &[zone("x")]);
        assert!(
            owned_objects("kv", &[zone("y")])
                .iter()
                .any(|o| c.contains(o))
        );
    }
}
