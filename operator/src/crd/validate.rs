//! The Rust twin of the CRD's validation: every CEL rule and schema
//! constraint the operator relies on, checked again before anything is applied.

use std::time::Duration;

use super::{
    KVClusterSpec, KVClusterStatus, MAX_STATEFULSET_NAME, MAX_ZONES, PEER_SUFFIX, Replication,
};

/// Why a spec cannot be reconciled. Each variant mirrors a CEL rule or schema
/// constraint so the operator refuses what the API server should have refused
/// (or, for name collisions between clusters, what no per-object rule can see).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    #[error("cluster name {0:?} ends in -peers, which is reserved for peer Services")]
    ReservedName(String),
    #[error(
        "replication.n cannot change after creation (created with {created}, spec says {requested})"
    )]
    ReplicationFactorChanged { created: i32, requested: i32 },
    #[error("storage.size cannot shrink (the volumes have {from}, spec says {to})")]
    StorageShrunk { from: String, to: String },
    #[error(
        "storage.storageClassName cannot change after creation (the volumes use {from:?}, spec says {to:?})"
    )]
    StorageClassChanged {
        from: Option<String>,
        to: Option<String>,
    },
    #[error(
        "{kind} {name} would also belong to KVCluster {other} (created earlier): rename this cluster or zone"
    )]
    NameCollision {
        kind: &'static str,
        name: String,
        other: String,
    },
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
        if let Err(e) = self.progress_deadline() {
            errs.push(e);
        }
        if cluster_name.ends_with(PEER_SUFFIX) {
            errs.push(SpecError::ReservedName(cluster_name.to_string()));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// How long a step may take before the cluster is reported Degraded.
    pub fn progress_deadline(&self) -> Result<Duration, SpecError> {
        parse_duration("progressDeadline", &self.progress_deadline)
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
        if let Some(created) = status.replication_factor
            && created != self.replication.n
        {
            errs.push(SpecError::ReplicationFactorChanged {
                created,
                requested: self.replication.n,
            });
        }
        for z in &status.zones {
            if !self.zones.iter().any(|s| s.name == z.name) {
                errs.push(SpecError::ZoneRemoved(z.name.clone()));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The storage transition rules (CEL on `storage`) against what a live
    /// StatefulSet's volume claim template says: `size` and `class` of the
    /// volumes the cluster runs on.
    pub fn validate_storage(&self, size: &str, class: Option<&str>) -> Vec<SpecError> {
        let mut errs = Vec::new();
        if let (Some(live), Some(want)) = (quantity_bytes(size), quantity_bytes(&self.storage.size))
            && want < live
        {
            errs.push(SpecError::StorageShrunk {
                from: size.to_string(),
                to: self.storage.size.clone(),
            });
        }
        if class != self.storage.storage_class_name.as_deref() {
            errs.push(SpecError::StorageClassChanged {
                from: class.map(str::to_string),
                to: self.storage.storage_class_name.clone(),
            });
        }
        errs
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

/// Objects of `me` whose names another KVCluster of the namespace already
/// claims (`kv` with zone `a-b` and `kv-a` with zone `b` both want StatefulSet
/// `kv-a-b`). The older cluster keeps its names; the younger one (by creation
/// time, then name) is refused. `others` may include `me`; it is skipped.
pub fn name_collisions(me: &super::KVCluster, others: &[super::KVCluster]) -> Vec<SpecError> {
    use kube::ResourceExt;
    let key = |k: &super::KVCluster| {
        (
            k.metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MAX, crate::time::to_unix_ms),
            k.name_any(),
        )
    };
    let mine = crate::names::owned_objects(&me.name_any(), &me.spec.zones);
    let mut errs = Vec::new();
    for other in others {
        if other.name_any() == me.name_any() || key(other) > key(me) {
            continue;
        }
        let theirs = crate::names::owned_objects(&other.name_any(), &other.spec.zones);
        for (kind, name) in &mine {
            if theirs.iter().any(|(k, n)| k == kind && n == name) {
                errs.push(SpecError::NameCollision {
                    kind,
                    name: name.clone(),
                    other: other.name_any(),
                });
            }
        }
    }
    errs
}

/// A quantity (`10Gi`, `1.5Ti`, `500M`) in bytes, for comparing sizes.
pub fn quantity_bytes(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    if !is_quantity(s) {
        return None;
    }
    let (num, mult) = SUFFIXES
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    num.parse::<f64>().ok().map(|v| v * mult)
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
    use crate::crd::{
        ConflictMode, DEFAULT_ZONE_LABEL, KVCluster, PullPolicy, ReclaimPolicy, ServiceType,
        ZoneStatus,
    };

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
    fn reserved_names_durations_and_recorded_n() {
        let s = spec();
        assert_eq!(
            s.validate("kv-peers").unwrap_err(),
            vec![SpecError::ReservedName("kv-peers".into())]
        );
        let mut bad = spec();
        bad.progress_deadline = "soon".into();
        assert!(matches!(
            bad.validate("kv").unwrap_err()[0],
            SpecError::BadDuration {
                field: "progressDeadline",
                ..
            }
        ));
        let st = KVClusterStatus {
            replication_factor: Some(5),
            ..Default::default()
        };
        assert_eq!(
            s.validate_against(&st).unwrap_err(),
            vec![SpecError::ReplicationFactorChanged {
                created: 5,
                requested: 3
            }]
        );
    }

    #[test]
    fn storage_may_grow_but_not_shrink_or_change_class() {
        let mut s = spec();
        assert!(s.validate_storage("10Gi", None).is_empty());
        s.storage.size = "10240Mi".into();
        assert!(s.validate_storage("10Gi", None).is_empty(), "same size");
        s.storage.size = "1Ti".into();
        assert!(s.validate_storage("10Gi", None).is_empty());
        s.storage.size = "5G".into();
        assert_eq!(
            s.validate_storage("10Gi", None),
            vec![SpecError::StorageShrunk {
                from: "10Gi".into(),
                to: "5G".into()
            }]
        );
        let mut s = spec();
        s.storage.storage_class_name = Some("fast".into());
        assert_eq!(
            s.validate_storage("10Gi", Some("standard")),
            vec![SpecError::StorageClassChanged {
                from: Some("standard".into()),
                to: Some("fast".into())
            }]
        );
        assert_eq!(quantity_bytes("1Ki"), Some(1024.0));
        assert_eq!(quantity_bytes("1.5k"), Some(1500.0));
        assert_eq!(quantity_bytes("ten"), None);
    }

    #[test]
    fn the_younger_of_two_clusters_with_a_shared_name_is_refused() {
        let with = |name: &str, zone: &str, created: &str| {
            let mut s = spec();
            s.zones = vec![crate::crd::ZoneSpec {
                name: zone.into(),
                node_label_value: zone.into(),
            }];
            let mut k = KVCluster::new(name, s);
            k.metadata.creation_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()),
            );
            k
        };
        let old = with("kv", "a-b", "2024-01-01T00:00:00Z");
        let young = with("kv-a", "b", "2024-02-01T00:00:00Z");
        let all = [old.clone(), young.clone()];
        assert_eq!(name_collisions(&old, &all), vec![]);
        assert_eq!(
            name_collisions(&young, &all),
            vec![SpecError::NameCollision {
                kind: "StatefulSet",
                name: "kv-a-b".into(),
                other: "kv".into()
            }]
        );
        let unrelated = with("other", "a-b", "2023-01-01T00:00:00Z");
        assert_eq!(name_collisions(&young, &[unrelated]), vec![]);
    }

    #[test]
    fn replication_summary_is_n_w_r() {
        assert_eq!(spec().replication_summary(), "3/2/2");
    }
}
