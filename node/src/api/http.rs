//! HTTP/JSON API (axum), curl-friendly:
//!
//! - `GET /v1/keys/{key}` → 200 with the raw value and `X-Version-Context`;
//!   300 with every sibling as JSON when writes conflicted; 404 when absent.
//!   `Accept: application/json` gets JSON for 200 too.
//! - `PUT /v1/keys/{key}` with the raw value as body; `X-Version-Context`
//!   from a previous GET; `?w=`, `?ttl=30s` → 200 JSON `{context, acks}`.
//! - `DELETE /v1/keys/{key}` with `X-Version-Context`, `?w=` → 200 JSON `{acks}`;
//!   without a context it deletes what a default-quorum read sees now.
//! - `?r=` / `?w=`: `one | quorum | all | <n>`. Keys are the percent-decoded
//!   path after `/v1/keys/` (they may contain `/`).
//! - Errors: JSON `{"error": code, "message": text}` with 400 (bad input),
//!   413 (value too large), 503 (quorum not reached, draining), 500.
//! - `/healthz`, `/readyz`, `/metrics`.

// Helpers return the finished error response as their `Err`; boxing it would
// only add noise at every call site.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use super::{ApiState, is_too_large, outcome_label};
use crate::coordinator::{CoordError, InvalidInput, Level, WriteRequest};

pub const CONTEXT_HEADER: &str = "x-version-context";
const PREFIX: &str = "/v1/keys/";

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/keys", get(empty_key).put(empty_key).delete(empty_key))
        .route("/v1/keys/", get(empty_key).put(empty_key).delete(empty_key))
        .route(
            "/v1/keys/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; the API is under /v1/keys/{key}",
            )
        })
        // We read bodies ourselves, with max_value_bytes as the limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": code, "message": message.into()}).to_string(),
    )
        .into_response()
}

fn coord_error(e: CoordError) -> Response {
    match &e {
        CoordError::Invalid(i) if is_too_large(i) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            e.to_string(),
        ),
        CoordError::Invalid(i) => {
            let code = match i {
                InvalidInput::EmptyKey | InvalidInput::KeyTooLong { .. } => "invalid_key",
                InvalidInput::Context(_) => "invalid_context",
                InvalidInput::Consistency { .. } => "invalid_consistency",
                InvalidInput::Ttl(_) => "invalid_ttl",
                InvalidInput::ValueTooLarge { .. } => "value_too_large",
            };
            error(StatusCode::BAD_REQUEST, code, e.to_string())
        }
        CoordError::QuorumNotReached { required, got, .. } => {
            let body = json!({"error": "quorum_not_reached", "message": e.to_string(), "required": required, "replied": got});
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        CoordError::Remote {
            code: tonic::Code::InvalidArgument,
            message,
        } => error(StatusCode::BAD_REQUEST, "invalid_argument", message.clone()),
        CoordError::Unavailable(_) | CoordError::Remote { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        CoordError::Expired { .. } => error(StatusCode::GATEWAY_TIMEOUT, "expired", e.to_string()),
        CoordError::Storage(s) if s.is_no_space() => error(
            StatusCode::INSUFFICIENT_STORAGE,
            "no_space",
            format!(
                "{s}: this node's disk is full; writes resume by themselves once space is freed"
            ),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            e.to_string(),
        ),
    }
}

fn draining() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "draining",
        super::Draining.to_string(),
    )
}

/// The key: percent-decoded bytes of the raw path after `/v1/keys/`.
fn key_of(uri: &Uri) -> Result<Bytes, Response> {
    let raw = uri.path().strip_prefix(PREFIX).unwrap_or("");
    let key = percent_decode(raw).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            "malformed percent-encoding in key",
        )
    })?;
    crate::coordinator::validate::key(&key).map_err(|e| coord_error(e.into()))?;
    Ok(Bytes::from(key))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn context_of(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<String, Response> {
    match headers.get(CONTEXT_HEADER) {
        Some(v) => v.to_str().map(|s| s.to_string()).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_context",
                "X-Version-Context is not ASCII",
            )
        }),
        None => Ok(q.get("context").cloned().unwrap_or_default()),
    }
}

