//! Names and labels of everything the operator creates. One place, so the
//! builders, the planner and the admin connector agree.

use std::collections::BTreeMap;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_ZONE: &str = "ringkv.io/zone";
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

pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}

pub fn service_account(cluster: &str) -> String {
    format!("{cluster}-node")
}

pub fn pdb(cluster: &str) -> String {
    cluster.to_string()
}

/// Stable DNS name of a pod through the peer Service (the node's advertise host).
pub fn pod_dns(cluster: &str, namespace: &str, pod: &str) -> String {
    format!(
        "{pod}.{}.{namespace}.svc.cluster.local",
        peer_service(cluster)
    )
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
            pod_dns("kv", "db", "kv-zone-a-0"),
            "kv-zone-a-0.kv-peers.db.svc.cluster.local"
        );
        assert_eq!(
            selector_string("kv"),
            "app.kubernetes.io/instance=kv,app.kubernetes.io/name=ringkv"
        );
        assert_eq!(zone_selector_labels("kv", "z")[LABEL_ZONE], "z");
    }
}
