//! ringkv-client: talk to a ringkv cluster from Rust.
//!
//! Connect to any node; every node coordinates any request. A read returns
//! every sibling plus one opaque causal [`Context`]; pass the context back on
//! the next write to supersede exactly what you read. Writing without a
//! context creates a sibling of whatever you did not see.
//!
//! [`Client::connect_cluster`] is the one applications want: it learns the
//! ring and sends each request straight to a replica of its key (no forward
//! hop); [`Client::connect`] talks to one node, which coordinates everything.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringkv_client::ClientError> {
//! let mut c = ringkv_client::Client::connect_cluster(&["http://127.0.0.1:7070"]).await?;
//! c.put("greeting", "hello").await?;
//! let got = c.get("greeting").await?;
//! c.put_with("greeting", "hello again", ringkv_client::PutOptions::after(&got)).await?;
//! # Ok(()) }
//! ```

mod routing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::key_value_client::KeyValueClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The generated protobuf types (Admin status messages and their enums).
pub use ringkv_proto::v1 as pb;
pub use ringkv_proto::v1::StatusResponse;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server refused the request as invalid (nothing was written).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Quorum not reached, node draining, or unreachable: retry, maybe elsewhere.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{code:?}: {message}")]
    Other { code: tonic::Code, message: String },
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument => ClientError::InvalidArgument(s.message().to_string()),
            tonic::Code::Unavailable => ClientError::Unavailable(s.message().to_string()),
            code => ClientError::Other {
                code,
                message: s.message().to_string(),
            },
        }
    }
}

/// The opaque causal context of a read or write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context(pub String);

impl Context {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub value: Bytes,
    /// Unix ms; 0 = never.
    pub expires_at_unix_ms: u64,
    pub written_at_unix_ms: u64,
}

#[derive(Debug, Clone)]
pub struct GetResult {
    /// Live values; more than one means concurrent writes to resolve.
    pub siblings: Vec<Sibling>,
    pub context: Context,
    pub replies: u32,
}

impl GetResult {
    pub fn found(&self) -> bool {
        !self.siblings.is_empty()
    }
    /// The single value, if there is exactly one.
    pub fn value(&self) -> Option<&Bytes> {
        match self.siblings.as_slice() {
            [one] => Some(&one.value),
            _ => None,
        }
    }
    pub fn has_conflict(&self) -> bool {
        self.siblings.len() > 1
    }
}

/// A TTL as the server takes it: whole milliseconds, 0 = no expiry (what
/// `Duration::ZERO` means too). Anything finer than 1 ms is refused here as
/// the HTTP API refuses it, never rounded to 0 (which would never expire).
fn ttl_ms(ttl: Option<Duration>) -> Result<u64, ClientError> {
    let Some(d) = ttl else { return Ok(0) };
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(ClientError::InvalidArgument(format!(
            "ttl {d:?} is not a whole number of milliseconds (TTLs have 1ms resolution)"
        )));
    }
    u64::try_from(d.as_millis())
        .map_err(|_| ClientError::InvalidArgument(format!("ttl {d:?} is too large")))
}

/// Options of a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub context: Context,
    pub ttl: Option<Duration>,
    /// `one | quorum | all | <n>`; empty = cluster default.
    pub w: String,
}

impl PutOptions {
    /// A put superseding what `read` returned.
    pub fn after(read: &GetResult) -> Self {
        PutOptions {
            context: read.context.clone(),
            ..Default::default()
        }
    }
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn w(mut self, w: impl Into<String>) -> Self {
        self.w = w.into();
        self
    }
}

#[derive(Debug, Clone)]
pub struct PutResult {
    pub context: Context,
    pub acks: u32,
}

/// How to reach a secured cluster: TLS (a CA to verify nodes, and a
/// client certificate for mutual TLS) and a bearer token. The default is
/// plaintext without a token.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// PEM CA bundle the nodes' certificates must chain to. Setting it (or
    /// an `https://` address) turns TLS on.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key (Admin, and `tls_mode: required`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// Name the nodes' certificates are checked against (default: the host
    /// dialled).
    pub tls_server_name: Option<String>,
}

impl ConnectOptions {
    fn tls(&self) -> bool {
        self.ca_pem.is_some() || self.identity.is_some()
    }