/// `ttl=30` (seconds) or `ttl=30s` / `1500ms` / `1h30m` (humantime) →
/// milliseconds, the resolution of expiry. `0`, `0s` and `0ms` all mean no
/// expiry (as `ttl_ms: 0` over gRPC). A TTL that is not a whole number of
/// milliseconds (`1ns`, `1500us`) is refused rather than rounded: rounding
/// down to 0 would silently never expire.
pub fn parse_ttl(t: &str) -> Result<u64, String> {
    let t = t.trim();
    if t.is_empty() {
        return Ok(0);
    }
    let d = match t.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(t).map_err(|e| {
            format!(
                "invalid ttl {t:?}: {e}; use seconds or e.g. 30s, 500ms, 5m, 1h (0 = no expiry)"
            )
        })?,
    };
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "ttl {t:?} is not a whole number of milliseconds; TTLs have 1ms resolution (the smallest is 1ms, 0 means no expiry)"
        ));
    }
    let ms = d.as_millis();
    if ms > crate::coordinator::validate::MAX_TTL_MS as u128 {
        return Err(format!("ttl {t:?} is more than 100 years"));
    }
    Ok(ms as u64)
}

fn ttl_of(q: &HashMap<String, String>) -> Result<u64, Response> {
    parse_ttl(q.get("ttl").map(|s| s.as_str()).unwrap_or(""))
        .map_err(|m| error(StatusCode::BAD_REQUEST, "invalid_ttl", m))
}

fn wants_json(headers: &HeaderMap, q: &HashMap<String, String>) -> bool {
    q.get("format").is_some_and(|f| f == "json")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"))
}

fn sibling_json(v: &crate::version::Value) -> serde_json::Value {
    let data = v.data.clone().unwrap_or_default();
    json!({
        "value": std::str::from_utf8(&data).ok(),
        "value_base64": base64::engine::general_purpose::STANDARD.encode(&data),
        "expires_at_unix_ms": v.expires_at_ms,
        "written_at_unix_ms": v.written_at_ms,
    })
}

fn with_context(mut resp: Response, ctx: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(ctx) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    resp
}

async fn empty_key() -> Response {
    coord_error(InvalidInput::EmptyKey.into())
}

/// The consistency level of query parameter `name`, parsed once here; a bad
/// one is counted and answered with a 400.
fn level_of(
    s: &ApiState,
    op: &'static str,
    q: &HashMap<String, String>,
    name: &str,
    started: Instant,
) -> Result<Option<Level>, Response> {
    Level::parse(q.get(name).map_or("", String::as_str)).map_err(|e| {
        s.observe(op, Err(()), started, "invalid");
        coord_error(e.into())
    })
}

async fn get_key(
    State(s): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(_pass) = s.gate.enter() else {
        return draining();
    };
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let started = Instant::now();
    let r = match level_of(&s, "get", &q, "r", started) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let out = match s.coord.get(key.clone(), r).await {
        Ok(o) => o,
        Err(e) => {
            s.observe("get", Ok(r), started, outcome_label(&e));
            return coord_error(e);
        }
    };
    s.observe(
        "get",
        Ok(r),
        started,
        if out.siblings.is_empty() {
            "not_found"
        } else {
            "ok"
        },
    );
    let resp = match out.siblings.len() {
        0 => {
            let body =
                json!({"error": "not_found", "message": "key not found", "context": out.context});
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        1 if !wants_json(&headers, &q) => {
            let v = &out.siblings[0];
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from(v.data.clone().unwrap_or_default()),
            )
                .into_response();
            if v.expires_at_ms > 0 {
                resp.headers_mut()
                    .insert("x-expires-at", HeaderValue::from(v.expires_at_ms));
            }
            resp
        }
        n => {
            let status = if n > 1 {
                StatusCode::MULTIPLE_CHOICES
            } else {
                StatusCode::OK
            };
            let body = json!({
                "key": String::from_utf8_lossy(&key),
                "siblings": out.siblings.iter().map(sibling_json).collect::<Vec<_>>(),
                "context": out.context,
                "replies": out.replies,
            });
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    };
    let mut resp = with_context(resp, &out.context);
    resp.headers_mut()
        .insert("x-ringkv-replies", HeaderValue::from(out.replies));
    resp
}

async fn put_key(
    State(s): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    let Ok(_pass) = s.gate.enter() else {
        return draining();
    };
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let max = s.config.max_value_bytes;
    let too_large = |len: String| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("value is {len} bytes; the limit is max_value_bytes = {max}"),
        )
    };
    // Refuse early on a declared length, before reading anything.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return too_large(len.to_string());
    }
    let value = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) => {
            // axum reports the limit as a boxed http-body LengthLimitError.
            return if format!("{e:?}").contains("LengthLimit")
                || e.to_string().contains("length limit")
            {
                too_large(format!("more than {max}"))
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("could not read the request body: {e}"),
                )
            };
        }
    };
    let (ctx, ttl_ms) = match (context_of(&headers, &q), ttl_of(&q)) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let started = Instant::now();
    let w = match level_of(&s, "put", &q, "w", started) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let req = WriteRequest {
        key,
        value: Some(value),
        context: ctx,
        ttl_ms,
        w,
        deadline_unix_ms: 0,
    };
    match s.coord.write(req, 0).await {
        Ok(out) => {
            s.observe("put", Ok(w), started, "ok");
            let body = json!({"context": out.context, "acks": out.acks});
            with_context(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response(),
                &out.context,
            )
        }
        Err(e) => {
            s.observe("put", Ok(w), started, outcome_label(&e));
            coord_error(e)
        }
    }
}

