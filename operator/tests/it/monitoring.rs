//! The chart's alert rules and Grafana dashboard only use operator metrics
//! that exist (node metrics are checked against a real node by
//! e2e/tests/operator_local/main.rs; the PromQL is parsed by .ci/operator-checks.sh).

use std::collections::BTreeSet;
use std::path::PathBuf;

use ringkv_operator::crd::{DecommissionProgress, KVClusterSpec, KVClusterStatus, ZoneStatus};
use ringkv_operator::metrics::{AdminLabels, ErrorLabels, Metrics, ResultLabels, StepLabels};
use ringkv_operator::observe::Observed;

fn chart_file(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/ringkv-operator/files")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Metric names (without `_total`/`_bucket`/... suffixes) with `prefix` used in `text`.
pub fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Families in an exposition (`# TYPE name kind`), with counter and
/// histogram sample names too.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            out.insert(name.to_string());
            match kind {
                "counter" => {
                    out.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_operator_exports() {
    // Families appear in the exposition once they have a series.
    let m = Metrics::default();
    m.reconciles
        .get_or_create(&ResultLabels { result: "ok" })
        .inc();
    m.errors.get_or_create(&ErrorLabels { kind: "kube" }).inc();
    m.admin_calls
        .get_or_create(&AdminLabels {
            call: "status",
            result: "ok",
        })
        .inc();
    m.steps.get_or_create(&StepLabels { step: "repair" }).inc();
    let spec: KVClusterSpec = serde_json::from_value(serde_json::json!({
        "replicas": 3, "zones": [{"name": "a", "nodeLabelValue": "a"}]
    }))
    .unwrap();
    let status = KVClusterStatus {
        zones: vec![ZoneStatus {
            name: "a".into(),
            last_repair_time: Some(ringkv_operator::time::from_unix_ms(1)),
            ..Default::default()
        }],
        decommission: Some(DecommissionProgress {
            node: "n".into(),
            zone: "a".into(),
            phase: "Streaming".into(),
            ranges_done: 1,
            ranges_total: 2,
            keys_streamed: 0,
            started_at: None,
            message: None,
        }),
        ..Default::default()
    };
    m.record_cluster("db", "kv", &spec, &status, &Observed::default());
    let exported = exported(&m.encode());
    assert!(
        exported.contains("ringkv_operator_cluster_nodes_down"),
        "{exported:?}"
    );
    let text = chart_file("prometheus-rules.yaml") + &chart_file("ringkv-dashboard.json");
    let used = referenced(&text, "ringkv_operator_");
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported by the operator: {missing:?}"
    );
}

#[test]
fn referenced_finds_whole_names() {
    let r = referenced("rate(ringkv_x_total[5m]) / aringkv_y + ringkv_z", "ringkv_");
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        vec!["ringkv_x_total".to_string(), "ringkv_z".to_string()]
    );
}
