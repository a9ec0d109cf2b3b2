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
        backup: Some(state.backups.backup_status()),
        restore: Some(state.backups.restore_status()),
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
    // --- Snapshots, backups and restore: node/src/backup ---

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let info = self.state.backups.snapshot(req.into_inner().id).await?;
        Ok(Response::new(pb::SnapshotResponse {
            snapshot: Some(info.to_proto()),
        }))
    }

    async fn list_snapshots(
        &self,
        _req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let list = self.state.backups.list_snapshots().await?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: list.iter().map(|s| s.to_proto()).collect(),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let deleted = self
            .state
            .backups
            .delete_snapshot(req.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteSnapshotResponse { deleted }))
    }

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let r = req.into_inner();
        let (started, backup_id) = self.state.backups.start_backup(
            &r.url,
            r.options,
            &r.backup_id,
            r.rate_limit_bytes_per_sec,
        )?;
        Ok(Response::new(pb::BackupResponse { started, backup_id }))
    }

    async fn restore_records(
        &self,
        req: Request<pb::RestoreRecordsRequest>,
    ) -> Result<Response<pb::RestoreRecordsResponse>, Status> {
        let replica_writes = self
            .state
            .backups
            .restore_records(req.into_inner().items)
            .await?;
        Ok(Response::new(pb::RestoreRecordsResponse { replica_writes }))
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let r = req.into_inner();
        let (started, backup_id) =
            self.state
                .backups
                .start_restore(&r.url, r.options, &r.backup_id)?;
        Ok(Response::new(pb::RestoreResponse { started, backup_id }))
    }

    async fn prune_backups(
        &self,
        req: Request<pb::PruneBackupsRequest>,
    ) -> Result<Response<pb::PruneBackupsResponse>, Status> {
        let r = req.into_inner();
        let retention = crate::backup::retention_of(&r);
        let report = self
            .state
            .backups
            .prune(&r.url, r.options, &retention)
            .await?;
        Ok(Response::new(pb::PruneBackupsResponse {
            kept: report.kept,
            deleted: report.deleted,
            objects_deleted: report.objects_deleted,
            bytes_freed: report.bytes_freed,
        }))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let r = req.into_inner();
        let backups = self.state.backups.list_backups(&r.url, r.options).await?;
        Ok(Response::new(pb::ListBackupsResponse { backups }))
    }

    async fn verify_backup(
        &self,
        req: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::VerifyBackupResponse>, Status> {
        let r = req.into_inner();
        let resp = self
            .state
            .backups
            .verify_backup(&r.url, r.options, &r.backup_id)
            .await?;
        Ok(Response::new(resp))
    }
}
