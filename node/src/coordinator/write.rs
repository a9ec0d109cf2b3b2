//! The write path: a client put or delete is coordinated on a replica of
//! the key (forwarded to one when this node is not), sent to the key's
//! replicas and pending owners, and acknowledged once W of them have it.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringkv_proto::v1 as pb;

use super::{
    CoordError, Coordinator, InvalidInput, Level, MAX_HOPS, ReplicaAck, ReplicaReply, SLACK,
    WriteOutcome, WriteRequest, consistency, failure_detail, now_ms, validate,
};
use crate::config::ConflictMode;
use crate::membership::Member;
use crate::metrics::OnlyOp;
use crate::ring::{Topology, WritePlan};
use crate::transport::TransportError;
use crate::version::{DvvSet, LwwValue, Record, Value, VersionVector};

impl Coordinator {
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
        let order = self.usable_first(plan.replicas.iter().cloned());
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
}
