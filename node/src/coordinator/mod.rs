//! Quorum coordination. Any node takes any request: reads fan out to all N
//! replicas and answer after R replies; writes are coordinated by a replica
//! (which mints the causal dot), fan out to all N and answer after W acks.
//! Late replies still arrive and feed background read repair.

pub mod consistency;
pub mod error;
pub mod validate;
mod write;

pub use crate::replica::now_ms;
pub use consistency::Level;
pub use error::{CoordError, InvalidInput};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::Instrument;

use crate::config::{Config, ConflictMode, SpeculativeRetry};
use crate::membership::Member;
use crate::metrics::{Metrics, OnlyOp};
use crate::replica::Replica;
use crate::ring::{SharedTopology, Topology};
use crate::transport::InternodeClient;
use crate::version::{Record, Value};

/// How much longer than the transport the coordinator waits for a remote
/// call, so the transport's own timeout (which feeds the breaker) fires first.
const SLACK: Duration = Duration::from_millis(250);

/// Hops a forwarded write may take; a node it then reaches coordinates it
/// (sloppily if it is no replica), so disagreeing rings cannot loop it.
const MAX_HOPS: u32 = 2;

/// The coordinator's knobs, taken from the node config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub n: u32,
    pub w: u32,
    pub r: u32,
    pub mode: ConflictMode,
    pub max_value_bytes: usize,
    pub timeout: Duration,
    pub speculative_retry: SpeculativeRetry,
    pub sloppy_reads: bool,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            n: c.n,
            w: c.w,
            r: c.r,
            mode: c.conflict_mode,
            max_value_bytes: c.max_value_bytes,
            timeout: c.request_timeout,
            speculative_retry: c.speculative_retry,
            sloppy_reads: c.sloppy_reads,
        }
    }
}

/// The outcome of a quorum read.
#[derive(Debug, Clone)]
pub struct GetOutcome {
    /// Live siblings (no tombstones, nothing expired).
    pub siblings: Vec<Value>,
    /// Encoded causal context of everything the read saw.
    pub context: String,
    pub replies: u32,
}

/// The outcome of a coordinated write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub context: String,
    pub acks: u32,
}

/// A client write. The consistency level arrives parsed (at the API edge);
/// key, value, context and TTL are validated by `Coordinator::write`.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub key: Bytes,
    /// `None` deletes.
    pub value: Option<Bytes>,
    pub context: String,
    pub ttl_ms: u64,
    pub w: Option<Level>,
    /// Unix ms after which whoever sent this write has given up on it (a
    /// forwarded write); 0 = none.
    pub deadline_unix_ms: u64,
}

#[derive(Debug)]
pub struct Coordinator {
    me: String,
    settings: Settings,
    replica: Arc<Replica>,
    topology: Arc<SharedTopology>,
    client: InternodeClient,
    metrics: Arc<Metrics>,
    forward_rr: std::sync::atomic::AtomicUsize,
    /// Mean latency of recent remote replica reads, µs (speculative retry).
    remote_read_us: std::sync::atomic::AtomicU64,
}

type ReplicaReply = (String, Result<Option<Record>, String>);
type ReplicaAck = (String, Result<(), String>);

