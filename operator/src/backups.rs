//! Carrying out backups and the restore of `spec.restoreFrom` each reconcile:
//! the decisions are [`crate::planner::backup`]'s; this reads credentials,
//! calls the nodes' Admin backup RPCs and records progress in the status.
//! One-off `KVBackup`s of the cluster are picked up here too (the oldest
//! pending one starts when no backup runs) and their status follows the run.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tracing::warn;

use crate::act::SecurityObservation;
use crate::admin::{NodeAddr, StoreOptions};
use crate::controller::{Context, Error};
use crate::crd::{
    BackupDestination, BackupPhase, BackupRun, ClusterBackupStatus, KVBackup, KVCluster,
    KVClusterStatus, Phase, RestoreProgress,
};
use crate::names;
use crate::observe::{NodeObservation, NodeState, Observed};
use crate::planner::backup::{self as plan, NodeBackup};
use crate::planner::{Activity, PlannedEvent};

const HISTORY: usize = 10;

/// Object-store options from the credentials Secret (every key, as text).
async fn options(ctx: &Context, ns: &str, dest: &BackupDestination) -> Result<StoreOptions, Error> {
    let Some(name) = &dest.credentials_secret else {
        return Ok(StoreOptions::new());
    };
    let s = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::TlsSecret {
            secret: name.clone(),
            reason: "backup credentials Secret not found".into(),
        })?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
        .collect())
}

fn addr(kvc: &KVCluster, ns: &str, pod: &str, sec: &SecurityObservation) -> NodeAddr {
    NodeAddr {
        namespace: ns.to_string(),
        cluster: kvc.name_any(),
        pod: pod.to_string(),
        tls: sec.admin_tls.clone(),
        token: sec.admin_token.clone(),
    }
}

/// Pods of each zone, in ordinal order, that the StatefulSets run.
/// Every zone's nodes in ordinal order: the pods the operator asked for
/// their status (its StatefulSets' ordinals), whether or not their Pod
/// objects are visible yet.
fn zone_pods(kvc: &KVCluster, obs: &Observed) -> Vec<Vec<String>> {
    let name = kvc.name_any();
    kvc.spec
        .zones
        .iter()
        .map(|z| {
            let prefix = format!("{}-", names::statefulset(&name, &z.name));
            let mut pods: Vec<(i32, String)> = obs
                .nodes
                .keys()
                .filter_map(|p| Some((p.strip_prefix(&prefix)?.parse().ok()?, p.clone())))
                .collect();
            pods.sort();
            pods.into_iter().map(|(_, p)| p).collect()
        })
        .collect()
}

fn rate(s: Option<&str>) -> u64 {
    s.and_then(crate::crd::quantity_bytes)
        .map_or(0, |b| b as u64)
}

