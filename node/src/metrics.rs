//! Prometheus metrics of a node, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get | put | delete
    pub op: &'static str,
    /// one | quorum | all | <n> | default
    pub consistency: String,
    /// ok | not_found | invalid | quorum_failed | unavailable | error
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
    pub consistency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OnlyOp {
    pub op: &'static str,
}

type HistogramCtor = fn() -> Histogram;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<OpLabels, Histogram, HistogramCtor>,
    pub quorum_failures: Family<OnlyOp, Counter>,
    pub read_repairs: Counter,
    pub forwarded_writes: Counter,
    pub internode_errors: Counter,
    pub members_alive: Gauge,
    pub members_total: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50µs .. ~6.5s
    Histogram::new(exponential_buckets(0.00005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ringkv");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OpLabels, Histogram, HistogramCtor>::new_with_constructor(
            latency_histogram as HistogramCtor,
        );
        let quorum_failures = Family::<OnlyOp, Counter>::default();
        let read_repairs = Counter::default();
        let forwarded_writes = Counter::default();
        let internode_errors = Counter::default();
        let members_alive = Gauge::default();
        let members_total = Gauge::default();
        registry.register(
            "requests",
            "Client requests by operation, consistency and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Client request latency by operation and consistency",
            latency.clone(),
        );
        registry.register(
            "quorum_failures",
            "Requests that did not reach their quorum in time",
            quorum_failures.clone(),
        );
        registry.register(
            "read_repairs",
            "Stale replicas repaired after a read",
            read_repairs.clone(),
        );
        registry.register(
            "forwarded_writes",
            "Writes forwarded to a replica to coordinate",
            forwarded_writes.clone(),
        );
        registry.register(
            "internode_errors",
            "Failed internode calls",
            internode_errors.clone(),
        );
        registry.register(
            "members_alive",
            "Members this node hears from (itself included)",
            members_alive.clone(),
        );
        registry.register(
            "members",
            "Members this node knows of (itself included)",
            members_total.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            quorum_failures,
            read_repairs,
            forwarded_writes,
            internode_errors,
            members_alive,
            members_total,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
