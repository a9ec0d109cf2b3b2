//! Prometheus metrics of the operator, served on `/metrics`.

use std::sync::atomic::AtomicI64;

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

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub admin_calls: Family<AdminLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
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
        Self {
            registry,
            reconciles,
            errors,
            duration,
            admin_calls,
            steps,
            leader,
        }
    }
}

impl Metrics {
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
}
