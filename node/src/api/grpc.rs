//! `ringkv.v1.KeyValue`: the client gRPC API.

use std::time::Instant;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::key_value_server::KeyValue;
use tonic::{Request, Response, Status};

use super::{ApiState, outcome_label, to_status};
use crate::coordinator::{CoordError, InvalidInput, Level, WriteRequest};
use crate::ring::Topology;

#[derive(Debug, Clone)]
pub struct KeyValueService {
    pub state: ApiState,
}

impl KeyValueService {
    /// Parses a consistency field once, here at the edge; a bad one is
    /// counted and refused before anything else happens.
    fn level(&self, op: &'static str, s: &str, started: Instant) -> Result<Option<Level>, Status> {
        Level::parse(s).map_err(|e: InvalidInput| {
            self.state.observe(op, Err(()), started, "invalid");
            to_status(CoordError::Invalid(e))
        })
    }

    async fn write(
        &self,
        op: &'static str,
        req: WriteRequest,
        started: Instant,
    ) -> Result<crate::coordinator::WriteOutcome, Status> {
        let w = req.w;
        match self.state.coord.write(req, 0).await {
            Ok(out) => {
                self.state.observe(op, Ok(w), started, "ok");
                Ok(out)
            }
            Err(e) => {
                self.state.observe(op, Ok(w), started, outcome_label(&e));
                Err(to_status(e))
            }
        }
    }
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let s = &self.state;
        let _pass = s.gate.enter()?;
        let started = Instant::now();
        let req = req.into_inner();
        let r = self.level("get", &req.r, started)?;
        match s.coord.get(req.key, r).await {
            Ok(out) => {
                let outcome = if out.siblings.is_empty() {
                    "not_found"
                } else {
                    "ok"
                };
                s.observe("get", Ok(r), started, outcome);
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
                s.observe("get", Ok(r), started, outcome_label(&e));
                Err(to_status(e))
            }
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let _pass = self.state.gate.enter()?;
        let started = Instant::now();
        let req = req.into_inner();
        let w = self.level("put", &req.w, started)?;
        let wr = WriteRequest {
            key: req.key,
            value: Some(req.value),
            context: req.context,
            ttl_ms: req.ttl_ms,
            w,
            deadline_unix_ms: 0,
        };
        let out = self.write("put", wr, started).await?;
        Ok(Response::new(pb::PutResponse {
            context: out.context,
            acks: out.acks,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let _pass = self.state.gate.enter()?;
        let started = Instant::now();
        let req = req.into_inner();
        let w = self.level("delete", &req.w, started)?;
        // Without a context: what a read at the default R sees now.
        let context = self
            .state
            .delete_context(&req.key, req.context)
            .await
            .map_err(|e| {
                self.state
                    .observe("delete", Ok(w), started, outcome_label(&e));
                to_status(e)
            })?;
        let wr = WriteRequest {
            key: req.key,
            value: None,
            context,
            ttl_ms: 0,
            w,
            deadline_unix_ms: 0,
        };
        let out = self.write("delete", wr, started).await?;
        Ok(Response::new(pb::DeleteResponse { acks: out.acks }))
    }

    async fn ring(
        &self,
        _req: Request<pb::RingRequest>,
    ) -> Result<Response<pb::RingResponse>, Status> {
        let _pass = self.state.gate.enter()?;
        Ok(Response::new(ring_table(
            &self.state.coord.topology(),
            self.state.config.n,
        )))
    }
}

/// The current ring as a token-aware client needs it.
pub fn ring_table(topo: &Topology, n: u32) -> pb::RingResponse {
    let nodes: Vec<pb::RingNode> = topo
        .ring
        .nodes()
        .iter()
        .filter_map(|r| topo.view.get(&r.id))
        .map(|m| pb::RingNode {
            node_id: m.node_id.clone(),
            grpc_addr: m.client_grpc_addr.clone(),
            alive: m.alive,
            zone: m.zone.clone(),
        })
        .collect();
    let index = |id: &str| nodes.iter().position(|x| x.node_id == id).map(|i| i as u32);
    let ranges = topo
        .ring
        .ranges()
        .into_iter()
        .map(|(_, end, _)| pb::RingRange {
            end,
            replicas: topo
                .ring
                .preference_list(end, n as usize)
                .iter()
                .filter_map(|r| index(&r.id))
                .collect(),
        })
        .collect();
    pb::RingResponse { n, nodes, ranges }
}
