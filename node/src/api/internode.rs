//! The Internode service: replica reads, replica merges, forwarded writes.

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internode_server::Internode;
use tonic::{Request, Response, Status};

use super::to_status;
use crate::coordinator::WriteRequest;
use crate::repair::sync::range_from_pb;
use crate::version::Record;

#[derive(Debug, Clone)]
pub struct InternodeService {
    pub state: super::ApiState,
}

#[tonic::async_trait]
impl Internode for InternodeService {
    async fn read_replica(
        &self,
        req: Request<pb::ReadReplicaRequest>,
    ) -> Result<Response<pb::ReadReplicaResponse>, Status> {
        let key = req.into_inner().key;
        let rec = self.state.replica.read(&key).await?;
        Ok(Response::new(pb::ReadReplicaResponse {
            record: rec.map(|r| r.to_proto()),
        }))
    }

    async fn write_replica(
        &self,
        req: Request<pb::WriteReplicaRequest>,
    ) -> Result<Response<pb::WriteReplicaResponse>, Status> {
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(Status::invalid_argument("empty key"));
        }
        let rec = req
            .record
            .ok_or_else(|| Status::invalid_argument("record missing"))?;
        let rec = Record::from_proto(rec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !req.hint_for.is_empty() {
            self.state
                .replica
                .keep_hint(&req.hint_for, &req.key, &rec)
                .await?;
            return Ok(Response::new(pb::WriteReplicaResponse {}));
        }
        self.state.replica.apply(&req.key, rec).await?;
        Ok(Response::new(pb::WriteReplicaResponse {}))
    }

    async fn write_batch(
        &self,
        req: Request<pb::WriteBatchRequest>,
    ) -> Result<Response<pb::WriteBatchResponse>, Status> {
        let mut items = Vec::new();
        for it in req.into_inner().items {
            if it.key.is_empty() {
                return Err(Status::invalid_argument("empty key"));
            }
            let rec = it
                .record
                .ok_or_else(|| Status::invalid_argument("record missing"))?;
            let rec =
                Record::from_proto(rec).map_err(|e| Status::invalid_argument(e.to_string()))?;
            items.push((it.key, rec));
        }
        // All or nothing is checked above; the merge itself is one engine batch.
        self.state.replica.apply_batch(items).await?;
        Ok(Response::new(pb::WriteBatchResponse {}))
    }

    async fn replica_writes(
        &self,
        req: Request<pb::ReplicaWritesRequest>,
    ) -> Result<Response<pb::ReplicaWritesResponse>, Status> {
        let writes = req.into_inner().writes;
        let mut errors = vec![String::new(); writes.len()];
        // Tracing: a span per traced item, child of its request; they end
        // when this call does.
        let me = self.state.config.node_id.as_str();
        let _spans: Vec<tracing::Span> = writes
            .iter()
            .filter(|w| !w.traceparent.is_empty())
            .map(|w| crate::telemetry::item_span(crate::telemetry::Item::Write, me, &w.traceparent))
            .collect();
        // Plain replica writes go into one engine batch; hints one by one.
        let mut batch = Vec::with_capacity(writes.len());
        let mut batch_at = Vec::with_capacity(writes.len());
        for (i, w) in writes.into_iter().enumerate() {
            let rec = match decode_item(&w.key, w.record) {
                Ok(r) => r,
                Err(e) => {
                    errors[i] = e;
                    continue;
                }
            };
            // A clock-skewed record fails alone, not the whole batch.
            if let Err(e) = self.state.replica.admit(&rec) {
                errors[i] = e.to_string();
                continue;
            }
            if w.hint_for.is_empty() {
                batch.push((w.key, rec));
                batch_at.push(i);
            } else if let Err(e) = self
                .state
                .replica
                .keep_hint(&w.hint_for, &w.key, &rec)
                .await
            {
                errors[i] = e.to_string();
            }
        }
        if let Err(e) = self.state.replica.apply_batch(batch).await {
            let e = e.to_string();
            for i in batch_at {
                errors[i] = e.clone();
            }
        }
        Ok(Response::new(pb::ReplicaWritesResponse { errors }))
    }

