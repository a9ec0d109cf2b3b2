//! Prometheus metrics of the operator, served on `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabels {
    /// `status`, `decommission` or `repair`.
    pub call: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

/// One cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// Ring members of a cluster in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub namespace: String,
    pub cluster: String,
    /// `joining`, `normal`, `leaving` or `left`.
    pub state: String,
}

/// One zone of a cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub namespace: String,
    pub cluster: String,
    pub zone: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Ring states exported per cluster (always all of them, so a state that
/// drops to zero reads 0 rather than disappearing).
const STATES: [&str; 5] = ["joining", "normal", "leaving", "left", "repairing"];

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub admin_calls: Family<AdminLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
    /// Per-cluster gauges (updated at the end of every reconcile).
    pub nodes: Family<StateLabels, Gauge>,
    pub nodes_desired: Family<ClusterLabels, Gauge>,
    pub nodes_ready: Family<ClusterLabels, Gauge>,
    pub nodes_down: Family<ClusterLabels, Gauge>,
    pub degraded: Family<ClusterLabels, Gauge>,
    pub last_repair: Family<ZoneLabels, Gauge>,
    pub repair_overdue: Family<ZoneLabels, Gauge>,
    pub decommission_progress: Family<ClusterLabels, FloatGauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ringkv_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let admin_calls = Family::<AdminLabels, Counter>::default();
        let steps = Family::<StepLabels, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconciles",
            "Reconciliations by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "admin_calls",
            "Node Admin API calls by call and result",
            admin_calls.clone(),
        );
        registry.register(
            "steps",
            "Ring-changing steps taken (scale up, decommission, restart, repair)",
            steps.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register(
            "cluster_nodes",
            "Ring members of a cluster by state, as its nodes report them",
            nodes.clone(),
        );
        let nodes_desired = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_nodes_desired",
            "Nodes a cluster's spec asks for",
            nodes_desired.clone(),
        );
        let nodes_ready = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_nodes_ready",
            "Node pods passing readiness",
            nodes_ready.clone(),
        );
        let nodes_down = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_nodes_down",
            "Ring members (not left) that are down, or node pods that do not answer",
            nodes_down.clone(),
        );
        let degraded = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_degraded",
            "1 while the cluster's Degraded condition is True",
            degraded.clone(),
        );
        let last_repair = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "cluster_last_repair_timestamp_seconds",
            "Unix time every node of a zone last completed anti-entropy (absent until the first repair)",
            last_repair.clone(),
        );
        let repair_overdue = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "cluster_repair_overdue_seconds",
            "How long a zone's scheduled repair is past due (0 when on time or repair is off)",
            repair_overdue.clone(),
        );
        let decommission_progress = Family::<ClusterLabels, FloatGauge>::default();
        registry.register(
            "cluster_decommission_progress_ratio",
            "Ranges streamed / ranges to stream of the decommission in progress (absent when none)",
            decommission_progress.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            admin_calls,
            steps,
            leader,
            nodes,
            nodes_desired,
            nodes_ready,
            nodes_down,
            degraded,
            last_repair,
            repair_overdue,
            decommission_progress,
        }
    }
}

