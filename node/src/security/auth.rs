//! Bearer tokens with roles (`auth_tokens_file`), checked on the client
//! gRPC, HTTP and Admin APIs; the Internode service is authenticated by
//! mutual TLS instead. The file is re-read when it changes.
//!
//! File format: one `<role> <token>` per line, role `read`, `readwrite`
//! or `admin`; blank lines and `#` comments ignored. Tokens are kept only
//! as SHA-256 digests, so a lookup's timing says nothing about a token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::listen::ConnInfo;
use crate::metrics::{AuthLabels, Metrics};

/// Shortest token accepted in the file: guessing must stay hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    ReadWrite,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "readwrite" => Some(Role::ReadWrite),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("auth_tokens_file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("auth_tokens_file {path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    MissingToken,
    UnknownToken,
    Forbidden { need: Role, have: Role },
    NoClientCert,
}

impl Refusal {
    /// The metric label (a closed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::UnknownToken => "unknown_token",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::NoClientCert => "no_client_cert",
        }
    }

    /// 401/UNAUTHENTICATED, or 403/PERMISSION_DENIED.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refusal::Forbidden { .. })
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::MissingToken => {
                "authentication required: send `authorization: Bearer <token>`".into()
            }
            Refusal::UnknownToken => "the bearer token is not valid".into(),
            Refusal::Forbidden { need, have } => format!(
                "this call needs a `{}` token; the one sent has role `{}`",
                need.as_str(),
                have.as_str()
            ),
            Refusal::NoClientCert => {
                "this API requires a client certificate signed by the cluster CA (mutual TLS)"
                    .into()
            }
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        if self.is_forbidden() {
            tonic::Status::permission_denied(self.message())
        } else {
            tonic::Status::unauthenticated(self.message())
        }
    }
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses a tokens file's text.
pub fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<Digest, Role>, AuthError> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| AuthError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `<role> <token>`".into()));
        };
        let role = Role::parse(role).ok_or_else(|| {
            err(format!(
                "unknown role `{role}` (expected read, readwrite or admin)"
            ))
        })?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(err(format!(
                "token shorter than {MIN_TOKEN_LEN} characters"
            )));
        }
        if let Some(prev) = out.insert(digest(token), role)
            && prev != role
        {
            return Err(err("the same token is listed with two roles".into()));
        }
    }
    Ok(out)
}

/// The current token set.
pub struct Tokens {
    path: PathBuf,
    current: ArcSwap<HashMap<Digest, Role>>,
    loaded: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Arc<Tokens>, AuthError> {
        let bytes = read(path)?;
        let set = parse_tokens(path, &String::from_utf8_lossy(&bytes))?;
        Ok(Arc::new(Tokens {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(set),
            loaded: Mutex::new(bytes),
        }))
    }

    /// Re-reads the file; a broken new version keeps the old tokens.
    pub fn reload_if_changed(&self) -> Result<bool, AuthError> {
        let bytes = read(&self.path)?;
        if *self.loaded.lock() == bytes {
            return Ok(false);
        }
        let set = parse_tokens(&self.path, &String::from_utf8_lossy(&bytes))?;
        self.current.store(Arc::new(set));
        *self.loaded.lock() = bytes;
        Ok(true)
    }

    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut last_err = String::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    last_err.clear();
                    tracing::info!(path = %self.path.display(), "auth tokens reloaded");
                }
                Ok(false) => last_err.clear(),
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_err {
                        tracing::warn!(error = %msg, "auth_tokens_file changed but cannot be used; keeping the previous tokens");
                        last_err = msg;
                    }
                }
            }
        }
    }

    /// Checks an `authorization` header value against `need`.
    pub fn check(&self, header: Option<&[u8]>, need: Role) -> Result<Role, Refusal> {
        let token = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(bearer)
            .ok_or(Refusal::MissingToken)?;
        let have = *self
            .current
            .load()
            .get(&digest(token))
            .ok_or(Refusal::UnknownToken)?;
        if have < need {
            return Err(Refusal::Forbidden { need, have });
        }
        Ok(have)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(h: &str) -> Option<&str> {
    let (scheme, token) = h.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a gRPC method needs. `None`: no token (Internode: mutual TLS).
pub fn grpc_need(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "ringkv.v1.Internode" => None,
        "ringkv.v1.Admin" => Some(Role::Admin),
        "ringkv.v1.KeyValue" => Some(match method {
            "Get" | "Ring" => Role::Read,
            _ => Role::ReadWrite,
        }),
        // Reflection and anything unknown: any valid token.
        _ => Some(Role::Read),
    }
}

/// The checks of one listener.
#[derive(Debug, Clone)]
pub struct Guard {
    pub tokens: Option<Arc<Tokens>>,
    /// TLS is on: the Internode service also checks that the connection
    /// presented a verified client certificate.
    pub mtls: bool,
    pub api: &'static str,
    pub metrics: Arc<Metrics>,
}

impl Guard {
    /// Checks a request for `need` (`None`: internode, certificate only).
    pub fn admit(
        &self,
        need: Option<Role>,
        header: Option<&[u8]>,
        conn: Option<&ConnInfo>,
    ) -> Result<(), Refusal> {
        let res = match need {
            None => {
                if self.mtls && !conn.is_some_and(|c| c.client_cert) {
                    Err(Refusal::NoClientCert)
                } else {
                    Ok(())
                }
            }
            Some(need) => match &self.tokens {
                None => Ok(()),
                Some(t) => t.check(header, need).map(|_| ()),
            },
        };
        if let Err(r) = &res {
            let api = if need.is_none() {
                "internode"
            } else {
                self.api
            };
            self.metrics
                .auth_refused
                .get_or_create(&AuthLabels {
                    api,
                    reason: r.reason(),
                })
                .inc();
        }
        res
    }

    fn needed(&self) -> bool {
        self.tokens.is_some() || self.mtls
    }
}

/// Tower layer checking gRPC calls (tonic `Server::layer`).
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer(pub Guard);

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            guard: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    guard: Guard,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.guard.needed() {
            let need = grpc_need(req.uri().path());
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|h| h.as_bytes());
            if let Err(r) = self
                .guard
                .admit(need, header, req.extensions().get::<ConnInfo>())
            {
                return futures::future::Either::Right(futures::future::ready(Ok(r
                    .to_status()
                    .into_http())));
            }
        }
        futures::future::Either::Left(self.inner.call(req))
    }
}