    /// The endpoint for `addr` (`host:port`, `http://` or `https://`).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let (scheme, rest) = match addr.split_once("://") {
            Some((s, rest)) => (s, rest),
            None => (if self.tls() { "https" } else { "http" }, addr),
        };
        let https = scheme == "https" || self.tls();
        let url = format!("{}://{rest}", if https { "https" } else { "http" });
        let err = |reason: String| ClientError::Connect {
            addr: url.clone(),
            reason,
        };
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if https {
            let ca = self.ca_pem.as_ref().ok_or_else(|| {
                err("TLS needs the cluster CA: pass --cacert (RINGKV_CACERT)".into())
            })?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| err(e.to_string()))?;
        }
        Ok(ep)
    }

    fn auth(&self) -> Result<Auth, ClientError> {
        match &self.token {
            None => Ok(Auth(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse()
                .map(|v| Auth(Some(v)))
                .map_err(|_| {
                    ClientError::InvalidArgument(
                        "the token contains characters not allowed in a header".into(),
                    )
                }),
        }
    }
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the token interceptor.
pub type Transport = tonic::service::interceptor::InterceptedService<Channel, Auth>;

async fn channel(addr: &str, opts: &ConnectOptions) -> Result<Channel, ClientError> {
    let ep = opts.endpoint(addr)?;
    let url = ep.uri().to_string();
    ep.connect().await.map_err(|e| ClientError::Connect {
        addr: url,
        reason: format!(
            "{e} ({})",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    })
}

pub(crate) fn kv_client(ch: Channel, auth: Auth) -> KeyValueClient<Transport> {
    KeyValueClient::with_interceptor(ch, auth)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

/// A client of the `ringkv.v1.KeyValue` API. Cheap to clone (clones share
/// connections and the learned ring).
#[derive(Debug, Clone)]
pub struct Client {
    /// The node connected to; takes whatever routing cannot place.
    kv: KeyValueClient<Transport>,
    router: Option<Arc<routing::Router>>,
}

/// Connection failures a request can be re-sent after: the request never
/// reached a server (tonic's own transport errors carry a source).
fn not_delivered(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable && std::error::Error::source(s).is_some()
}

impl Client {
    /// Connects to one node's client gRPC address (`http://host:7070` or
    /// `host:7070`); that node coordinates every request.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, &ConnectOptions::default()).await
    }

    /// [`Client::connect`] to a secured cluster (TLS, token).
    pub async fn connect_with(addr: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
        Ok(Client {
            kv: kv_client(channel(addr, opts).await?, opts.auth()?),
            router: None,
        })
    }

    /// Connects to the first reachable of `seeds`, learns the ring from it
    /// and routes each request to a replica of its key (token-aware, as
    /// Cassandra and Scylla drivers do): no request pays the hop a node
    /// takes to forward a write to a replica. Falls back to the seed node
    /// for a replica it cannot reach, and to plain `connect` behaviour when
    /// the server does not offer the ring.
    pub async fn connect_cluster(seeds: &[&str]) -> Result<Client, ClientError> {
        Client::connect_cluster_with(seeds, &ConnectOptions::default()).await
    }

    /// [`Client::connect_cluster`] to a secured cluster (TLS, token).
    pub async fn connect_cluster_with(
        seeds: &[&str],
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let mut last = None;
        for s in seeds {
            match channel(s, opts).await {
                Ok(ch) => {
                    let kv = kv_client(ch, opts.auth()?);
                    let router = routing::Router::learn(kv.clone(), s, opts.clone()).await;
                    return Ok(Client { kv, router });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: String::new(),
            reason: "no seed address given".into(),
        }))
    }

    pub fn from_channel(ch: Channel) -> Client {
        Client {
            kv: kv_client(ch, Auth(None)),
            router: None,
        }
    }

    /// True when requests go straight to replicas (the ring was learned).
    pub fn is_token_aware(&self) -> bool {
        self.router.is_some()
    }

    /// Sends one request about `key` where routing says (or to the node
    /// connected to); a replica that cannot be reached is avoided for a
    /// while and the request goes to the connected node instead.
    async fn call<T, F, Fut>(&self, key: &[u8], f: F) -> Result<T, tonic::Status>
    where
        F: Fn(KeyValueClient<Transport>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let Some(router) = &self.router else {
            return f(self.kv.clone()).await.map(tonic::Response::into_inner);
        };
        let (kv, addr) = router.route(key);
        match f(kv).await {
            Err(s) if not_delivered(&s) && addr.is_some() => {
                router.avoid(addr.as_deref().unwrap_or_default());
                f(self.kv.clone()).await.map(tonic::Response::into_inner)
            }
            r => r.map(tonic::Response::into_inner),
        }
    }

    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<GetResult, ClientError> {
        self.get_with(key, "").await
    }

    /// A read with consistency `r` (`one | quorum | all | <n>`, empty = default).
    pub async fn get_with(
        &mut self,
        key: impl AsRef<[u8]>,
        r: &str,
    ) -> Result<GetResult, ClientError> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let resp = self
            .call(&key, |mut kv| {
                let req = pb::GetRequest {
                    key: key.clone(),
                    r: r.to_string(),
                };
                async move { kv.get(req).await }
            })
            .await?;
        Ok(GetResult {
            siblings: resp
                .siblings
                .into_iter()
                .map(|s| Sibling {
                    value: s.value,
                    expires_at_unix_ms: s.expires_at_unix_ms,
                    written_at_unix_ms: s.written_at_unix_ms,
                })
                .collect(),
            context: Context(resp.context),
            replies: resp.replies,
        })
    }

    /// A put without context: a sibling of anything this client did not read.
    pub async fn put(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<PutResult, ClientError> {
        self.put_with(key, value, PutOptions::default()).await
    }

    pub async fn put_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult, ClientError> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let value: Bytes = value.into();
        let ttl_ms = ttl_ms(opts.ttl)?;
        let resp = self
            .call(&key, |mut kv| {
                let req = pb::PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    context: opts.context.0.clone(),
                    ttl_ms,
                    w: opts.w.clone(),
                };
                async move { kv.put(req).await }
            })
            .await?;
        Ok(PutResult {
            context: Context(resp.context),
            acks: resp.acks,
        })
    }

    /// Deletes what `context` saw (empty: everything this client did not see stays).
    pub async fn delete(
        &mut self,
        key: impl AsRef<[u8]>,
        context: &Context,
        w: &str,
    ) -> Result<u32, ClientError> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let resp = self
            .call(&key, |mut kv| {
                let req = pb::DeleteRequest {
                    key: key.clone(),
                    context: context.0.clone(),
                    w: w.to_string(),
                };
                async move { kv.delete(req).await }
            })
            .await?;
        Ok(resp.acks)
    }

    /// Reads `key`; if it has siblings, merges them with `merge` and writes
    /// the result back with the read's context, collapsing them. Returns the
    /// resolved value (None when the key is absent).
    pub async fn resolve<F>(
        &mut self,
        key: impl AsRef<[u8]>,
        merge: F,
    ) -> Result<Option<Bytes>, ClientError>
    where
        F: FnOnce(&[Sibling]) -> Bytes,
    {
        let key = key.as_ref();
        let got = self.get(key).await?;
        match got.siblings.len() {
            0 => Ok(None),
            1 => Ok(Some(got.siblings[0].value.clone())),
            _ => {
                let merged = merge(&got.siblings);
                self.put_with(key, merged.clone(), PutOptions::after(&got))
                    .await?;
                Ok(Some(merged))
            }
        }
    }
}

