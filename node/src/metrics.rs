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
    /// one | quorum | all | 0..9 | 10+ | default | invalid (a closed set)
    pub consistency: &'static str,
    /// ok | not_found | invalid | quorum_failed | unavailable | error
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
    pub consistency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Closed label set of `auth_refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// grpc | http | admin | internode
    pub api: &'static str,
    /// missing_token | unknown_token | forbidden | no_client_cert
    pub reason: &'static str,
}

/// Closed label set of `tls_handshakes_failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// internode | grpc | http
    pub listener: &'static str,
    /// refused | timeout
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    pub level: &'static str,
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
    pub speculative_reads: Counter,
    pub sloppy_reads: Counter,
    pub forwarded_writes: Counter,
    pub late_forwards_refused: Counter,
    pub internode_errors: Counter,
    pub peers_suspected: Counter,
    pub members_alive: Gauge,
    pub members_total: Gauge,
    pub sloppy_writes: Counter,
    pub hints_stored: Counter,
    pub hints_delivered: Counter,
    pub hints_dropped: Counter,
    pub hints_pending: Gauge,
    pub hint_delivery_failures: Counter,
    pub repair_running: Gauge,
    pub repair_ranges: Counter,
    pub repair_keys_streamed: Counter,
    pub repair_bytes_streamed: Counter,
    pub repair_digest_bytes: Counter,
    pub repair_last_completed_seconds: Gauge,
    pub stream_keys: Counter,
    pub stream_bytes: Counter,
    pub clock_skew_refused: Counter,
    pub undecodable_records: Counter,
    pub gossip_dropped: Family<ReasonLabel, Counter>,
    pub gossip_accepted: Counter,
    pub gossip_implausible: Gauge,
    /// Snapshots, backups and restores (node/src/backup).
    pub backup: crate::backup::BackupMetrics,
    /// Requests refused by authentication/authorization (`security::auth`).
    pub auth_refused: Family<AuthLabels, Counter>,
    /// TLS handshakes that failed (no or a foreign client certificate,
    /// garbage, timeout).
    pub tls_handshakes_failed: Family<HandshakeLabels, Counter>,
    engine: EngineMetrics,
}

