//! Traces across nodes: with OpenTelemetry on, one client request is one
//! trace through the node that took it, the replica it was forwarded to
//! (`traceparent` header on the internode call) and the replicas written or
//! read through coalesced calls (`traceparent` per item). Spans go to an
//! in-process exporter; the whole cluster runs in this process, so every
//! span says which node made it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use ringkv_proto::v1 as pb;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

fn node_of(s: &SpanData) -> String {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "node")
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

/// The spans of `trace` named `name`, as (node, span id, parent span id).
fn spans(all: &[SpanData], trace: TraceId, name: &str) -> Vec<(String, SpanId, SpanId)> {
    all.iter()
        .filter(|s| s.span_context.trace_id() == trace && s.name == name)
        .map(|s| (node_of(s), s.span_context.span_id(), s.parent_span_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_request_is_one_trace_across_coordinator_and_replicas() {
    let exported = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    tracing_subscriber::registry()
        .with(ringkv_node::telemetry::otel_layer(&provider))
        .init();
    ringkv_node::telemetry::enable();

    // Four nodes, two replicas per key: some node forwards every key.
    let cluster = Cluster::start(4, |c| {
        c.n = 2;
        c.w = 2;
        c.r = 2;
    })
    .await;
    let key = "traced";
    let via = cluster
        .non_replica(key.as_bytes())
        .expect("a node that is not a replica");
    let replicas = cluster.replicas(key.as_bytes());
    let via_id = cluster.nodes[via].node_id().to_string();

    // The client's own trace context continues through every hop.
    let client_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let client_span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut kv = cluster.kv(via).await;
    let mut put = tonic::Request::new(pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        w: "all".into(),
        ..Default::default()
    });
    put.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    kv.put(put).await.unwrap();
    // A read gets a trace of its own.
    kv.get(pb::GetRequest {
        key: key.as_bytes().to_vec().into(),
        r: "all".into(),
    })
    .await
    .unwrap();

    // Spans end (and are exported) when the calls that hold them return.
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let _ = provider.force_flush();
        let all = exported.0.lock().unwrap().clone();
        // The write: the request span on the node the client called, the
        // forwarded call on the coordinating replica, the replica write on
        // the other replica — parent to child, one trace.
        let requests = spans(&all, client_trace, "request");
        let forwarded = spans(&all, client_trace, "internode");
        let writes = spans(&all, client_trace, "replica_write");
        let write_ok = requests.len() == 1
            && requests[0].0 == via_id
            && requests[0].2 == client_span
            && forwarded.len() == 1
            && replicas.contains(&forwarded[0].0)
            && forwarded[0].2 == requests[0].1
            && writes.len() == 1
            && replicas.contains(&writes[0].0)
            && writes[0].0 != forwarded[0].0
            && writes[0].2 == forwarded[0].1;
        // The read: a new trace rooted on the node called, with a replica
        // read on each replica.
        let read_trace = all
            .iter()
            .find(|s| {
                s.name == "request"
                    && s.span_context.trace_id() != client_trace
                    && node_of(s) == via_id
            })
            .map(|s| (s.span_context.trace_id(), s.span_context.span_id()));
        let read_ok = read_trace.is_some_and(|(t, root)| {
            let reads = spans(&all, t, "replica_read");
            let mut nodes: Vec<String> = reads.iter().map(|r| r.0.clone()).collect();
            nodes.sort();
            let mut want = replicas.clone();
            want.sort();
            nodes == want && reads.iter().all(|r| r.2 == root)
        });
        if write_ok && read_ok {
            break;
        }
        last = format!(
            "write trace: request {requests:?}, internode {forwarded:?}, replica_write {writes:?}; read ok: {read_ok}; replicas {replicas:?}, via {via_id}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans never formed the expected traces: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = last;
    cluster.stop().await;
}
