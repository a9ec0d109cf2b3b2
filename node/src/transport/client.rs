//! gRPC client for the Internode service, one lazily-connected channel per
//! peer address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internode_client::InternodeClient as Grpc;
use tonic::transport::{Channel, Endpoint};

use super::breaker::{Breakers, State};
use super::coalesce::Lane;
use super::faults::{CallKind, FaultInjector, Verdict};

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// `delivered`: the request arrived and only the reply was lost.
    #[error("{peer} unreachable (fault injected{})", if *delivered { ", reply lost" } else { "" })]
    Injected { peer: String, delivered: bool },
    #[error("{peer}: bad address {addr}: {reason}")]
    Address {
        peer: String,
        addr: String,
        reason: String,
    },
    #[error("{peer}: {status}")]
    Rpc { peer: String, status: tonic::Status },
    /// The peer took the call but refused this item of a coalesced call.
    #[error("{peer}: {message}")]
    Refused { peer: String, message: String },
    #[error("peer answered a malformed reply: {0}")]
    Protocol(String),
    #[error("{what} was dropped before it answered")]
    Dropped { what: &'static str },
    #[error("{peer} did not answer within {after:?}")]
    Timeout { peer: String, after: Duration },
}

impl TransportError {
    /// True when the request certainly never reached the peer's handler
    /// (refused connection, injected drop), so retrying elsewhere is safe.
    pub fn not_delivered(&self) -> bool {
        match self {
            TransportError::Injected { delivered, .. } => !delivered,
            TransportError::Address { .. } => true,
            TransportError::Refused { .. }
            | TransportError::Protocol(_)
            | TransportError::Dropped { .. }
            | TransportError::Timeout { .. } => false,
            TransportError::Rpc { status, .. } => {
                use std::error::Error as _;
                // Statuses the server sent carry no source; tonic's own
                // connection failures do.
                status.code() == tonic::Code::Unavailable && status.source().is_some()
            }
        }
    }

    /// True when the peer's handler itself answered (a status the server
    /// sent), as opposed to the connection failing around the call.
    pub fn answered(&self) -> bool {
        use std::error::Error as _;
        match self {
            TransportError::Rpc { status, .. } => status.source().is_none(),
            TransportError::Refused { .. } => true,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            TransportError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

type WriteLane = Lane<pb::ReplicaWrite, Result<(), TransportError>>;
/// A key and its request's trace context.
type ReadLane = Lane<(Bytes, String), pb::ReplicaRead>;
/// The gRPC client, sending the caller's trace context (`telemetry`).
type Traced =
    Grpc<tonic::service::interceptor::InterceptedService<Channel, crate::telemetry::Propagate>>;

/// A peer's connection and its coalescing lanes.
#[derive(Clone)]
struct Peer {
    channel: Channel,
    writes: Arc<WriteLane>,
    reads: Arc<ReadLane>,
}

#[derive(Clone)]
pub struct InternodeClient {
    me: String,
    faults: Arc<FaultInjector>,
    peers: Arc<Mutex<HashMap<String, Peer>>>,
    connect_timeout: Duration,
    /// Payload bytes per coalesced call (the peer accepts twice this).
    max_batch_bytes: usize,
    /// Request-path calls give up after this (the request timeout).
    call_timeout: Duration,
    breakers: Arc<Breakers>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Set: peers are dialled over mutual TLS with the node's certificate.
    tls: Option<Arc<crate::security::Tls>>,
}

impl std::fmt::Debug for InternodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternodeClient")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl InternodeClient {
    /// `max_batch_bytes`: payload of one coalesced call; peers accept
    /// messages of twice that (max_value_bytes + 256 KiB, doubled).
    /// `timeout` bounds connecting and every request-path call.
    pub fn new(
        me: &str,
        faults: Arc<FaultInjector>,
        timeout: Duration,
        max_batch_bytes: usize,
    ) -> Self {
        InternodeClient {
            me: me.to_string(),
            faults,
            peers: Arc::default(),
            connect_timeout: timeout,
            max_batch_bytes,
            call_timeout: timeout,
            breakers: Arc::default(),
            metrics: None,
            tls: None,
        }
    }

    /// Dials peers over mutual TLS (`tls_mode` enabled or required).
    pub fn with_tls(mut self, tls: Option<Arc<crate::security::Tls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Counts breaker trips in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether request-path calls to `peer` keep failing (see `breaker`):
    /// the coordinator routes around it even while gossip calls it alive.
    pub fn is_suspect(&self, peer: &str) -> bool {
        match self.breakers.state(peer) {
            State::Closed => false,
            State::Open => true,
            State::Probe(addr) => {
                let (this, peer) = (self.clone(), peer.to_string());
                tokio::spawn(async move {
                    // An empty read: cheap, and answered only by a live peer.
                    let call = this.call(CallKind::Probe, &peer, &addr, |mut c| async move {
                        c.replica_reads(pb::ReplicaReadsRequest::default()).await
                    });
                    let _ = this.guarded(&peer, &addr, call).await;
                });
                true
            }
        }
    }

    /// Forgets `peer`'s failures (gossip hears from it again, or it
    /// restarted): requests go to it at once instead of after a probe.
    pub fn forgive(&self, peer: &str) {
        self.breakers.success(peer);
    }

    /// Peers currently avoided by the request path (probed or not).
    pub fn suspects(&self) -> Vec<String> {
        self.breakers.suspects()
    }

    /// Runs a request-path call with the call timeout, and tells `peer`'s
    /// breaker how it went: any failure but the peer's own verdict on the
    /// request counts against it.
    async fn guarded<T>(
        &self,
        peer: &str,
        addr: &str,
        call: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        self.guarded_within(peer, addr, self.call_timeout, call)
            .await
    }

    async fn guarded_within<T>(
        &self,
        peer: &str,
        addr: &str,
        within: Duration,
        call: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let res = match tokio::time::timeout(within, call).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                peer: peer.to_string(),
                after: within,
            }),
        };
        match &res {
            Err(e) if !e.answered() => {
                if self.breakers.failure(peer, addr) {
                    tracing::warn!(%peer, error = %e, "requests to this peer keep failing; routing around it for a while");
                    if let Some(m) = &self.metrics {
                        m.peers_suspected.inc();
                    }
                }
            }
            _ => self.breakers.success(peer),
        }
        res
    }

    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    fn channel(&self, peer: &str, addr: &str) -> Result<Channel, TransportError> {
        self.peer(peer, addr).map(|p| p.channel)
    }