    async fn replica_reads(
        &self,
        req: Request<pb::ReplicaReadsRequest>,
    ) -> Result<Response<pb::ReplicaReadsResponse>, Status> {
        use prost::Message as _;
        let pb::ReplicaReadsRequest { keys, traceparents } = req.into_inner();
        let me = self.state.config.node_id.as_str();
        let budget = self.state.config.max_value_bytes + (256 << 10);
        let mut used = 0usize;
        let mut reads = Vec::with_capacity(keys.len());
        for (i, key) in keys.into_iter().enumerate() {
            let tp = traceparents.get(i).map_or("", String::as_str);
            let _span = crate::telemetry::item_span(crate::telemetry::Item::Read, me, tp);
            if used > 0 && used >= budget {
                reads.push(pb::ReplicaRead {
                    deferred: true,
                    ..Default::default()
                });
                continue;
            }
            let read = match self.state.replica.read(&key).await {
                Ok(rec) => pb::ReplicaRead {
                    record: rec.map(|r| r.to_proto()),
                    ..Default::default()
                },
                Err(e) => pb::ReplicaRead {
                    error: e.to_string(),
                    ..Default::default()
                },
            };
            used += read.encoded_len();
            reads.push(read);
        }
        Ok(Response::new(pb::ReplicaReadsResponse { reads }))
    }

    async fn merkle_tree(
        &self,
        req: Request<pb::MerkleTreeRequest>,
    ) -> Result<Response<pb::MerkleTreeResponse>, Status> {
        let req = req.into_inner();
        let range = range_from_pb(req.range)?;
        if req.levels > range.max_levels() {
            return Err(Status::invalid_argument(
                "levels too deep: at most 4, and no more leaves than tokens in the range",
            ));
        }
        Ok(Response::new(
            self.state.repair.serve_tree(range, req.levels).await?,
        ))
    }

    async fn merkle_nodes(
        &self,
        req: Request<pb::MerkleNodesRequest>,
    ) -> Result<Response<pb::MerkleNodesResponse>, Status> {
        let hashes = self.state.repair.serve_nodes(&req.into_inner())?;
        Ok(Response::new(pb::MerkleNodesResponse { hashes }))
    }

    async fn range_digest(
        &self,
        req: Request<pb::RangeDigestRequest>,
    ) -> Result<Response<pb::RangeDigestResponse>, Status> {
        let range = range_from_pb(req.into_inner().range)?;
        Ok(Response::new(self.state.repair.serve_digest(range).await?))
    }

    type FetchRangeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::KeyRecords, Status>> + Send>>;

    async fn fetch_range(
        &self,
        req: Request<pb::FetchRangeRequest>,
    ) -> Result<Response<Self::FetchRangeStream>, Status> {
        let req = req.into_inner();
        let range = range_from_pb(req.range)?;
        let batches = self.state.repair.serve_fetch(range, req.keys)?;
        let stream = futures::stream::unfold(batches, |mut rx| async move {
            let b = rx.recv().await?;
            Some((
                b.map(|items| pb::KeyRecords { items })
                    .map_err(Status::from),
                rx,
            ))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn coordinate_write(
        &self,
        req: Request<pb::CoordinateWriteRequest>,
    ) -> Result<Response<pb::CoordinateWriteResponse>, Status> {
        let req = req.into_inner();
        let wr = WriteRequest {
            key: req.key,
            value: req.value,
            context: req.context,
            ttl_ms: req.ttl_ms,
            w: crate::coordinator::Level::parse(&req.w)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            deadline_unix_ms: req.deadline_unix_ms,
        };
        let out = self
            .state
            .coord
            .write(wr, req.hops)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CoordinateWriteResponse {
            context: out.context,
            acks: out.acks,
        }))
    }
}

/// A record of a replica write, validated.
fn decode_item(key: &[u8], record: Option<pb::Record>) -> Result<Record, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    let rec = record.ok_or("record missing")?;
    Record::from_proto(rec).map_err(|e| e.to_string())
}