/// The storage engine's state, refreshed from `Db::stats` at each scrape.
#[derive(Debug, Default)]
struct EngineMetrics {
    level_files: Family<LevelLabel, Gauge>,
    compaction_pending_bytes: Gauge,
    memtable_bytes: Gauge,
    block_cache_bytes: Gauge,
    write_groups: Counter,
    write_stalls: Counter,
    bytes_written: Counter,
    no_space: Gauge,
    /// Engine totals already added to the counters above.
    seen: parking_lot::Mutex<(u64, u64, u64)>,
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
        let late_forwards_refused = Counter::default();
        registry.register(
            "late_forwards_refused",
            "Forwarded writes that arrived after their sender's deadline (not applied)",
            late_forwards_refused.clone(),
        );
        let speculative_reads = Counter::default();
        registry.register(
            "speculative_reads",
            "Reads that asked more replicas because the first R were slow",
            speculative_reads.clone(),
        );
        let sloppy_reads = Counter::default();
        registry.register(
            "sloppy_reads",
            "Reads that asked substitutes (holding hints) in place of home replicas that were down",
            sloppy_reads.clone(),
        );
        let internode_errors = Counter::default();
        let peers_suspected = Counter::default();
        registry.register(
            "peers_suspected",
            "Times a peer's requests kept failing and requests were routed around it (circuit breaker)",
            peers_suspected.clone(),
        );
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
        let sloppy_writes = Counter::default();
        registry.register(
            "sloppy_writes",
            "Writes coordinated by a non-replica because no replica was reachable",
            sloppy_writes.clone(),
        );
        let clock_skew_refused = Counter::default();
        registry.register(
            "clock_skew_refused",
            "LWW records refused because their clock ran more than max_clock_skew ahead",
            clock_skew_refused.clone(),
        );
        let hints_stored = Counter::default();
        registry.register(
            "hints_stored",
            "Hints stored on this node (as coordinator or substitute)",
            hints_stored.clone(),
        );
        let hints_delivered = Counter::default();
        registry.register(
            "hints_delivered",
            "Hints handed off to their owner",
            hints_delivered.clone(),
        );
        let hints_dropped = Counter::default();
        registry.register(
            "hints_dropped",
            "Hints dropped (older than max_hint_window, or owner left)",
            hints_dropped.clone(),
        );
        let hints_pending = Gauge::default();
        registry.register(
            "hints_pending",
            "Hints held on this node",
            hints_pending.clone(),
        );
        let hint_delivery_failures = Counter::default();
        registry.register(
            "hint_delivery_failures",
            "Hint batches that could not be handed off (retried every tick)",
            hint_delivery_failures.clone(),
        );
        let repair_running = Gauge::default();
        registry.register(
            "repair_running",
            "1 while an anti-entropy repair runs",
            repair_running.clone(),
        );
        let repair_ranges = Counter::default();
        registry.register(
            "repair_ranges",
            "Token ranges compared by anti-entropy",
            repair_ranges.clone(),
        );
        let repair_keys_streamed = Counter::default();
        registry.register(
            "repair_keys_streamed",
            "Keys sent or received by anti-entropy",
            repair_keys_streamed.clone(),
        );
        let repair_bytes_streamed = Counter::default();
        registry.register(
            "repair_bytes_streamed",
            "Record bytes sent or received by anti-entropy",
            repair_bytes_streamed.clone(),
        );
        let repair_digest_bytes = Counter::default();
        registry.register(
            "repair_digest_bytes",
            "Merkle hash and key-digest bytes exchanged by anti-entropy",
            repair_digest_bytes.clone(),
        );
        let repair_last_completed_seconds = Gauge::default();
        registry.register(
            "repair_last_completed_seconds",
            "Unix time of the last repair that completed every range",
            repair_last_completed_seconds.clone(),
        );
        let stream_keys = Counter::default();
        registry.register(
            "stream_keys",
            "Keys streamed for join and decommission",
            stream_keys.clone(),
        );
        let stream_bytes = Counter::default();
        registry.register(
            "stream_bytes",
            "Record bytes streamed for join and decommission",
            stream_bytes.clone(),
        );
        let undecodable_records = Counter::default();
        registry.register(
            "undecodable_records",
            "Stored records that did not decode: skipped by reads, repair and streaming (see the log)",
            undecodable_records.clone(),
        );
        let gossip_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "gossip_dropped",
            "Gossip datagrams dropped before decoding, by reason",
            gossip_dropped.clone(),
        );
        let auth_refused = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests refused by authentication or authorization, by API and reason",
            auth_refused.clone(),
        );
        let tls_handshakes_failed = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes refused or timed out, by listener",
            tls_handshakes_failed.clone(),
        );
        let gossip_accepted = Counter::default();
        registry.register(
            "gossip_accepted",
            "Gossip datagrams that passed every check and were decoded",
            gossip_accepted.clone(),
        );
        let gossip_implausible = Gauge::default();
        registry.register(
            "gossip_implausible_incarnations",
            "Incarnations gossip names with a start time too far in the future (ignored)",
            gossip_implausible.clone(),
        );
        let engine = EngineMetrics::default();
        registry.register(
            "engine_level_files",
            "SSTables per level of the storage engine",
            engine.level_files.clone(),
        );
        registry.register(
            "engine_compaction_pending_bytes",
            "Bytes above the levels' size targets: compaction backlog",
            engine.compaction_pending_bytes.clone(),
        );
        registry.register(
            "engine_memtable_bytes",
            "Bytes in memtables (active and waiting to flush)",
            engine.memtable_bytes.clone(),
        );
        registry.register(
            "engine_block_cache_bytes",
            "Bytes held by the block cache",
            engine.block_cache_bytes.clone(),
        );
        registry.register(
            "engine_write_groups",
            "WAL records written (one fsync each under sync=always); writes / groups is the group-commit batch size",
            engine.write_groups.clone(),
        );
        registry.register(
            "engine_write_stalls",
            "Times writes waited for flush or compaction to catch up",
            engine.write_stalls.clone(),
        );
        registry.register(
            "engine_bytes_written",
            "Bytes the engine wrote to disk (WAL, flushes, compactions, manifest)",
            engine.bytes_written.clone(),
        );
        registry.register(
            "engine_no_space",
            "1 while the storage engine refuses writes for lack of disk space (it takes them again by itself once space is freed)",
            engine.no_space.clone(),
        );
        let backup = crate::backup::BackupMetrics::default();
        backup.register(&mut registry);
        Metrics {
            engine,
            backup,
            registry,
            requests,
            latency,
            quorum_failures,
            read_repairs,
            speculative_reads,
            sloppy_reads,
            forwarded_writes,
            late_forwards_refused,
            internode_errors,
            peers_suspected,
            members_alive,
            members_total,
            sloppy_writes,
            hints_stored,
            hints_delivered,
            hints_dropped,
            hints_pending,
            hint_delivery_failures,
            repair_running,
            repair_ranges,
            repair_keys_streamed,
            repair_bytes_streamed,
            repair_digest_bytes,
            repair_last_completed_seconds,
            stream_keys,
            stream_bytes,
            clock_skew_refused,
            undecodable_records,
            gossip_dropped,
            gossip_accepted,
            gossip_implausible,
            auth_refused,
            tls_handshakes_failed,
        }
    }

    /// Refreshes the engine metrics from its counters.
    pub fn observe_engine(&self, st: &ringkv_engine::Stats) {
        const LEVELS: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];
        let e = &self.engine;
        for (i, files) in st.level_files.iter().enumerate() {
            if let Some(level) = LEVELS.get(i) {
                e.level_files
                    .get_or_create(&LevelLabel { level })
                    .set(*files as i64);
            }
        }
        e.compaction_pending_bytes
            .set(st.compaction_pending_bytes as i64);
        e.memtable_bytes.set(st.memtable_bytes as i64);
        e.block_cache_bytes.set(st.block_cache_bytes as i64);
        e.no_space.set(i64::from(st.no_space));
        let written = st.wal_bytes_written
            + st.flush_bytes_written
            + st.compaction_bytes_written
            + st.manifest_bytes_written;
        let mut seen = e.seen.lock();
        e.write_groups
            .inc_by(st.write_groups.saturating_sub(seen.0));
        e.write_stalls
            .inc_by(st.write_stalls.saturating_sub(seen.1));
        e.bytes_written.inc_by(written.saturating_sub(seen.2));
        *seen = (
            seen.0.max(st.write_groups),
            seen.1.max(st.write_stalls),
            seen.2.max(written),
        );
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The value of the unlabelled sample `name` in this registry.
    pub fn value(&self, name: &str) -> Option<u64> {
        sample(&self.encode(), name)
    }
}