/// A client of a node's Admin API (internode port, 7001).
#[derive(Debug, Clone)]
pub struct Admin {
    admin: AdminClient<Transport>,
}

impl Admin {
    pub async fn connect(addr: &str) -> Result<Admin, ClientError> {
        Admin::connect_with(addr, &ConnectOptions::default()).await
    }

    /// [`Admin::connect`] to a secured cluster: with TLS on, Admin needs a
    /// client certificate (`identity`) and, with tokens on, an admin token.
    pub async fn connect_with(addr: &str, opts: &ConnectOptions) -> Result<Admin, ClientError> {
        Ok(Admin {
            admin: AdminClient::with_interceptor(channel(addr, opts).await?, opts.auth()?),
        })
    }

    pub async fn status(&mut self) -> Result<StatusResponse, ClientError> {
        Ok(self.admin.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// Stops the node accepting client requests (Kubernetes preStop).
    pub async fn drain(&mut self) -> Result<(), ClientError> {
        self.admin.drain(pb::DrainRequest {}).await?;
        Ok(())
    }

    /// Starts (or resumes, or reports) decommissioning the node.
    pub async fn decommission(&mut self) -> Result<pb::DecommissionStatus, ClientError> {
        Ok(self
            .admin
            .decommission(pb::DecommissionRequest {})
            .await?
            .into_inner()
            .status
            .unwrap_or_default())
    }

    /// Starts a Merkle anti-entropy repair; returns (started, repair id).
    pub async fn repair(&mut self) -> Result<(bool, u64), ClientError> {
        let r = self.admin.repair(pb::RepairRequest {}).await?.into_inner();
        Ok((r.started, r.repair_id))
    }

    /// Starts dropping what the node no longer replicates; returns
    /// (started, cleanup id). Refused while the ring is changing.
    pub async fn cleanup(&mut self) -> Result<(bool, u64), ClientError> {
        let r = self
            .admin
            .cleanup(pb::CleanupRequest {})
            .await?
            .into_inner();
        Ok((r.started, r.cleanup_id))
    }

    /// Starts (or resumes, or reports) removing the dead node `node_id`, with
    /// this node coordinating.
    pub async fn remove_node(
        &mut self,
        node_id: &str,
    ) -> Result<pb::RemoveNodeStatus, ClientError> {
        Ok(self
            .admin
            .remove_node(pb::RemoveNodeRequest {
                node_id: node_id.to_string(),
            })
            .await?
            .into_inner()
            .status
            .unwrap_or_default())
    }
}