    fn peer(&self, peer: &str, addr: &str) -> Result<Peer, TransportError> {
        if let Some(p) = self.peers.lock().get(addr) {
            return Ok(p.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TransportError::Address {
                peer: peer.into(),
                addr: addr.into(),
                reason: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = match &self.tls {
            Some(tls) => {
                ep.connect_with_connector_lazy(crate::security::tls::Connector(tls.clone()))
            }
            None => ep.connect_lazy(),
        };
        let p = Peer {
            channel,
            writes: Lane::new(self.max_batch_bytes),
            reads: Lane::new(self.max_batch_bytes),
        };
        Ok(self
            .peers
            .lock()
            .entry(addr.to_string())
            .or_insert(p)
            .clone())
    }

    /// Runs one call to `peer` at `addr` through the fault layer.
    async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        peer: &str,
        addr: &str,
        f: F,
    ) -> Result<T, TransportError>
    where
        F: FnOnce(Traced) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let verdict = self.faults.verdict(kind, &self.me, peer);
        match verdict {
            Verdict::Drop => {
                return Err(TransportError::Injected {
                    peer: peer.into(),
                    delivered: false,
                });
            }
            Verdict::Delay(d) => tokio::time::sleep(d).await,
            Verdict::Pass | Verdict::DropReply => {}
        }
        let ch = self.channel(peer, addr)?;
        let res = f(Grpc::with_interceptor(ch, crate::telemetry::Propagate)
            .max_decoding_message_size(80 << 20)
            .max_encoding_message_size(80 << 20))
        .await;
        if verdict == Verdict::DropReply {
            return Err(TransportError::Injected {
                peer: peer.into(),
                delivered: true,
            });
        }
        res.map(|r| r.into_inner())
            .map_err(|status| TransportError::Rpc {
                peer: peer.into(),
                status,
            })
    }

    /// Merges `record` into `peer`'s copy of `key` (or, with `hint_for`,
    /// leaves it there as a hint), coalesced with the other replica writes
    /// to `peer` in flight.
    pub async fn replica_write(
        &self,
        peer: &str,
        addr: &str,
        key: Bytes,
        record: pb::Record,
        hint_for: Option<String>,
    ) -> Result<(), TransportError> {
        use prost::Message as _;
        let lane = self.peer(peer, addr)?.writes;
        let size = key.len() + record.encoded_len() + 16;
        let item = pb::ReplicaWrite {
            key,
            record: Some(record),
            hint_for: hint_for.unwrap_or_default(),
            traceparent: crate::telemetry::current_traceparent(),
        };
        let (this, id, at) = (self.clone(), peer.to_string(), addr.to_string());
        lane.submit(item, size, move |writes| {
            let (this, id, at) = (this.clone(), id.clone(), at.clone());
            async move {
                let resp = this
                    .guarded(
                        &id,
                        &at,
                        this.call(CallKind::Write, &id, &at, |mut c| async move {
                            c.replica_writes(pb::ReplicaWritesRequest { writes }).await
                        }),
                    )
                    .await?;
                Ok(resp
                    .errors
                    .into_iter()
                    .map(|e| {
                        if e.is_empty() {
                            Ok(())
                        } else {
                            Err(TransportError::Refused {
                                peer: id.clone(),
                                message: e,
                            })
                        }
                    })
                    .collect())
            }
        })
        .await?
    }

    /// `peer`'s record of `key`, coalesced with the other replica reads to
    /// `peer` in flight.
    pub async fn replica_read(
        &self,
        peer: &str,
        addr: &str,
        key: Bytes,
    ) -> Result<Option<pb::Record>, TransportError> {
        let lane = self.peer(peer, addr)?.reads;
        let traceparent = crate::telemetry::current_traceparent();
        loop {
            let (this, id, at) = (self.clone(), peer.to_string(), addr.to_string());
            let got = lane
                .submit(
                    (key.clone(), traceparent.clone()),
                    key.len() + 16,
                    move |items| {
                        let (this, id, at) = (this.clone(), id.clone(), at.clone());
                        async move {
                            let (keys, traceparents): (Vec<Bytes>, Vec<String>) =
                                items.into_iter().unzip();
                            let traceparents = if traceparents.iter().all(String::is_empty) {
                                Vec::new()
                            } else {
                                traceparents
                            };
                            let resp = this
                                .guarded(
                                    &id,
                                    &at,
                                    this.call(CallKind::Read, &id, &at, |mut c| async move {
                                        c.replica_reads(pb::ReplicaReadsRequest {
                                            keys,
                                            traceparents,
                                        })
                                        .await
                                    }),
                                )
                                .await?;
                            Ok(resp.reads)
                        }
                    },
                )
                .await?;
            if got.deferred {
                // The peer's reply filled up before this key: ask again.
                continue;
            }
            if !got.error.is_empty() {
                return Err(TransportError::Refused {
                    peer: peer.to_string(),
                    message: got.error,
                });
            }
            return Ok(got.record);
        }
    }

    /// Forwards a client write to `peer` to coordinate; gives up after
    /// `within` (a timeout counts against the peer's breaker).
    pub async fn coordinate(
        &self,
        peer: &str,
        addr: &str,
        req: pb::CoordinateWriteRequest,
        within: Duration,
    ) -> Result<pb::CoordinateWriteResponse, TransportError> {
        let call = self.call(CallKind::Coordinate, peer, addr, |mut c| async move {
            c.coordinate_write(req).await
        });
        self.guarded_within(peer, addr, within, call).await
    }

    /// Merges a batch of records on `peer` (hand-off, repair pushes):
    /// bounded by ten request timeouts, which is ample for a batch of at
    /// most a few MiB and keeps a peer that swallows requests from holding
    /// hand-off up for good.
    pub async fn write_batch(
        &self,
        peer: &str,
        addr: &str,
        items: Vec<pb::KeyRecord>,
    ) -> Result<(), TransportError> {
        let call = self.call(CallKind::WriteBatch, peer, addr, |mut c| async move {
            c.write_batch(pb::WriteBatchRequest { items }).await
        });
        self.guarded_within(peer, addr, self.call_timeout * 10, call)
            .await
            .map(|_| ())
    }

    pub async fn merkle_tree(
        &self,
        peer: &str,
        addr: &str,
        req: pb::MerkleTreeRequest,
    ) -> Result<pb::MerkleTreeResponse, TransportError> {
        self.call(CallKind::Repair, peer, addr, |mut c| async move {
            c.merkle_tree(req).await
        })
        .await
    }

    pub async fn merkle_nodes(
        &self,
        peer: &str,
        addr: &str,
        req: pb::MerkleNodesRequest,
    ) -> Result<pb::MerkleNodesResponse, TransportError> {
        self.call(CallKind::Repair, peer, addr, |mut c| async move {
            c.merkle_nodes(req).await
        })
        .await
    }

    pub async fn range_digest(
        &self,
        peer: &str,
        addr: &str,
        req: pb::RangeDigestRequest,
    ) -> Result<pb::RangeDigestResponse, TransportError> {
        self.call(CallKind::Repair, peer, addr, |mut c| async move {
            c.range_digest(req).await
        })
        .await
    }

    pub async fn fetch_range(
        &self,
        peer: &str,
        addr: &str,
        req: pb::FetchRangeRequest,
    ) -> Result<tonic::Streaming<pb::KeyRecords>, TransportError> {
        self.call(CallKind::Repair, peer, addr, |mut c| async move {
            c.fetch_range(req).await
        })
        .await
    }
}
