//! Quorum coordination. Any node takes any request: reads fan out to all N
//! replicas and answer after R replies; writes are coordinated by a replica
//! (which mints the causal dot), fan out to all N and answer after W acks.
//! Late replies still arrive and feed background read repair.

pub mod consistency;
pub mod error;
pub mod validate;

pub use crate::replica::now_ms;
pub use consistency::Level;
pub use error::{CoordError, InvalidInput};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringkv_proto::v1 as pb;
use tracing::Instrument;

use crate::config::{Config, ConflictMode, SpeculativeRetry};
use crate::membership::Member;
use crate::metrics::{Metrics, OnlyOp};
use crate::replica::Replica;
use crate::ring::{SharedTopology, Topology, WritePlan};
use crate::transport::{InternodeClient, TransportError};
use crate::version::{DvvSet, LwwValue, Record, Value, VersionVector};

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
    /// ones gossip believes alive from a rotating start, then the others.
    fn read_order(&self, replicas: &[Arc<Member>]) -> Vec<Arc<Member>> {
        let mut order: Vec<Arc<Member>> = replicas
            .iter()
            .filter(|m| m.node_id == self.me)
            .cloned()
            .collect();
        let mut alive: Vec<Arc<Member>> = replicas
            .iter()
            .filter(|m| m.node_id != self.me && self.usable(m))
            .cloned()
            .collect();
        if !alive.is_empty() {
            let k = self
                .forward_rr
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % alive.len();
            alive.rotate_left(k);
        }
        order.extend(alive);
        order.extend(
            replicas
                .iter()
                .filter(|m| m.node_id != self.me && !self.usable(m))
                .cloned(),
        );
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

    /// A client put or delete, coordinated here when this node is a replica
    /// of the key, else forwarded to one. When no replica can be reached at
    /// all, this node coordinates it itself as a sloppy quorum.
    pub async fn write(
        self: &Arc<Self>,
        req: WriteRequest,
        hops: u32,
    ) -> Result<WriteOutcome, CoordError> {
        // A forward that arrives after its sender gave up (held up by a
        // partition, say) must not run: the sender may have coordinated the
        // write itself, and the client may have overwritten it since — run
        // now, it would mint a new version of an old write.
        if req.deadline_unix_ms != 0 && now_ms() > req.deadline_unix_ms {
            self.metrics.late_forwards_refused.inc();
            return Err(CoordError::Expired {
                late_ms: now_ms() - req.deadline_unix_ms,
            });
        }
        validate::key(&req.key)?;
        if let Some(v) = &req.value {
            validate::value(v, self.settings.max_value_bytes)?;
        }
        let ctx = VersionVector::decode(&req.context).map_err(InvalidInput::from)?;
        let required = consistency::required(req.w, self.settings.w, self.settings.n)?;
        validate::ttl(req.ttl_ms)?;
        let topo = self.topology();
        let plan = topo.write_plan(&req.key, self.settings.n as usize);
        if plan.replicas.is_empty() {
            return Err(CoordError::Unavailable(
                "the ring is empty (no member has tokens yet)".into(),
            ));
        }
        if plan.replicas.iter().any(|m| m.node_id == self.me) {
            return self
                .coordinate(req, ctx, required, plan, &topo, false)
                .await;
        }
        if hops >= MAX_HOPS {
            // Forwarded here by a node whose ring says this one is a replica
            // (views differ for a gossip round or two while a node joins or
            // leaves): refusing would fail a write during every range move.
            // Take it as a sloppy write, like a forward nobody answered.
            tracing::debug!(hops, "forwarded write reached a non-replica; sloppy write");
            self.metrics.sloppy_writes.inc();
            return self.coordinate(req, ctx, required, plan, &topo, true).await;
        }
        self.forward(req, ctx, required, plan, topo, hops).await
    }

    /// Hands the write to a replica of the key. Replicas gossip believes
    /// alive go first; one that cannot be reached is skipped. The forward
    /// gets half the request timeout: when it runs out (a replica that hangs
    /// before the failure detector notices, a partition that swallows
    /// packets) or the reply is lost, this node coordinates the write itself
    /// as a sloppy quorum, so the write stays available. The write may then
    /// exist twice, with two dots from the same context: reads show
    /// identical siblings as one value (`Record::client_values`).
    async fn forward(
        self: &Arc<Self>,
        req: WriteRequest,
        ctx: VersionVector,
        required: u32,
        plan: WritePlan,
        topo: Arc<Topology>,
        hops: u32,
    ) -> Result<WriteOutcome, CoordError> {
        self.metrics.forwarded_writes.inc();
        let deadline = tokio::time::Instant::now() + self.settings.timeout / 2;
        // The same deadline in wall-clock time, for the receiver (never later
        // than the one this write arrived with).
        let give_up_ms = now_ms() + (self.settings.timeout / 2).as_millis() as u64;
        let give_up_ms = match req.deadline_unix_ms {
            0 => give_up_ms,
            d => d.min(give_up_ms),
        };
        let replicas = &plan.replicas;
        // Alive replicas first, starting at a rotating offset: with zones the
        // primaries are uneven (tokens balance per zone), so always picking
        // the primary would skew coordination load.
        let mut order: Vec<&Member> = replicas
            .iter()
            .filter(|m| self.usable(m))
            .map(|m| &**m)
            .collect();
        if !order.is_empty() {
            let k = self
                .forward_rr
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % order.len();
            order.rotate_left(k);
        }
        order.extend(replicas.iter().filter(|m| !self.usable(m)).map(|m| &**m));
        let mut errors = Vec::new();
        for m in order {
            let pb_req = pb::CoordinateWriteRequest {
                key: req.key.clone(),
                value: req.value.clone(),
                context: req.context.clone(),
                ttl_ms: req.ttl_ms,
                w: req.w.map(Level::label_for_wire).unwrap_or_default(),
                hops: hops + 1,
                deadline_unix_ms: give_up_ms,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .client
                .coordinate(&m.node_id, &m.internode_addr, pb_req, left)
                .await
            {
                Ok(resp) => {
                    return Ok(WriteOutcome {
                        context: resp.context,
                        acks: resp.acks,
                    });
                }
                Err(TransportError::Timeout { .. }) => {
                    self.metrics.internode_errors.inc();
                    errors.push(format!(
                        "{} did not answer within {:?}",
                        m.node_id,
                        self.settings.timeout / 2
                    ));
                    break;
                }
                Err(e) => {
                    self.metrics.internode_errors.inc();
                    if e.not_delivered() {
                        errors.push(e.to_string());
                        continue;
                    }
                    // The replica answered with a verdict (bad input, quorum
                    // failure): that is the answer.
                    if let Some(s) = e.status()
                        && e.answered()
                    {
                        return Err(CoordError::Remote {
                            code: s.code(),
                            message: s.message().to_string(),
                        });
                    }
                    errors.push(format!("{e} (the write may have been applied there)"));
                    break;
                }
            }
        }
        // No replica took the request: this node still takes the write (the
        // AP promise), parked here and on substitutes as hints.
        tracing::debug!(errors = %errors.join("; "), "no replica answered the forward; sloppy write");
        self.metrics.sloppy_writes.inc();
        self.coordinate(req, ctx, required, plan, &topo, true).await
    }

    /// Coordinates a write: mints the causal dot here, then fans out. A
    /// replica gossip calls down is replaced by the next healthy node
    /// clockwise, which keeps the write as a hint for it; W counts those
    /// substitutes. A replica that does not ack gets a hint stored here. When
    /// a range is moving, the pending replicas get the write too and W grows
    /// by their number (so the write survives the move whichever way it ends).
    async fn coordinate(
        self: &Arc<Self>,
        req: WriteRequest,
        ctx: VersionVector,
        required: u32,
        plan: WritePlan,
        topo: &Topology,
        sloppy: bool,
    ) -> Result<WriteOutcome, CoordError> {
        let now = now_ms();
        let value = Value {
            data: req.value.clone(),
            expires_at_ms: if req.ttl_ms > 0 {
                now.saturating_add(req.ttl_ms)
            } else {
                0
            },
            written_at_ms: now,
        };
        // Dots are minted under the writer id, which changes after an
        // unclean stop (`replica::writer`): the fan-out below starts before
        // this node's own copy is durable.
        let writer = self.replica.writer_id().to_string();
        let ((record, local_commit), context) = match self.settings.mode {
            ConflictMode::Causal => {
                let (ctx2, w) = (ctx.clone(), writer.clone());
                let appended = self
                    .replica
                    .update_then(&req.key, move |cur| {
                        let local = match cur {
                            Some(Record::Causal(d)) => d,
                            _ => DvvSet::default(),
                        };
                        Record::Causal(DvvSet::update(&local, &ctx2, &w, value))
                    })
                    .await?;
                // What the client's context saw (as far as the record kept
                // it) plus the new dot, small enough to be accepted back.
                let context = appended.0.write_context(&ctx, &writer).encode();
                (appended, context)
            }
            ConflictMode::Lww => {
                let lww = Record::Lww(LwwValue {
                    hlc: self.replica.hlc().now(),
                    writer,
                    value,
                });
                let appended = self.replica.apply_then(&req.key, lww).await?;
                (appended, VersionVector::new().encode())
            }
        };
        // Who gets the write: (node, the replica it stands in for).
        let mut used: Vec<String> = plan
            .replicas
            .iter()
            .chain(plan.pending.iter())
            .map(|m| m.node_id.clone())
            .collect();
        used.push(self.me.clone());
        let mut sends: Vec<(Arc<Member>, Option<String>)> = Vec::new();
        let mut local_hints: Vec<String> = Vec::new();
        let mut stand_in_done = !sloppy;
        let mut substitutes: Option<std::vec::IntoIter<Arc<Member>>> = None;
        for r in plan.replicas.iter().filter(|m| m.node_id != self.me) {
            if !stand_in_done {
                // A sloppy coordinator is itself the first substitute.
                stand_in_done = true;
                local_hints.push(r.node_id.clone());
                continue;
            }
            if self.usable(r) {
                sends.push((r.clone(), None));
                continue;
            }
            let subs = substitutes.get_or_insert_with(|| {
                let mut s = topo.substitutes(&req.key, &used);
                s.retain(|m| !self.client.is_suspect(&m.node_id));
                s.into_iter()
            });
            match subs.next() {
                Some(s) => {
                    used.push(s.node_id.clone());
                    sends.push((s, Some(r.node_id.clone())));
                }
                None => local_hints.push(r.node_id.clone()),
            }
        }
        // W never shrinks for missing replicas; it grows by the pending
        // replicas that can take the write.
        let mut pending_sent = 0u32;
        for p in &plan.pending {
            if p.node_id == self.me {
                continue;
            }
            if self.usable(p) {
                sends.push((p.clone(), None));
                pending_sent += 1;
            } else {
                local_hints.push(p.node_id.clone());
            }
        }
        for target in &local_hints {
            self.store_hint(target, &req.key, &record).await;
        }
        let required = required + pending_sent;
        // This node's own copy counts once it is durable; it syncs while the
        // replicas are written. Every outcome is driven from this task until
        // W is reached; the rest (slow replicas, their hints) finishes in
        // the background.
        type Outcome = std::pin::Pin<Box<dyn std::future::Future<Output = ReplicaAck> + Send>>;
        let mut inflight: FuturesUnordered<Outcome> = FuturesUnordered::new();
        let me = self.me.clone();
        inflight.push(Box::pin(async move {
            let res = local_commit.await.map_err(|e| format!("{me}: {e}"));
            (me, res)
        }));
        for (m, hint_for) in sends {
            let this = self.clone();
            let (key, rec) = (req.key.clone(), record.clone());
            // The transport gives up (and tells the peer's breaker) at the
            // request timeout; this is only a safety net behind it.
            let timeout = self.settings.timeout + SLACK;
            inflight.push(Box::pin(async move {
                let owner = hint_for.clone().unwrap_or_else(|| m.node_id.clone());
                let call = this.write_replica_as(&m, key.clone(), rec.clone(), hint_for);
                let res = match tokio::time::timeout(timeout, call).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("{}: timed out", m.node_id)),
                };
                if res.is_err() {
                    // Whatever happened there, the owner gets it later.
                    this.store_hint(&owner, &key, &rec).await;
                }
                (m.node_id.clone(), res)
            }));
        }
        let mut acks = 0u32;
        let mut failures: Vec<ReplicaReply> = Vec::new();
        while acks < required {
            match inflight.next().await {
                Some((_, Ok(()))) => acks += 1,
                Some((id, Err(e))) => failures.push((id, Err(e))),
                None => break,
            }
        }
        if !inflight.is_empty() {
            tokio::spawn(async move { while inflight.next().await.is_some() {} });
        }
        if acks < required {
            let op = if req.value.is_some() { "put" } else { "delete" };
            self.metrics
                .quorum_failures
                .get_or_create(&OnlyOp { op })
                .inc();
            return Err(CoordError::QuorumNotReached {
                op: "write",
                required,
                got: acks,
                replicas: plan.replicas.len(),
                detail: failure_detail(&failures),
            });
        }
        Ok(WriteOutcome { context, acks })
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
