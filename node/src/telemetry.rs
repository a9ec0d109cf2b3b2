//! Logs and traces of a node.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`). When the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported
//! over OTLP/gRPC (service name `ringkv-node` unless `OTEL_SERVICE_NAME` says
//! otherwise), filtered by `RINGKV_TRACE_FILTER` (default
//! `info,ringkv_node=debug`: the request-path spans are DEBUG, so they exist
//! only when something wants them).
//!
//! One client request is one trace: the client API servers open a span per
//! request (continuing the caller's W3C `traceparent` if it sent one); the
//! internode client sends the current span's context in the `traceparent`
//! header ([`Propagate`]); a coalesced replica call, which carries items of
//! many requests, sends each item's context in the item itself
//! ([`current_traceparent`]) and the replica opens a span per traced item
//! ([`item_span`]) as a child of the request that sent it.
//!
//! With tracing off (no exporter installed) every hook is one relaxed atomic
//! load: no span is created, no header parsed or written.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The W3C trace-context header.
const TRACEPARENT: &str = "traceparent";

/// True once spans are exported ([`init`] with an endpoint, or [`enable`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the propagation hooks on: call it after installing a subscriber
/// with [`otel_layer`] (what [`init`] does when exporting).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber: logs to stderr and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OTLP span export. An exporter that
/// cannot be built is reported and the node runs without it.
pub fn init() -> Telemetry {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // Chitchat warns on every payload it cannot decode; the gossip
            // guard already counts and logs those, rate-limited.
            EnvFilter::new("info,chitchat::transport::udp=error")
        }));
    let provider = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match otlp_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("ringkv-node: not exporting traces: {e}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(otel_layer);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    if provider.is_some() {
        enable();
    }
    Telemetry { provider }
}

fn otlp_provider() -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("ringkv-node");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The layer that turns the node's spans into OpenTelemetry spans of
/// `provider`, with its own filter (`RINGKV_TRACE_FILTER`).
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_env("RINGKV_TRACE_FILTER")
        .unwrap_or_else(|_| EnvFilter::new("info,ringkv_node=debug"));
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ringkv-node"))
        .with_filter(filter)
}

/// One `traceparent` value as a propagation carrier.
#[derive(Default)]
struct One(Option<String>);

impl Injector for One {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for One {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The W3C `traceparent` of the current span: empty when tracing is off or
/// no span is being exported.
pub fn current_traceparent() -> String {
    if !enabled() {
        return String::new();
    }
    let mut carrier = One::default();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.0.unwrap_or_default()
}

/// Makes `span` a child of the remote span `traceparent` names.
fn continue_trace(span: &Span, traceparent: &str) {
    let cx = TraceContextPropagator::new().extract(&One(Some(traceparent.to_string())));
    let _ = span.set_parent(cx);
}

/// Sends the current span's context with every internode call (a tonic
/// interceptor on the internode client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagate;

impl tonic::service::Interceptor for Propagate {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if enabled() {
            let tp = current_traceparent();
            if let Ok(v) = tp.parse() {
                req.metadata_mut().insert(TRACEPARENT, v);
            }
        }
        Ok(req)
    }
}

fn header(req: &http::Request<()>) -> Option<&str> {
    req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

/// The span of a client request (tonic `trace_fn` of the client gRPC
/// server): a new trace, or the caller's when it sent a `traceparent`.
pub fn request_span(
    node: &str,
) -> impl Fn(&http::Request<()>) -> Span + Clone + Send + Sync + use<> {
    let node = node.to_string();
    move |req| {
        if !enabled() {
            return Span::none();
        }
        let span = tracing::debug_span!("request", node = %node, rpc = %req.uri().path());
        if let Some(tp) = header(req) {
            continue_trace(&span, tp);
        }
        span
    }
}

/// The span of an internode call that carries a trace context (tonic
/// `trace_fn` of the internode server); none for calls without one, such
/// as coalesced replica calls (their items carry theirs: [`item_span`]).
pub fn internode_span(
    node: &str,
) -> impl Fn(&http::Request<()>) -> Span + Clone + Send + Sync + use<> {
    let node = node.to_string();
    move |req| {
        if !enabled() {
            return Span::none();
        }
        let Some(tp) = header(req) else {
            return Span::none();
        };
        let span = tracing::debug_span!("internode", node = %node, rpc = %req.uri().path());
        continue_trace(&span, tp);
        span
    }
}

/// The kind of replica work an item span stands for.
#[derive(Debug, Clone, Copy)]
pub enum Item {
    Write,
    Read,
}

/// A span for one item of a coalesced replica call, child of the request
/// that sent it; none when the item carries no context. Kept alive while
/// the item is served (dropping it ends it).
pub fn item_span(kind: Item, node: &str, traceparent: &str) -> Span {
    if traceparent.is_empty() || !enabled() {
        return Span::none();
    }
    let span = match kind {
        Item::Write => tracing::debug_span!("replica_write", node = %node),
        Item::Read => tracing::debug_span!("replica_read", node = %node),
    };
    continue_trace(&span, traceparent);
    span
}

/// HTTP API middleware: a span per request, as [`request_span`] does for
/// gRPC (`axum::middleware::from_fn_with_state` with the node id).
pub async fn http_span(
    axum::extract::State(node): axum::extract::State<std::sync::Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    if !enabled() {
        return next.run(req).await;
    }
    let span = tracing::debug_span!("request", node = %node, method = %req.method(), path = %req.uri().path());
    if let Some(tp) = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        continue_trace(&span, tp);
    }
    next.run(req).instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_inject_and_extract() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContextPropagator::new().extract(&One(Some(tp.to_string())));
        let mut out = One::default();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(out.0.as_deref(), Some(tp));
    }

    #[test]
    fn with_tracing_off_nothing_is_sent_or_created() {
        assert!(!enabled());
        assert_eq!(current_traceparent(), "");
        assert!(
            item_span(
                Item::Write,
                "n",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )
            .is_none()
        );
        let req = http::Request::builder()
            .header(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        assert!(internode_span("n")(&req).is_none());
        let mut p = Propagate;
        use tonic::service::Interceptor as _;
        let r = p.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get(TRACEPARENT).is_none());
    }
}
