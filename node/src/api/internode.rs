//! The Internode service: replica reads, replica merges, forwarded writes.

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internode_server::Internode;
use tonic::{Request, Response, Status};

use super::to_status;
use crate::coordinator::WriteRequest;
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
        let rec = self.state.coord.store().read(&key).await?;
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
        if let Record::Lww(l) = &rec {
            self.state.coord.hlc().observe(l.hlc);
        }
        self.state.coord.store().merge(&req.key, rec).await?;
        Ok(Response::new(pb::WriteReplicaResponse {}))
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
            w: req.w,
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
