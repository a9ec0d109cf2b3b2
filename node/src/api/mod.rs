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
use crate::coordinator::consistency::Level;
use crate::coordinator::{CoordError, Coordinator, InvalidInput, WriteOutcome, WriteRequest};
use crate::membership::Membership;
use crate::metrics::{Metrics, OpLabels, RequestLabels};

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
    pub membership: Membership,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub started: Instant,
    pub repair: Arc<crate::repair::Repairer>,
    pub moves: Arc<crate::repair::Moves>,
}

/// Metrics label for a request's consistency string, from a closed set:
/// `default | one | quorum | all | 1..=16 | invalid`. Anything that is not a
/// level valid for replication factor `n` is `invalid`, so no client input
/// can add a series (issue 9, finding 4).
pub fn consistency_label(s: &str, n: u32) -> &'static str {
    const COUNTS: [&str; 16] = [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    match Level::parse(s) {
        Ok(None) => "default",
        Ok(Some(l)) => match (l, l.required(n)) {
            (_, Err(_)) => "invalid",
            (Level::One, _) => "one",
            (Level::Quorum, _) => "quorum",
            (Level::All, _) => "all",
            (Level::Count(k), _) => COUNTS.get(k as usize - 1).copied().unwrap_or("invalid"),
        },
        Err(_) => "invalid",
    }
}

pub fn outcome_label(e: &CoordError) -> &'static str {
    match e {
        CoordError::Invalid(_) => "invalid",
        CoordError::QuorumNotReached { .. } => "quorum_failed",
        CoordError::Unavailable(_) | CoordError::Remote { .. } => "unavailable",
        CoordError::Storage(_) => "error",
    }
}

impl ApiState {
    /// A client delete (HTTP and gRPC). With a context it supersedes
    /// exactly the versions that context saw. Without one it deletes what a
    /// read at the default read quorum sees now (as Riak's delete does):
    /// before, a context-less tombstone was only a sibling and the value
    /// stayed readable. A value written concurrently with that read
    /// survives as a sibling, never silently lost.
    pub async fn delete(
        &self,
        key: bytes::Bytes,
        context: String,
        w: String,
    ) -> Result<WriteOutcome, CoordError> {
        let context = if context.trim().is_empty() {
            self.coord.get(key.clone(), "").await?.context
        } else {
            context
        };
        let req = WriteRequest {
            key,
            value: None,
            context,
            ttl_ms: 0,
            w,
        };
        self.coord.write(req, 0).await
    }

    /// Copies what other layers count into the metrics, before a scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.undecodable_records
            .inner()
            .store(self.coord.store().undecodable_records(), Ordering::Relaxed);
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

    /// Records a finished request in the metrics.
    pub fn observe(
        &self,
        op: &'static str,
        consistency: &str,
        started: Instant,
        outcome: &'static str,
    ) {
        let consistency = consistency_label(consistency, self.config.n);
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
        CoordError::Storage(s) => tonic::Status::internal(s.to_string()),
    }
}

/// Is this invalid input a too-large value (HTTP 413)?
pub fn is_too_large(i: &InvalidInput) -> bool {
    matches!(i, InvalidInput::ValueTooLarge { .. })
}
