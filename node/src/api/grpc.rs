//! `ringkv.v1.KeyValue`: the client gRPC API.

use std::time::Instant;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::key_value_server::KeyValue;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{ApiState, outcome_label, to_status};
use crate::coordinator::WriteRequest;

#[derive(Debug, Clone)]
pub struct KeyValueService {
    pub state: ApiState,
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let s = &self.state;
        let _pass = s.gate.enter()?;
        let req = req.into_inner();
        let started = Instant::now();
        let span = tracing::info_span!("get", api = "grpc", key_len = req.key.len(), r = %req.r);
        let res = s.coord.get(req.key, &req.r).instrument(span).await;
        match res {
            Ok(out) => {
                s.observe(
                    "get",
                    &req.r,
                    started,
                    if out.siblings.is_empty() {
                        "not_found"
                    } else {
                        "ok"
                    },
                );
                Ok(Response::new(pb::GetResponse {
                    found: !out.siblings.is_empty(),
                    siblings: out
                        .siblings
                        .into_iter()
                        .map(|v| pb::Sibling {
                            value: v.data.unwrap_or_default(),
                            expires_at_unix_ms: v.expires_at_ms,
                            written_at_unix_ms: v.written_at_ms,
                        })
                        .collect(),
                    context: out.context,
                    replies: out.replies,
                }))
            }
            Err(e) => {
                s.observe("get", &req.r, started, outcome_label(&e));
                Err(to_status(e))
            }
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let s = &self.state;
        let _pass = s.gate.enter()?;
        let req = req.into_inner();
        let started = Instant::now();
        let span = tracing::info_span!("put", api = "grpc", key_len = req.key.len(), value_len = req.value.len(), w = %req.w);
        let w = req.w.clone();
        let wr = WriteRequest {
            key: req.key,
            value: Some(req.value),
            context: req.context,
            ttl_ms: req.ttl_ms,
            w: req.w,
        };
        match s.coord.write(wr, 0).instrument(span).await {
            Ok(out) => {
                s.observe("put", &w, started, "ok");
                Ok(Response::new(pb::PutResponse {
                    context: out.context,
                    acks: out.acks,
                }))
            }
            Err(e) => {
                s.observe("put", &w, started, outcome_label(&e));
                Err(to_status(e))
            }
        }
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let s = &self.state;
        let _pass = s.gate.enter()?;
        let req = req.into_inner();
        let started = Instant::now();
        let span = tracing::info_span!("delete", api = "grpc", key_len = req.key.len(), w = %req.w);
        let w = req.w.clone();
        match s.delete(req.key, req.context, req.w).instrument(span).await {
            Ok(out) => {
                s.observe("delete", &w, started, "ok");
                Ok(Response::new(pb::DeleteResponse { acks: out.acks }))
            }
            Err(e) => {
                s.observe("delete", &w, started, outcome_label(&e));
                Err(to_status(e))
            }
        }
    }
}
