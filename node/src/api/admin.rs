//! The Admin service (the operator and `ringkv status|drain|decommission|
//! repair|cleanup|removenode`).

use std::time::Duration;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::ApiState;

#[derive(Debug, Clone)]
pub struct AdminService {
    pub state: ApiState,
}

/// How long Drain waits for in-flight client requests.
const DRAIN_WAIT: Duration = Duration::from_secs(20);

pub fn status(state: &ApiState) -> pb::StatusResponse {
    let c = &state.config;
    let topo = state.coord.topology();
    let owned = topo.ring.ownership(c.n as usize);
    let local = state.membership.local();
    let members = topo
        .view
        .members
        .iter()
        .map(|m| pb::Member {
            node_id: m.node_id.clone(),
            zone: m.zone.clone(),
            state: m.state.to_proto() as i32,
            alive: m.alive,
            client_grpc_addr: m.client_grpc_addr.clone(),
            internode_addr: m.internode_addr.clone(),
            http_addr: m.http_addr.clone(),
            tokens: m.tokens.len() as u32,
            generation: m.generation,
            owned_fraction: owned.get(&m.node_id).copied().unwrap_or(0.0),
        })
        .collect();
    pb::StatusResponse {
        node_id: c.node_id.clone(),
        zone: c.zone.clone(),
        state: local.state,
        generation: local.generation,
        version: env!("CARGO_PKG_VERSION").to_string(),
        replication: Some(pb::Replication {
            n: c.n,
            w: c.w,
            r: c.r,
        }),
        conflict_mode: c.conflict_mode.as_str().to_string(),
        members,
        pending_hints: state.replica.hints().pending_total(),
        repair: Some(state.repair.status()),
        decommission: Some(state.moves.decommission_status()),
        draining: state.gate.is_draining(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        pending_hints_by_node: state.replica.hints().pending().into_iter().collect(),
        join: state.moves.join_status(),
        undecodable_records: state.replica.store().undecodable_records(),
        gossip_dropped: state
            .membership
            .gossip_dropped()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        cleanup: Some(state.cleanup.status()),
        removal: Some(state.remover.status()),
        removed_nodes: state.remover.removed_nodes(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(status(&self.state)))
    }

    async fn decommission(
        &self,
        _req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        match self.state.moves.decommission() {
            Ok(status) => Ok(Response::new(pb::DecommissionResponse {
                status: Some(status),
            })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn repair(
        &self,
        _req: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairResponse>, Status> {
        let (started, repair_id) = self.state.repair.start();
        Ok(Response::new(pb::RepairResponse { started, repair_id }))
    }

    async fn cleanup(
        &self,
        _req: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        let (started, cleanup_id) = self
            .state
            .cleanup
            .start()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::CleanupResponse {
            started,
            cleanup_id,
        }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let status = self.state.remover.remove(&req.into_inner().node_id)?;
        Ok(Response::new(pb::RemoveNodeResponse {
            status: Some(status),
        }))
    }

    async fn drain(
        &self,
        _req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        tracing::info!("draining: refusing new client requests");
        self.state.gate.drain(DRAIN_WAIT).await;
        self.state.replica.store().flush().await?;
        self.state.replica.hints().flush().await?;
        tracing::info!("drained");
        Ok(Response::new(pb::DrainResponse {}))
    }
}