async fn delete_key(
    State(s): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(_pass) = s.gate.enter() else {
        return draining();
    };
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let ctx = match context_of(&headers, &q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let started = Instant::now();
    let w = match level_of(&s, "delete", &q, "w", started) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    // Without a context: what a read at the default R sees now.
    let ctx = match s.delete_context(&key, ctx).await {
        Ok(c) => c,
        Err(e) => {
            s.observe("delete", Ok(w), started, outcome_label(&e));
            return coord_error(e);
        }
    };
    let req = WriteRequest {
        key,
        value: None,
        context: ctx,
        ttl_ms: 0,
        w,
        deadline_unix_ms: 0,
    };
    match s.coord.write(req, 0).await {
        Ok(out) => {
            s.observe("delete", Ok(w), started, "ok");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"acks": out.acks}).to_string(),
            )
                .into_response()
        }
        Err(e) => {
            s.observe("delete", Ok(w), started, outcome_label(&e));
            coord_error(e)
        }
    }
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.gate.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if s.membership.local().state == crate::membership::NodeState::Repairing.to_proto() as i32 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring this node's lost data from the other replicas\n",
        )
            .into_response();
    }
    if s.coord.topology().ring.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no member has tokens yet\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    s.metrics.observe_engine(&s.replica.store().stats());
    s.refresh_metrics();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_and_resource_exhausted_not_an_internal_error() {
        let full = || {
            CoordError::Storage(crate::replica::StorageError::Engine(
                ringkv_engine::Error::NoSpace("WAL append: no space left on device".into()),
            ))
        };
        assert_eq!(
            coord_error(full()).status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(super::super::outcome_label(&full()), "no_space");
        let s = super::super::to_status(full());
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("disk is full"), "{}", s.message());
        let other = CoordError::Storage(crate::replica::StorageError::Corrupt("x".into()));
        assert_eq!(
            coord_error(other).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").unwrap(), b"a/b c");
        assert_eq!(percent_decode("%ff").unwrap(), vec![0xff]);
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%2").is_none());
    }

    #[test]
    fn ttl_zero_means_no_expiry_in_every_spelling_and_sub_ms_is_refused() {
        for zero in ["", "0", "0s", "0ms", " 0 "] {
            assert_eq!(parse_ttl(zero), Ok(0), "{zero:?}");
        }
        assert_eq!(parse_ttl("30"), Ok(30_000));
        assert_eq!(parse_ttl("30s"), Ok(30_000));
        assert_eq!(parse_ttl("1ms"), Ok(1));
        assert_eq!(parse_ttl("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_ttl("2000us"), Ok(2));
        for bad in ["1ns", "999us", "1500us", "-1", "soon", "1.5", "200years"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(e.contains("ttl"), "{bad:?}: {e}");
        }
        assert!(parse_ttl("1ns").unwrap_err().contains("1ms"));
    }
}
