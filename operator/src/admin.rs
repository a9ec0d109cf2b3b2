//! Client side of the node Admin gRPC API (port 7001): the only way the
//! operator talks to nodes.
//!
//! Channels are created lazily and cached per endpoint; every call has a short
//! timeout so one dead node cannot stall a reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::build::PORT_INTERNODE;
use crate::names;
use crate::observe::{DecommissionReport, NodeReport, RemovalPhase, RemovalReport};

/// Which node to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub namespace: String,
    pub cluster: String,
    /// Pod name = node id.
    pub pod: String,
    /// Trust and identity when the cluster runs with TLS.
    pub tls: Option<Arc<AdminTls>>,
    /// Bearer token (an `admin` one) when the cluster authenticates clients.
    pub token: Option<Arc<String>>,
}

/// What the operator trusts and presents on a cluster's Admin port (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    /// PEM CA bundle the node certificates must chain to.
    pub ca: Vec<u8>,
    /// PEM client certificate and key signed by the cluster CA.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl AdminTls {
    /// Distinguishes channels: a renewed certificate gets a new connection.
    fn fingerprint(&self) -> String {
        let mut all = self.ca.clone();
        if let Some((c, k)) = &self.identity {
            all.extend_from_slice(c);
            all.extend_from_slice(k);
        }
        crate::build::fnv1a_hex(&all)
    }
}

/// Maps a node to `host:port` of its Admin API.
pub type Resolver = Arc<dyn Fn(&NodeAddr) -> String + Send + Sync>;

/// Errors from an Admin call, typed so the planner can tell "try later" from "refused".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    #[error("node {node} refused: {message}")]
    FailedPrecondition { node: String, message: String },
    #[error("node {node} answered {code}: {message}")]
    Rpc {
        node: String,
        code: String,
        message: String,
    },
    #[error("bad admin endpoint {endpoint:?} for node {node}: {reason}")]
    BadEndpoint {
        node: String,
        endpoint: String,
        reason: String,
    },
}

impl AdminError {
    fn from_status(node: &str, timeout: Duration, s: tonic::Status) -> Self {
        let node = node.to_string();
        match s.code() {
            tonic::Code::FailedPrecondition => Self::FailedPrecondition {
                node,
                message: s.message().to_string(),
            },
            tonic::Code::DeadlineExceeded => Self::Timeout { node, timeout },
            tonic::Code::Unavailable | tonic::Code::Unknown
                if s.message().contains("transport") =>
            {
                Self::Unreachable {
                    node,
                    reason: s.message().to_string(),
                }
            }
            tonic::Code::Unavailable => Self::Unreachable {
                node,
                reason: s.message().to_string(),
            },
            code => Self::Rpc {
                node,
                code: format!("{code:?}"),
                message: s.message().to_string(),
            },
        }
    }
}

/// Outcome of `Admin.Repair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairStarted {
    /// False when a repair was already running (its id is returned).
    pub started: bool,
    pub repair_id: u64,
}

/// Outcome of `Admin.Cleanup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupStarted {
    /// False when a cleanup was already running (its id is returned).
    pub started: bool,
    pub cleanup_id: u64,
}

/// Pool of Admin clients.
#[derive(Clone)]
pub struct AdminPool {
    resolver: Resolver,
    timeout: Duration,
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for AdminPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPool")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AdminPool {
    /// Nodes reached through their stable DNS name on the peer Service
    /// (in-cluster); `cluster_domain` is the Kubernetes cluster's DNS domain.
    pub fn in_cluster(timeout: Duration, cluster_domain: String) -> Self {
        Self::with_resolver(
            Arc::new(move |a: &NodeAddr| {
                format!(
                    "{}:{PORT_INTERNODE}",
                    names::pod_dns(&a.cluster, &a.namespace, &a.pod, &cluster_domain)
                )
            }),
            timeout,
        )
    }