/// One backup/restore step; updates `status` and returns events and how soon
/// to look again.
#[allow(clippy::too_many_lines)]
pub async fn reconcile(
    ctx: &Context,
    kvc: &KVCluster,
    ns: &str,
    activity: &Activity,
    obs: &Observed,
    sec: &SecurityObservation,
    status: &mut KVClusterStatus,
) -> Result<(Vec<PlannedEvent>, Option<Duration>), Error> {
    let mut events = Vec::new();
    let now = (ctx.clock)();
    let cluster = kvc.name_any();
    let reports: BTreeMap<String, Option<NodeBackup>> = obs
        .nodes
        .iter()
        .map(|(p, o)| (p.clone(), o.report().map(|r| r.backup.clone())))
        .collect();
    let mut requeue = None;

    // Restore into a new cluster, once, when every node is up.
    if let Some(from) = &kvc.spec.restore_from {
        let mut progress = status.restore.clone().unwrap_or(RestoreProgress {
            backup_id: from.backup_id.clone(),
            ..RestoreProgress::default()
        });
        let via = obs.nodes.iter().find_map(|(p, o)| match o {
            NodeObservation::Report(r) if r.state == NodeState::Normal => Some(p.clone()),
            _ => None,
        });
        match progress.phase {
            BackupPhase::Pending if status.phase == Phase::Running => {
                if let Some(via) = via {
                    let opts = options(ctx, ns, &from.destination).await?;
                    match ctx
                        .admin
                        .restore(
                            &addr(kvc, ns, &via, sec),
                            &from.destination.url,
                            &from.backup_id,
                            opts,
                        )
                        .await
                    {
                        Ok(_) => {
                            progress.phase = BackupPhase::Running;
                            progress.node = via.clone();
                            events.push(PlannedEvent::normal(
                                "RestoreStarted",
                                format!("restoring backup {} through {via}", from.backup_id),
                            ));
                        }
                        Err(e) => progress.reason = e.to_string(),
                    }
                }
                requeue = Some(plan::POLL);
            }
            BackupPhase::Running => {
                let r = obs
                    .nodes
                    .get(&progress.node)
                    .and_then(|o| o.report())
                    .and_then(|r| r.restore.clone());
                if let Some(r) = r.filter(|r| r.backup_id == from.backup_id) {
                    progress.keys_loaded = r.keys_loaded;
                    if !r.running && r.phase == "done" {
                        progress.phase = BackupPhase::Succeeded;
                        events.push(PlannedEvent::normal(
                            "RestoreSucceeded",
                            format!("restored backup {}: {} keys", from.backup_id, r.keys_loaded),
                        ));
                    } else if !r.running && !r.error.is_empty() {
                        progress.phase = BackupPhase::Failed;
                        progress.reason = r.error.clone();
                        events.push(PlannedEvent::warning(
                            "RestoreFailed",
                            format!("restore of {} failed: {}", from.backup_id, r.error),
                        ));
                    }
                }
                requeue = Some(plan::POLL);
            }
            _ => {}
        }
        status.restore = Some(progress);
    }

    // Backups.
    let mut b = status.backup.clone().unwrap_or_default();
    let kvbackups: Api<KVBackup> = Api::namespaced(ctx.client.clone(), ns);
    if b.current.is_none() {
        // A missing KVBackup CRD (an older chart) must not stop scheduled backups.
        let pending = kvbackups
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|k| k.spec.cluster == cluster && k.status.is_none())
            .min_by_key(|k| k.metadata.creation_timestamp.clone().map(|t| t.0));
        let mut start = None;
        if let Some(k) = pending {
            start = Some(format!("KVBackup/{}", k.name_any()));
        } else if let Some(spec) = kvc.spec.backup.as_ref().filter(|s| !s.suspend) {
            let after = b.last_schedule_unix_ms.unwrap_or(obs.created_unix_ms);
            match plan::due_slot(&spec.schedule, after, now) {
                Ok(Some(slot)) => {
                    b.last_schedule_unix_ms = Some(slot);
                    start = Some("schedule".into());
                }
                Ok(None) => {}
                Err(e) => events.push(PlannedEvent::warning(
                    "BackupScheduleInvalid",
                    e.to_string(),
                )),
            }
        }
        if let Some(trigger) = start {
            let id = plan::backup_id(&cluster, now);
            events.push(PlannedEvent::normal(
                "BackupStarted",
                format!("backup {id} started ({trigger})"),
            ));
            b.current = Some(BackupRun {
                id,
                trigger,
                started_unix_ms: now,
                ..BackupRun::default()
            });
        }
    }
    if let Some(run) = b.current.clone() {
        let dest = match run.trigger.strip_prefix("KVBackup/") {
            Some(name) => kvbackups
                .get_opt(name)
                .await?
                .and_then(|k| k.spec.destination),
            None => None,
        }
        .or_else(|| kvc.spec.backup.as_ref().map(|s| s.destination.clone()));
        let busy = plan::busy(activity);
        let mut step = plan::advance(&run, &zone_pods(kvc, obs), &reports, busy.as_deref(), now);
        match &dest {
            None => {
                step.run.phase = BackupPhase::Failed;
                step.run.reason =
                    "no destination: set spec.destination of the KVBackup or spec.backup".into();
                step.start = None;
            }
            Some(dest) => {
                if let Some(node) = &step.start {
                    let opts = options(ctx, ns, dest).await?;
                    let limit = rate(
                        kvc.spec
                            .backup
                            .as_ref()
                            .and_then(|s| s.rate_limit.as_deref()),
                    );
                    if let Err(e) = ctx
                        .admin
                        .backup(
                            &addr(kvc, ns, node, sec),
                            &dest.url,
                            &step.run.id,
                            limit,
                            opts,
                        )
                        .await
                    {
                        // Retried next poll; the run waits.
                        step.run.reason = format!("starting {node}: {e}");
                    }
                }
            }
        }
        let finished = matches!(step.run.phase, BackupPhase::Succeeded | BackupPhase::Failed);
        if finished {
            let r = &step.run;
            if r.phase == BackupPhase::Succeeded {
                b.last_successful = Some(r.id.clone());
                events.push(PlannedEvent::normal(
                    "BackupSucceeded",
                    format!(
                        "backup {}: {} bytes in {} files ({} uploaded) in {}s",
                        r.id, r.bytes, r.files, r.bytes_uploaded, r.duration_seconds
                    ),
                ));
                // Retention and garbage collection through one node.
                if let (Some(spec), Some(dest)) = (kvc.spec.backup.as_ref(), dest.as_ref())
                    && let Some(via) = step.run.nodes_done.first()
                {
                    match plan::retention(&spec.retention) {
                        Ok((keep, age)) => {
                            let opts = options(ctx, ns, dest).await?;
                            match ctx
                                .admin
                                .prune_backups(&addr(kvc, ns, via, sec), &dest.url, keep, age, opts)
                                .await
                            {
                                Ok((deleted, freed)) if !deleted.is_empty() => {
                                    events.push(PlannedEvent::normal(
                                        "BackupsPruned",
                                        format!("deleted backups {deleted:?}, {freed} bytes freed"),
                                    ))
                                }
                                Ok(_) => {}
                                Err(e) => events.push(PlannedEvent::warning(
                                    "BackupPruneFailed",
                                    e.to_string(),
                                )),
                            }
                        }
                        Err(e) => {
                            events.push(PlannedEvent::warning("BackupPruneFailed", e.to_string()))
                        }
                    }
                }
            } else {
                events.push(PlannedEvent::warning(
                    "BackupFailed",
                    format!("backup {} failed: {}", r.id, r.reason),
                ));
            }
            plan::record_history(&mut b.history, step.run.clone(), HISTORY);
            b.current = None;
        } else {
            b.current = Some(step.run.clone());
            requeue = Some(plan::POLL);
        }
        if let Some(name) = step.run.trigger.strip_prefix("KVBackup/") {
            let body = serde_json::json!({"status": step.run});
            if let Err(e) = kvbackups
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                warn!(error = %e, kvbackup = name, "could not update KVBackup status");
            }
        }
    }
    if b != ClusterBackupStatus::default() {
        status.backup = Some(b);
    }
    Ok((events, requeue))
}