impl Metrics {
    /// Updates the gauges of one cluster from its new status.
    pub fn record_cluster(
        &self,
        namespace: &str,
        cluster: &str,
        spec: &crate::crd::KVClusterSpec,
        status: &crate::crd::KVClusterStatus,
        obs: &crate::observe::Observed,
    ) {
        let c = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        for state in STATES {
            let n = status.members.iter().filter(|m| m.state == state).count();
            self.nodes
                .get_or_create(&StateLabels {
                    namespace: namespace.into(),
                    cluster: cluster.into(),
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.nodes_desired
            .get_or_create(&c)
            .set(i64::from(spec.replicas));
        self.nodes_ready
            .get_or_create(&c)
            .set(i64::from(status.ready_replicas));
        let members_down = status
            .members
            .iter()
            .filter(|m| !m.alive && m.state != "left")
            .count();
        let unanswered = obs.nodes.values().filter(|n| n.report().is_none()).count();
        self.nodes_down
            .get_or_create(&c)
            .set(i64::try_from(members_down.max(unanswered)).unwrap_or(i64::MAX));
        let degraded = status
            .conditions
            .iter()
            .any(|x| x.type_ == "Degraded" && x.status == "True");
        self.degraded.get_or_create(&c).set(i64::from(degraded));
        let interval_s = spec
            .repair_interval()
            .ok()
            .flatten()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let now_s = obs.now_unix_ms / 1000;
        for z in &status.zones {
            let l = ZoneLabels {
                namespace: namespace.into(),
                cluster: cluster.into(),
                zone: z.name.clone(),
            };
            let last_s = z
                .last_repair_time
                .as_ref()
                .map(|t| crate::time::to_unix_ms(t) / 1000);
            if let Some(t) = last_s {
                self.last_repair.get_or_create(&l).set(t);
            }
            let since = last_s.unwrap_or(obs.created_unix_ms / 1000);
            let overdue = interval_s.map_or(0, |i| (now_s - since.saturating_add(i)).max(0));
            self.repair_overdue.get_or_create(&l).set(overdue);
        }
        match &status.decommission {
            Some(d) if d.ranges_total > 0 => {
                #[allow(clippy::cast_precision_loss)]
                let ratio = d.ranges_done as f64 / d.ranges_total as f64;
                self.decommission_progress.get_or_create(&c).set(ratio);
            }
            Some(_) => {
                self.decommission_progress.get_or_create(&c).set(0.0);
            }
            None => {
                self.decommission_progress.remove(&c);
            }
        }
    }

    /// Drops every series of a deleted cluster (with these zones).
    pub fn forget_cluster(&self, namespace: &str, cluster: &str, zones: &[String]) {
        let c = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        for state in STATES {
            self.nodes.remove(&StateLabels {
                namespace: namespace.into(),
                cluster: cluster.into(),
                state: state.into(),
            });
        }
        self.nodes_desired.remove(&c);
        self.nodes_ready.remove(&c);
        self.nodes_down.remove(&c);
        self.degraded.remove(&c);
        self.decommission_progress.remove(&c);
        for zone in zones {
            let l = ZoneLabels {
                namespace: namespace.into(),
                cluster: cluster.into(),
                zone: zone.clone(),
            };
            self.last_repair.remove(&l);
            self.repair_overdue.remove(&l);
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reconcile_counters() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        m.errors.get_or_create(&ErrorLabels { kind: "kube" }).inc();
        m.duration.observe(0.02);
        let text = m.encode();
        assert!(
            text.contains("ringkv_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("ringkv_operator_reconcile_errors_total{kind=\"kube\"} 1"));
        assert!(text.contains("ringkv_operator_reconcile_duration_seconds_count 1"));
        assert!(text.contains("ringkv_operator_leader 0"));
    }

    #[test]
    fn a_fresh_registry_exposes_plain_metrics_and_labelled_ones_once_set() {
        // Labelled families appear with their first series (alerts on them
        // treat absence as zero); plain metrics are always there.
        let m = Metrics::default();
        let text = m.encode();
        for family in [
            "ringkv_operator_leader",
            "ringkv_operator_reconcile_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} in\n{text}"
            );
        }
        assert!(!text.contains("ringkv_operator_reconciles"));
        m.reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        assert!(
            m.encode()
                .contains("# TYPE ringkv_operator_reconciles counter")
        );
    }

    #[test]
    fn cluster_gauges_follow_the_status_and_go_with_the_cluster() {
        use crate::crd::{DecommissionProgress, KVClusterStatus, MemberStatus, ZoneStatus};
        let m = Metrics::default();
        let spec: crate::crd::KVClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3, "zones": [{"name": "a", "nodeLabelValue": "a"}], "repair": {"interval": "1h"}
        }))
        .unwrap();
        let member = |id: &str, state: &str, alive| MemberStatus {
            node_id: id.into(),
            zone: "a".into(),
            state: state.into(),
            alive,
        };
        let status = KVClusterStatus {
            ready_replicas: 2,
            members: vec![
                member("n0", "normal", true),
                member("n1", "normal", false),
                member("n2", "leaving", true),
                member("n3", "left", false),
            ],
            zones: vec![ZoneStatus {
                name: "a".into(),
                last_repair_time: Some(crate::time::from_unix_ms(1_000_000)),
                ..Default::default()
            }],
            decommission: Some(DecommissionProgress {
                node: "n2".into(),
                zone: "a".into(),
                phase: "Streaming".into(),
                ranges_done: 1,
                ranges_total: 4,
                keys_streamed: 0,
                started_at: None,
                message: None,
            }),
            ..Default::default()
        };
        let obs = crate::observe::Observed {
            now_unix_ms: 1_000_000 + 2 * 3_600_000,
            ..Default::default()
        };
        m.record_cluster("db", "kv", &spec, &status, &obs);
        let text = m.encode();
        for line in [
            r#"ringkv_operator_cluster_nodes{namespace="db",cluster="kv",state="normal"} 2"#,
            r#"ringkv_operator_cluster_nodes{namespace="db",cluster="kv",state="joining"} 0"#,
            r#"ringkv_operator_cluster_nodes_down{namespace="db",cluster="kv"} 1"#,
            r#"ringkv_operator_cluster_nodes_ready{namespace="db",cluster="kv"} 2"#,
            r#"ringkv_operator_cluster_last_repair_timestamp_seconds{namespace="db",cluster="kv",zone="a"} 1000"#,
            r#"ringkv_operator_cluster_repair_overdue_seconds{namespace="db",cluster="kv",zone="a"} 3600"#,
            r#"ringkv_operator_cluster_decommission_progress_ratio{namespace="db",cluster="kv"} 0.25"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.forget_cluster("db", "kv", &["a".to_string()]);
        let text = m.encode();
        assert!(!text.contains(r#"cluster="kv""#), "{text}");
    }
}