/// What an HTTP route needs; `None` for probes and metrics, which
/// kubelet and Prometheus call without tokens.
pub fn http_need(method: &http::Method, path: &str) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return None;
    }
    if path.starts_with("/v1/keys") && !matches!(*method, http::Method::GET | http::Method::HEAD) {
        return Some(Role::ReadWrite);
    }
    Some(Role::Read)
}

/// axum middleware checking HTTP requests.
pub async fn http_auth(
    axum::extract::State(guard): axum::extract::State<Guard>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if let (Some(_), Some(need)) = (&guard.tokens, http_need(req.method(), req.uri().path())) {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|h| h.as_bytes());
        if let Err(r) = guard.admit(Some(need), header, None) {
            let (status, code) = if r.is_forbidden() {
                (http::StatusCode::FORBIDDEN, "forbidden")
            } else {
                (http::StatusCode::UNAUTHORIZED, "unauthenticated")
            };
            let body = serde_json::json!({"error": code, "message": r.message()}).to_string();
            let mut resp = (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            if !r.is_forbidden() {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"ringkv\""),
                );
            }
            return resp;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_parses_and_refuses_bad_lines() {
        let p = Path::new("/t");
        let set = parse_tokens(
            p,
            "# comment\n\nread rrrrrrrrrrrrrrrrrrrr\nadmin aaaaaaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        for (text, want) in [
            ("writer xxxxxxxxxxxxxxxxxxxxx", "unknown role"),
            ("read short", "shorter"),
            ("read a b", "expected"),
            (
                "read tttttttttttttttttt\nadmin tttttttttttttttttt",
                "two roles",
            ),
        ] {
            let e = parse_tokens(p, text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("line"), "{e}");
        }
    }

    #[test]
    fn roles_are_ordered_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "read rrrrrrrrrrrrrrrrrrrr\nreadwrite wwwwwwwwwwwwwwwwwwww\n",
        )
        .unwrap();
        let t = Tokens::load(&path).unwrap();
        let h = |s: &'static str| Some(s.as_bytes());
        assert_eq!(t.check(None, Role::Read), Err(Refusal::MissingToken));
        assert_eq!(
            t.check(h("Bearer nope-nope-nope-nope"), Role::Read),
            Err(Refusal::UnknownToken)
        );
        assert_eq!(
            t.check(h("Bearer rrrrrrrrrrrrrrrrrrrr"), Role::Read),
            Ok(Role::Read)
        );
        assert_eq!(
            t.check(h("bearer rrrrrrrrrrrrrrrrrrrr"), Role::ReadWrite),
            Err(Refusal::Forbidden {
                need: Role::ReadWrite,
                have: Role::Read
            })
        );
        assert!(
            t.check(h("Bearer wwwwwwwwwwwwwwwwwwww"), Role::Admin)
                .is_err()
        );
        // Rewritten on disk: the new token works, the old one no longer.
        std::fs::write(&path, "admin aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        assert!(t.reload_if_changed().unwrap());
        assert_eq!(
            t.check(h("Bearer aaaaaaaaaaaaaaaaaaaa"), Role::Admin),
            Ok(Role::Admin)
        );
        assert_eq!(
            t.check(h("Bearer rrrrrrrrrrrrrrrrrrrr"), Role::Read),
            Err(Refusal::UnknownToken)
        );
        // A broken rewrite keeps the previous tokens.
        std::fs::write(&path, "superuser x\n").unwrap();
        assert!(t.reload_if_changed().is_err());
        assert!(
            t.check(h("Bearer aaaaaaaaaaaaaaaaaaaa"), Role::Admin)
                .is_ok()
        );
    }

    #[test]
    fn methods_map_to_roles() {
        assert_eq!(grpc_need("/ringkv.v1.KeyValue/Get"), Some(Role::Read));
        assert_eq!(grpc_need("/ringkv.v1.KeyValue/Put"), Some(Role::ReadWrite));
        assert_eq!(
            grpc_need("/ringkv.v1.KeyValue/Delete"),
            Some(Role::ReadWrite)
        );
        assert_eq!(grpc_need("/ringkv.v1.Admin/Drain"), Some(Role::Admin));
        assert_eq!(grpc_need("/ringkv.v1.Internode/WriteReplica"), None);
        assert_eq!(http_need(&http::Method::GET, "/metrics"), None);
        assert_eq!(
            http_need(&http::Method::PUT, "/v1/keys/a"),
            Some(Role::ReadWrite)
        );
        assert_eq!(
            http_need(&http::Method::GET, "/v1/keys/a"),
            Some(Role::Read)
        );
    }
}