impl Coordinator {
    pub fn new(
        settings: Settings,
        replica: Arc<Replica>,
        topology: Arc<SharedTopology>,
        client: InternodeClient,
    ) -> Coordinator {
        Coordinator {
            me: replica.node_id().to_string(),
            metrics: replica.metrics().clone(),
            settings,
            replica,
            topology,
            client,
            forward_rr: std::sync::atomic::AtomicUsize::new(0),
            remote_read_us: std::sync::atomic::AtomicU64::new(1000),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn node_id(&self) -> &str {
        &self.me
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.get()
    }

    /// Peers the request path currently routes around (circuit breaker).
    pub fn suspects(&self) -> Vec<String> {
        self.client.suspects()
    }

    /// Reads one replica, locally or over the network.
    async fn read_replica(
        self: &Arc<Self>,
        m: &Member,
        key: Bytes,
    ) -> Result<Option<Record>, String> {
        if m.node_id == self.me {
            return self.replica.read(&key).await.map_err(|e| e.to_string());
        }
        match self
            .client
            .replica_read(&m.node_id, &m.internode_addr, key)
            .await
        {
            Ok(record) => match record {
                None => Ok(None),
                Some(r) => Record::from_proto(r)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", m.node_id)),
            },
            Err(e) => {
                self.metrics.internode_errors.inc();
                Err(e.to_string())
            }
        }
    }

    /// Merges a record into one replica, locally or over the network.
    async fn write_replica(
        self: &Arc<Self>,
        m: &Member,
        key: Bytes,
        rec: Record,
    ) -> Result<(), String> {
        if m.node_id == self.me {
            return self
                .replica
                .apply(&key, rec)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        self.client
            .replica_write(&m.node_id, &m.internode_addr, key, rec.to_proto(), None)
            .await
            .map_err(|e| {
                self.metrics.internode_errors.inc();
                e.to_string()
            })
    }

    /// Sends a record to `m`, as its replica or (with `hint_for`) as a substitute.
    async fn write_replica_as(
        self: &Arc<Self>,
        m: &Member,
        key: Bytes,
        rec: Record,
        hint_for: Option<String>,
    ) -> Result<(), String> {
        match hint_for {
            None => self.write_replica(m, key, rec).await,
            Some(owner) => self
                .client
                .replica_write(
                    &m.node_id,
                    &m.internode_addr,
                    key,
                    rec.to_proto(),
                    Some(owner),
                )
                .await
                .map_err(|e| {
                    self.metrics.internode_errors.inc();
                    e.to_string()
                }),
        }
    }

    /// A quorum read of `key` with read level `r` (`None`: the default R).
    pub async fn get(
        self: &Arc<Self>,
        key: Bytes,
        r: Option<Level>,
    ) -> Result<GetOutcome, CoordError> {
        validate::key(&key)?;
        let required = consistency::required(r, self.settings.r, self.settings.n)?;
        let topo = self.topology();
        let mut replicas = topo.replica_set(&key, self.settings.n as usize);
        // A replica restoring lost data takes writes but answers no reads:
        // its copy may be missing anything written before it came back.
        let restoring: Vec<String> = replicas
            .iter()
            .filter(|m| !m.state.serves_reads())
            .map(|m| m.node_id.clone())
            .collect();
        if !restoring.is_empty() {
            replicas.retain(|m| m.state.serves_reads());
            if replicas.len() < required as usize {
                return Err(CoordError::QuorumNotReached {
                    op: "read",
                    required,
                    got: 0,
                    replicas: replicas.len() + restoring.len(),
                    detail: format!(
                        "{} restoring lost data (not readable until done)",
                        restoring.join(", ")
                    ),
                });
            }
        }
        let started = tokio::time::Instant::now();
        let deadline = started + self.settings.timeout;
        // Ask R replicas first — this node when it is one (no hop), then
        // those gossip believes alive, taking turns — and more only when
        // one fails or is slow (speculative retry, as Cassandra does).
        let mut order = self.read_order(&replicas);
        // Sloppy read (Dynamo's "first N healthy nodes"): with home replicas
        // down, the substitutes that took their writes as hints are asked
        // in their place, before the unreachable ones. `all` means every
        // home replica and never counts a substitute.
        let usable = replicas.iter().filter(|m| self.usable(m)).count();
        if self.settings.sloppy_reads
            && usable < replicas.len()
            && (required as usize) < replicas.len()
        {
            let homes: Vec<String> = replicas.iter().map(|m| m.node_id.clone()).collect();
            let subs: Vec<Arc<Member>> = topo
                .substitutes(&key, &homes)
                .into_iter()
                .filter(|m| self.usable(m))
                .take(replicas.len() - usable)
                .collect();
            if !subs.is_empty() {
                self.metrics.sloppy_reads.inc();
                order.splice(usable..usable, subs);
            }
        }
        let read = |m: Arc<Member>| {
            let this = self.clone();
            let key = key.clone();
            async move {
                let t = std::time::Instant::now();
                // A remote read is bounded by the transport (which tells the
                // peer's breaker); the deadline here is a safety net.
                let deadline = if m.node_id == this.me {
                    deadline
                } else {
                    deadline + SLACK
                };
                let res = match tokio::time::timeout_at(deadline, this.read_replica(&m, key)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("{}: timed out", m.node_id)),
                };
                if res.is_ok() && m.node_id != this.me {
                    this.observe_remote_read(t.elapsed());
                }
                (m.node_id.clone(), res)
            }
        };
        let mut asked = 0usize;
        let mut pending = FuturesUnordered::new();
        while asked < (required as usize).min(order.len()) {
            pending.push(read(order[asked].clone()));
            asked += 1;
        }
        let speculation = self.speculation_delay();
        let speculate = tokio::time::sleep_until(started + speculation.unwrap_or_default());
        tokio::pin!(speculate);
        let mut replies: Vec<ReplicaReply> = Vec::new();
        let mut ok = 0u32;
        while ok < required {
            tokio::select! {
                reply = pending.next() => match reply {
                    Some(reply) => {
                        if reply.1.is_ok() {
                            ok += 1;
                        } else if asked < order.len() {
                            pending.push(read(order[asked].clone()));
                            asked += 1;
                        }
                        replies.push(reply);
                    }
                    None => break,
                },
                _ = &mut speculate, if speculation.is_some() && asked < order.len() => {
                    self.metrics.speculative_reads.inc();
                    while asked < order.len() {
                        pending.push(read(order[asked].clone()));
                        asked += 1;
                    }
                }
            }
        }
        if ok < required {
            self.metrics
                .quorum_failures
                .get_or_create(&OnlyOp { op: "get" })
                .inc();
            return Err(CoordError::QuorumNotReached {
                op: "read",
                required,
                got: ok,
                replicas: replicas.len(),
                detail: failure_detail(&replies),
            });
        }
        let merged = replies
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned().flatten())
            .reduce(|a, b| a.merge(&b));
        let now = now_ms();
        let outcome = GetOutcome {
            siblings: merged
                .as_ref()
                .map(|m| m.client_values(now))
                .unwrap_or_default(),
            context: merged
                .as_ref()
                .map(|m| m.context())
                .unwrap_or_default()
                .encode(),
            replies: ok,
        };
        // Read repair, after the answer: the replicas that answered with
        // less than the merge get it (late replies of speculative reads
        // too). Nothing to do — and no task — when they all agreed.
        let disagree = merged.as_ref().is_some_and(|m| {
            replies
                .iter()
                .any(|(_, r)| matches!(r, Ok(rec) if rec.as_ref() != Some(m)))
        });
        if disagree || !pending.is_empty() {
            let this = self.clone();
            let span = tracing::debug_span!("read_repair");
            tokio::spawn(
                async move {
                    while let Some(reply) = pending.next().await {
                        replies.push(reply);
                    }
                    this.read_repair(key, &replicas, replies).await;
                }
                .instrument(span),
            );
        }
        Ok(outcome)
    }

    /// Whether requests should go to `m`: gossip hears from it and requests
    /// to it have not kept failing (the per-peer circuit breaker).
    fn usable(&self, m: &Member) -> bool {
        m.node_id == self.me || (m.alive && !self.client.is_suspect(&m.node_id))
    }

    /// The replicas of a read in the order to ask them: this node, then the
    /// others, usable ones first.
    fn read_order(&self, replicas: &[Arc<Member>]) -> Vec<Arc<Member>> {
        let mut order: Vec<Arc<Member>> = replicas
            .iter()
            .filter(|m| m.node_id == self.me)
            .cloned()
            .collect();
        order.extend(self.usable_first(replicas.iter().filter(|m| m.node_id != self.me).cloned()));
        order
    }

    /// `members` in the order to try them: the usable ones from a rotating
    /// start (with zones the primaries are uneven, so always starting at the
    /// first would skew load), then the others. Each member is judged once,
    /// so a breaker that changes meanwhile never lists one twice or drops it.
    fn usable_first(&self, members: impl Iterator<Item = Arc<Member>>) -> Vec<Arc<Member>> {
        let (mut order, rest): (Vec<_>, Vec<_>) = members.partition(|m| self.usable(m));
        if !order.is_empty() {
            let k = self
                .forward_rr
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % order.len();
            order.rotate_left(k);
        }
        order.extend(rest);
        order
    }

    /// How long a read waits for its first R replicas before asking the
    /// rest: four times the recent mean remote read, within [2 ms, timeout/2].
    /// `None`: ask more replicas only when one fails.
    fn speculation_delay(&self) -> Option<Duration> {
        match self.settings.speculative_retry {
            SpeculativeRetry::Never => None,
            SpeculativeRetry::After(d) => Some(d),
            SpeculativeRetry::Adaptive => {
                let mean = Duration::from_micros(
                    self.remote_read_us
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                Some((mean * 4).clamp(Duration::from_millis(2), self.settings.timeout / 2))
            }
        }
    }

    fn observe_remote_read(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.remote_read_us.load(Relaxed);
        // An exponential moving average (1/8 weight); racing updates lose a
        // sample, which is harmless.
        self.remote_read_us
            .store(old - old / 8 + sample / 8, Relaxed);
    }

    async fn read_repair(
        self: &Arc<Self>,
        key: Bytes,
        replicas: &[Arc<Member>],
        replies: Vec<ReplicaReply>,
    ) {
        let answered: Vec<(String, Option<Record>)> = replies
            .into_iter()
            .filter_map(|(id, r)| r.ok().map(|rec| (id, rec)))
            .collect();
        let Some(merged) = answered
            .iter()
            .filter_map(|(_, r)| r.clone())
            .reduce(|a, b| a.merge(&b))
        else {
            return;
        };
        for (id, rec) in answered {
            let stale = match &rec {
                None => true,
                Some(r) => r.merge(&merged) != *r,
            };
            if !stale {
                continue;
            }
            let Some(m) = replicas.iter().find(|m| m.node_id == id) else {
                continue;
            };
            match self.write_replica(m, key.clone(), merged.clone()).await {
                Ok(()) => {
                    self.metrics.read_repairs.inc();
                    tracing::debug!(replica = %id, "read repair");
                }
                Err(e) => tracing::debug!(replica = %id, error = %e, "read repair failed"),
            }
        }
    }

    /// Keeps a hint here for `target`; a failure only costs convergence speed
    /// (anti-entropy still finds the difference), so it is logged, not raised.
    async fn store_hint(&self, target: &str, key: &[u8], rec: &Record) {
        if let Err(e) = self.replica.keep_hint(target, key, rec).await {
            tracing::warn!(target, error = %e, "could not store a hint");
        }
    }
}

fn failure_detail(replies: &[ReplicaReply]) -> String {
    let errs: Vec<&str> = replies
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(|s| s.as_str()))
        .collect();
    if errs.is_empty() {
        "no other replica answered".to_string()
    } else {
        errs.join("; ")
    }
}