    /// Nodes reached through a custom mapping (tests, or an operator running
    /// outside the cluster with port-forwards).
    pub fn with_resolver(resolver: Resolver, timeout: Duration) -> Self {
        Self {
            resolver,
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(2)),
            channels: Arc::default(),
        }
    }

    fn client(&self, addr: &NodeAddr) -> Result<AdminClient<Channel>, AdminError> {
        let hostport = (self.resolver)(addr);
        let scheme = if addr.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{hostport}");
        let key = match &addr.tls {
            Some(t) => format!("{uri}#{}", t.fingerprint()),
            None => uri.clone(),
        };
        let mut cache = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = cache.get(&key) {
            return Ok(AdminClient::new(ch.clone()));
        }
        let bad = |reason: String| AdminError::BadEndpoint {
            node: addr.pod.clone(),
            endpoint: uri.clone(),
            reason,
        };
        let mut ep = Endpoint::from_shared(uri.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        if let Some(tls) = &addr.tls {
            let host = hostport
                .rsplit_once(':')
                .map_or(hostport.as_str(), |(h, _)| h)
                .to_string();
            let mut cfg = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(tls.ca.as_slice()))
                .domain_name(host);
            if let Some((cert, key)) = &tls.identity {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            ep = ep.tls_config(cfg).map_err(|e| bad(e.to_string()))?;
        }
        let ch = ep.connect_lazy();
        cache.insert(key, ch.clone());
        Ok(AdminClient::new(ch))
    }

    /// `msg` as a request carrying the node's bearer token, if any.
    fn request<M>(addr: &NodeAddr, msg: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &addr.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    async fn call<T, F, Fut>(&self, addr: &NodeAddr, f: F) -> Result<T, AdminError>
    where
        F: FnOnce(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client(addr)?;
        // The channel timeout covers the request; this also bounds connection set-up.
        match tokio::time::timeout(self.timeout + self.connect_timeout, f(client)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(AdminError::from_status(&addr.pod, self.timeout, status)),
            Err(_) => Err(AdminError::Timeout {
                node: addr.pod.clone(),
                timeout: self.timeout,
            }),
        }
    }

    pub async fn status(&self, addr: &NodeAddr) -> Result<NodeReport, AdminError> {
        let req = Self::request(addr, pb::StatusRequest {});
        let s = self
            .call(addr, |mut c| async move { c.status(req).await })
            .await?;
        Ok(NodeReport::from(&s))
    }

    /// Starts or resumes a decommission; returns its progress.
    pub async fn decommission(&self, addr: &NodeAddr) -> Result<DecommissionReport, AdminError> {
        let req = Self::request(addr, pb::DecommissionRequest {});
        let r = self
            .call(addr, |mut c| async move { c.decommission(req).await })
            .await?;
        Ok(r.status
            .as_ref()
            .map(DecommissionReport::from)
            .unwrap_or(DecommissionReport {
                phase: crate::observe::DecommissionPhase::Unknown,
                ranges_total: 0,
                ranges_done: 0,
                keys_streamed: 0,
                error: String::new(),
            }))
    }

    pub async fn repair(&self, addr: &NodeAddr) -> Result<RepairStarted, AdminError> {
        let req = Self::request(addr, pb::RepairRequest {});
        let r = self
            .call(addr, |mut c| async move { c.repair(req).await })
            .await?;
        Ok(RepairStarted {
            started: r.started,
            repair_id: r.repair_id,
        })
    }

    /// Starts a cleanup (drop what the node no longer replicates).
    pub async fn cleanup(&self, addr: &NodeAddr) -> Result<CleanupStarted, AdminError> {
        let req = Self::request(addr, pb::CleanupRequest {});
        let r = self
            .call(addr, |mut c| async move { c.cleanup(req).await })
            .await?;
        Ok(CleanupStarted {
            started: r.started,
            cleanup_id: r.cleanup_id,
        })
    }

    /// Asks `addr`'s node to remove (or resume removing) the dead `node`;
    /// returns the removal's progress.
    pub async fn remove_node(
        &self,
        addr: &NodeAddr,
        node: &str,
    ) -> Result<RemovalReport, AdminError> {
        let node_id = node.to_string();
        let req = Self::request(addr, pb::RemoveNodeRequest { node_id });
        let r = self
            .call(addr, |mut c| async move { c.remove_node(req).await })
            .await?;
        Ok(r.status
            .as_ref()
            .map(RemovalReport::from)
            .unwrap_or(RemovalReport {
                node_id: node.to_string(),
                phase: RemovalPhase::Unknown,
                ranges_total: 0,
                ranges_done: 0,
                keys_streamed: 0,
                error: String::new(),
            }))
    }
}

/// Object-store options (credentials) passed with every backup call.
pub type StoreOptions = std::collections::HashMap<String, String>;

impl AdminPool {
    /// Starts this node's part of cluster backup `backup_id` (resumes it if running).
    pub async fn backup(
        &self,
        addr: &NodeAddr,
        url: &str,
        backup_id: &str,
        rate_limit_bytes_per_sec: u64,
        options: StoreOptions,
    ) -> Result<bool, AdminError> {
        let req = Self::request(
            addr,
            pb::BackupRequest {
                url: url.to_string(),
                backup_id: backup_id.to_string(),
                rate_limit_bytes_per_sec,
                options,
            },
        );
        let r = self
            .call(addr, |mut c| async move { c.backup(req).await })
            .await?;
        Ok(r.started)
    }

    /// Applies retention and deletes objects no kept backup names.
    /// Returns (backups deleted, bytes freed).
    pub async fn prune_backups(
        &self,
        addr: &NodeAddr,
        url: &str,
        keep_last: u32,
        max_age_seconds: u64,
        options: StoreOptions,
    ) -> Result<(Vec<String>, u64), AdminError> {
        let req = Self::request(
            addr,
            pb::PruneBackupsRequest {
                url: url.to_string(),
                keep_last,
                max_age_seconds,
                // Objects younger than a day may belong to a backup in flight.
                min_object_age_seconds: 86_400,
                dry_run: false,
                options,
            },
        );
        let r = self
            .call(addr, |mut c| async move { c.prune_backups(req).await })
            .await?;
        Ok((r.deleted, r.bytes_freed))
    }

    /// Starts loading a whole cluster backup through this node (verified first).
    pub async fn restore(
        &self,
        addr: &NodeAddr,
        url: &str,
        backup_id: &str,
        options: StoreOptions,
    ) -> Result<bool, AdminError> {
        let req = Self::request(
            addr,
            pb::RestoreRequest {
                url: url.to_string(),
                backup_id: backup_id.to_string(),
                options,
            },
        );
        let r = self
            .call(addr, |mut c| async move { c.restore(req).await })
            .await?;
        Ok(r.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(pod: &str) -> NodeAddr {
        NodeAddr {
            namespace: "db".into(),
            cluster: "kv".into(),
            pod: pod.into(),
            tls: None,
            token: None,
        }
    }

    #[test]
    fn status_codes_map_to_typed_errors() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            AdminError::from_status("n", t, tonic::Status::failed_precondition("would leave 2 < N=3")),
            AdminError::FailedPrecondition { message, .. } if message.contains("N=3")
        ));
        assert!(matches!(
            AdminError::from_status("n", t, tonic::Status::unavailable("down")),
            AdminError::Unreachable { .. }
        ));
        assert!(matches!(
            AdminError::from_status("n", t, tonic::Status::deadline_exceeded("slow")),
            AdminError::Timeout { .. }
        ));
        assert!(matches!(
            AdminError::from_status("n", t, tonic::Status::internal("boom")),
            AdminError::Rpc { code, .. } if code == "Internal"
        ));
    }

    #[tokio::test]
    async fn an_unreachable_node_fails_fast() {
        // Port 1 on loopback: connection refused.
        let pool = AdminPool::with_resolver(
            Arc::new(|_| "127.0.0.1:1".to_string()),
            Duration::from_millis(500),
        );
        let start = std::time::Instant::now();
        let err = pool.status(&addr("kv-zone-a-0")).await.unwrap_err();
        assert!(
            matches!(
                err,
                AdminError::Unreachable { .. } | AdminError::Timeout { .. }
            ),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_malformed_endpoint_is_reported() {
        let pool = AdminPool::with_resolver(
            Arc::new(|_| "bad host:x".to_string()),
            Duration::from_millis(100),
        );
        assert!(matches!(
            pool.client(&addr("p")),
            Err(AdminError::BadEndpoint { .. })
        ));
    }

    #[test]
    fn in_cluster_resolver_uses_the_pod_dns_name() {
        let pool = AdminPool::in_cluster(Duration::from_secs(1), "cluster.local".into());
        assert_eq!(
            (pool.resolver)(&addr("kv-zone-a-0")),
            "kv-zone-a-0.kv-peers.db.svc.cluster.local:7001"
        );
        let pool = AdminPool::in_cluster(Duration::from_secs(1), "corp.example".into());
        assert_eq!(
            (pool.resolver)(&addr("kv-zone-a-0")),
            "kv-zone-a-0.kv-peers.db.svc.corp.example:7001"
        );
    }
}
