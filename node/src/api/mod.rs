//! The node's outward faces: client gRPC (`ringkv.v1.KeyValue`), HTTP/JSON,
//! the internode replica service and the Admin service. Handlers validate,
//! call the coordinator, and map its typed errors to status codes.

pub mod admin;
pub mod grpc;
pub mod http;
pub mod internode;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Config;
use crate::coordinator::consistency::{self, Level};
use crate::coordinator::{CoordError, Coordinator, InvalidInput};
use crate::membership::Membership;
use crate::metrics::{Metrics, OpLabels, RequestLabels};
use crate::replica::Replica;

/// Admission control for client requests: closed by Drain, counting what is
/// in flight so Drain can wait for it.
#[derive(Debug, Default)]
pub struct Gate {
    draining: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
}

#[derive(Debug, thiserror::Error)]
#[error("node is draining: it no longer accepts client requests, use another node")]
pub struct Draining;

impl From<Draining> for tonic::Status {
    fn from(e: Draining) -> Self {
        tonic::Status::unavailable(e.to_string())
    }
}

pub struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Gate {
    pub fn enter(&self) -> Result<Pass<'_>, Draining> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let pass = Pass(self);
        if self.draining.load(Ordering::Acquire) {
            return Err(Draining);
        }
        Ok(pass)
    }

    /// Closes the gate without waiting (a node that has LEFT the ring).
    pub fn close(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Closes the gate and waits (up to `timeout`) for in-flight requests.
    pub async fn drain(&self, timeout: Duration) {
        self.draining.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }
}

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub coord: Arc<Coordinator>,
    pub replica: Arc<Replica>,
    pub membership: Membership,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub started: Instant,
    pub repair: Arc<crate::repair::Repairer>,
    pub moves: Arc<crate::repair::Moves>,
    pub cleanup: Arc<crate::repair::Cleaner>,
    pub remover: Arc<crate::repair::Remover>,
    pub backups: Arc<crate::backup::Backups>,
}

pub fn outcome_label(e: &CoordError) -> &'static str {
    match e {
        CoordError::Invalid(_) => "invalid",
        CoordError::QuorumNotReached { .. } => "quorum_failed",
        CoordError::Unavailable(_) | CoordError::Remote { .. } => "unavailable",
        CoordError::Expired { .. } => "expired",
        CoordError::Storage(s) if s.is_no_space() => "no_space",
        _ => "error",
    }
}

impl ApiState {
    /// The context a client delete (HTTP and gRPC) is written with. With
    /// a context it supersedes exactly the versions that context saw.
    /// Without one it deletes what a read at the default read quorum sees
    /// now (as Riak's delete does): a context-less tombstone used to be only
    /// a sibling, and the value stayed readable. A value written
    /// concurrently with that read survives as a sibling, never lost.
    pub async fn delete_context(
        &self,
        key: &bytes::Bytes,
        context: String,
    ) -> Result<String, CoordError> {
        if !context.trim().is_empty() {
            return Ok(context);
        }
        Ok(self.coord.get(key.clone(), None).await?.context)
    }

    /// Copies what other layers count into the metrics, before a scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.undecodable_records.inner().store(
            self.replica.store().undecodable_records(),
            Ordering::Relaxed,
        );
        for (reason, n) in self.membership.gossip_dropped() {
            m.gossip_dropped
                .get_or_create(&crate::metrics::ReasonLabel { reason })
                .inner()
                .store(n, Ordering::Relaxed);
        }
        m.gossip_accepted
            .inner()
            .store(self.membership.gossip_accepted(), Ordering::Relaxed);
        m.gossip_implausible
            .set(self.membership.implausible_incarnations() as i64);
    }

    /// Records a finished request in the metrics (`level`: the parsed
    /// consistency level, `Err` when it did not parse).
    pub fn observe(
        &self,
        op: &'static str,
        level: Result<Option<Level>, ()>,
        started: Instant,
        outcome: &'static str,
    ) {
        let consistency = level.map_or("invalid", consistency::label);
        self.metrics
            .latency
            .get_or_create(&OpLabels { op, consistency })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                op,
                consistency,
                outcome,
            })
            .inc();
    }
}

/// gRPC status of a coordinator error.
pub fn to_status(e: CoordError) -> tonic::Status {
    match e {
        CoordError::Invalid(i) => tonic::Status::invalid_argument(i.to_string()),
        e @ CoordError::QuorumNotReached { .. } => tonic::Status::unavailable(e.to_string()),
        CoordError::Unavailable(m) => tonic::Status::unavailable(m),
        CoordError::Remote { code, message } => tonic::Status::new(code, message),
        e @ CoordError::Expired { .. } => tonic::Status::deadline_exceeded(e.to_string()),
        CoordError::Storage(s) if s.is_no_space() => tonic::Status::resource_exhausted(format!(
            "{s}: this node's disk is full; writes resume by themselves once space is freed"
        )),
        e => tonic::Status::internal(e.to_string()),
    }
}

/// Is this invalid input a too-large value (HTTP 413)?
pub fn is_too_large(i: &InvalidInput) -> bool {
    matches!(i, InvalidInput::ValueTooLarge { .. })
}