/// The value of the unlabelled sample `name` in a text exposition (a
/// `/metrics` body); `None` when absent or not an integer.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reads_only_the_unlabelled_series_of_that_exact_name() {
        let text = "# TYPE a_total counter\na_total_bytes 9\na_total{x=\"y\"} 4\na_total 7\n";
        assert_eq!(sample(text, "a_total"), Some(7));
        assert_eq!(sample(text, "a_total_bytes"), Some(9));
        assert_eq!(sample(text, "a"), None);
        assert_eq!(sample("a_total 1.5\n", "a_total"), None);
    }

    #[test]
    fn engine_totals_become_counters_that_only_grow() {
        let m = Metrics::new();
        let mut st = ringkv_engine::Stats {
            level_files: vec![3, 1],
            write_groups: 10,
            compaction_pending_bytes: 5,
            ..Default::default()
        };
        m.observe_engine(&st);
        st.write_groups = 25;
        m.observe_engine(&st);
        m.observe_engine(&st);
        let text = m.encode();
        assert!(
            text.contains("ringkv_engine_write_groups_total 25"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_engine_level_files{level=\"0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_engine_compaction_pending_bytes 5"),
            "{text}"
        );
        assert!(text.contains("ringkv_engine_no_space 0"), "{text}");
        st.no_space = true;
        m.observe_engine(&st);
        assert!(m.encode().contains("ringkv_engine_no_space 1"));
    }
}
