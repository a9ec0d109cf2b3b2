//! gRPC client for the Internode service, one lazily-connected channel per
//! peer address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internode_client::InternodeClient as Grpc;
use tonic::transport::{Channel, Endpoint};

use super::faults::{FaultInjector, Verdict};

#[derive(Debug, Clone, thiserror::Error)]
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
}

impl TransportError {
    /// True when the request certainly never reached the peer's handler
    /// (refused connection, injected drop), so retrying elsewhere is safe.
    pub fn not_delivered(&self) -> bool {
        match self {
            TransportError::Injected { delivered, .. } => !delivered,
            TransportError::Address { .. } => true,
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
        matches!(self, TransportError::Rpc { status, .. } if status.source().is_none())
    }

    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            TransportError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InternodeClient {
    me: String,
    faults: Arc<FaultInjector>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
}

impl InternodeClient {
    pub fn new(me: &str, faults: Arc<FaultInjector>, connect_timeout: Duration) -> Self {
        InternodeClient {
            me: me.to_string(),
            faults,
            channels: Arc::default(),
            connect_timeout,
        }
    }

    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    fn channel(&self, peer: &str, addr: &str) -> Result<Channel, TransportError> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
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
        let ch = ep.connect_lazy();
        self.channels.lock().insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Runs one call to `peer` at `addr` through the fault layer.
    async fn call<T, F, Fut>(&self, peer: &str, addr: &str, f: F) -> Result<T, TransportError>
    where
        F: FnOnce(Grpc<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let verdict = self.faults.verdict(&self.me, peer);
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
        let res = f(Grpc::new(ch)
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

    pub async fn read(
        &self,
        peer: &str,
        addr: &str,
        key: bytes::Bytes,
    ) -> Result<pb::ReadReplicaResponse, TransportError> {
        self.call(peer, addr, |mut c| async move {
            c.read_replica(pb::ReadReplicaRequest { key }).await
        })
        .await
    }

    pub async fn write(
        &self,
        peer: &str,
        addr: &str,
        key: bytes::Bytes,
        record: pb::Record,
    ) -> Result<(), TransportError> {
        self.call(peer, addr, |mut c| async move {
            c.write_replica(pb::WriteReplicaRequest {
                key,
                record: Some(record),
                hint_for: String::new(),
            })
            .await
        })
        .await
        .map(|_| ())
    }

    pub async fn coordinate(
        &self,
        peer: &str,
        addr: &str,
        req: pb::CoordinateWriteRequest,
    ) -> Result<pb::CoordinateWriteResponse, TransportError> {
        self.call(
            peer,
            addr,
            |mut c| async move { c.coordinate_write(req).await },
        )
        .await
    }

    /// Hands a write to a substitute, to keep as a hint for `owner`.
    pub async fn write_hint(
        &self,
        peer: &str,
        addr: &str,
        key: bytes::Bytes,
        record: pb::Record,
        owner: String,
    ) -> Result<(), TransportError> {
        self.call(peer, addr, |mut c| async move {
            c.write_replica(pb::WriteReplicaRequest {
                key,
                record: Some(record),
                hint_for: owner,
            })
            .await
        })
        .await
        .map(|_| ())
    }

    pub async fn write_batch(
        &self,
        peer: &str,
        addr: &str,
        items: Vec<pb::KeyRecord>,
    ) -> Result<(), TransportError> {
        self.call(peer, addr, |mut c| async move {
            c.write_batch(pb::WriteBatchRequest { items }).await
        })
        .await
        .map(|_| ())
    }

    pub async fn merkle_tree(
        &self,
        peer: &str,
        addr: &str,
        req: pb::MerkleTreeRequest,
    ) -> Result<pb::MerkleTreeResponse, TransportError> {
        self.call(peer, addr, |mut c| async move { c.merkle_tree(req).await })
            .await
    }

    pub async fn merkle_nodes(
        &self,
        peer: &str,
        addr: &str,
        req: pb::MerkleNodesRequest,
    ) -> Result<pb::MerkleNodesResponse, TransportError> {
        self.call(peer, addr, |mut c| async move { c.merkle_nodes(req).await })
            .await
    }

    pub async fn range_digest(
        &self,
        peer: &str,
        addr: &str,
        req: pb::RangeDigestRequest,
    ) -> Result<pb::RangeDigestResponse, TransportError> {
        self.call(peer, addr, |mut c| async move { c.range_digest(req).await })
            .await
    }

    pub async fn fetch_range(
        &self,
        peer: &str,
        addr: &str,
        req: pb::FetchRangeRequest,
    ) -> Result<tonic::Streaming<pb::KeyRecords>, TransportError> {
        self.call(peer, addr, |mut c| async move { c.fetch_range(req).await })
            .await
    }
}
