//! A fake ringkv cluster: one real Admin gRPC server per potential pod (bound to
//! 127.0.0.1:0), backed by a shared in-memory ring, plus a simulation of the
//! StatefulSet controller and kubelet that turns StatefulSet specs in the fake
//! API into pods (ring members, and Pod objects with their status), volumes
//! (PVCs per the retention policy) and StatefulSet status.
//!
//! The ring records a violation whenever a pod disappears while its node is not
//! `LEFT`: that is exactly the data-loss bug "lowered replicas before the node
//! had streamed its ranges away".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ringkv_operator::admin::Resolver;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_server::{Admin, AdminServer};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::fake_api::{FakeApi, Step, Timeline};

#[derive(Debug, Clone)]
pub struct FakeNode {
    pub zone: String,
    pub state: pb::NodeState,
    pub ready: bool,
    /// The process runs (false: its image cannot be pulled).
    pub running: bool,
    pub revision: String,
    pub image: String,
    /// Uid of the Pod object (changes when the pod is re-created).
    pub pod_uid: u64,
    pub decommission: pb::decommission_status::Phase,
    pub ranges_done: u32,
    pub repair_running: bool,
    pub repair_id: u64,
    pub repair_completed_ms: u64,
    /// Existed before the current rollout began (for counting restarts).
    pub restarts: u32,
    pub cleanup_running: bool,
    pub cleanup_id: u64,
    pub cleanup_completed_ms: u64,
    /// Gone for good (its volume lost): the container crash-loops.
    pub dead: bool,
    /// The removal this node coordinates: (victim, ranges done).
    pub removing: Option<(String, u32)>,
}

pub const RANGES: u32 = 4;

#[derive(Debug, Default)]
pub struct Ring {
    pub n: usize,
    pub nodes: BTreeMap<String, FakeNode>,
    pub violations: Vec<String>,
    /// Refuse every Decommission with FAILED_PRECONDITION and this message.
    pub refuse_decommission: Option<String>,
    /// The next decommission progress step fails with this error.
    pub fail_decommission_once: Option<String>,
    /// Pod removals are expected (the cluster is being deleted).
    pub allow_removal: bool,
    /// Largest number of simultaneously unready pods seen outside scaling.
    pub max_unready: usize,
    pub now_ms: u64,
    /// Images that cannot be pulled: pods on them never run.
    pub bad_images: Vec<String>,
    /// Pods the scheduler cannot place: Pending, never in the ring.
    pub unschedulable: Vec<String>,
    /// Volume uids by PVC name (a new uid = a new, empty volume).
    pub volumes: BTreeMap<String, u64>,
    /// Admin calls that a real node would have refused (the operator must
    /// not make them): cleanup while a node joins or leaves, say.
    pub refused: Vec<String>,
    /// Per node: (backup id, running, last completed id).
    pub backups: BTreeMap<String, (String, bool, String)>,
    /// Every Backup call: (node, url, backup id, options).
    pub backup_calls: Vec<(String, String, String, BTreeMap<String, String>)>,
    /// Every PruneBackups call: (url, keep_last, max_age_seconds).
    pub prunes: Vec<(String, u32, u64)>,
    next_uid: u64,
}

impl Ring {
    fn live(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.state != pb::NodeState::Left)
            .count()
    }

    fn members(&self) -> Vec<pb::Member> {
        self.nodes
            .iter()
            .map(|(id, n)| pb::Member {
                node_id: id.clone(),
                zone: n.zone.clone(),
                state: n.state as i32,
                alive: n.running,
                ..Default::default()
            })
            .collect()
    }

    fn uid(&mut self) -> u64 {
        self.next_uid += 1;
        self.next_uid
    }

    fn decommission_status(&self, n: &FakeNode, error: &str) -> pb::DecommissionStatus {
        pb::DecommissionStatus {
            phase: n.decommission as i32,
            ranges_total: RANGES,
            ranges_done: n.ranges_done,
            keys_streamed: u64::from(n.ranges_done) * 100,
            bytes_streamed: 0,
            error: error.into(),
        }
    }
}

struct FakeAdmin {
    node: String,
    ring: Arc<Mutex<Ring>>,
    timeline: Timeline,
}

impl FakeAdmin {
    fn log(&self, call: &'static str) {
        self.timeline.lock().unwrap().push(Step::Admin {
            node: self.node.clone(),
            call,
        });
    }
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ring = self.ring.lock().unwrap();
        let n = ring
            .nodes
            .get(&self.node)
            .filter(|n| n.running)
            .ok_or_else(|| Status::unavailable("pod not running"))?;
        Ok(Response::new(pb::StatusResponse {
            node_id: self.node.clone(),
            zone: n.zone.clone(),
            state: n.state as i32,
            members: ring.members(),
            repair: Some(pb::RepairStatus {
                running: n.repair_running,
                repair_id: n.repair_id,
                last_completed_unix_ms: n.repair_completed_ms,
                ..Default::default()
            }),
            decommission: Some(ring.decommission_status(n, "")),
            cleanup: Some(pb::CleanupStatus {
                running: n.cleanup_running,
                cleanup_id: n.cleanup_id,
                last_completed_unix_ms: n.cleanup_completed_ms,
                keys_dropped: if n.cleanup_completed_ms > 0 { 10 } else { 0 },
                ..Default::default()
            }),
            backup: ring
                .backups
                .get(&self.node)
                .map(|(id, running, done)| pb::BackupStatus {
                    running: *running,
                    backup_id: id.clone(),
                    last_completed_id: done.clone(),
                    files_total: 3,
                    bytes_total: 1000,
                    bytes_uploaded: 400,
                    ..Default::default()
                }),
            removal: n.removing.as_ref().map(|(victim, done)| {
                let left = ring
                    .nodes
                    .get(victim)
                    .is_none_or(|v| v.state == pb::NodeState::Left);
                pb::RemoveNodeStatus {
                    node_id: victim.clone(),
                    phase: if left {
                        pb::remove_node_status::Phase::Done
                    } else {
                        pb::remove_node_status::Phase::Streaming
                    } as i32,
                    ranges_total: RANGES,
                    ranges_done: *done,
                    keys_streamed: u64::from(*done) * 100,
                    ..Default::default()
                }
            }),
            ..Default::default()
        }))
    }

    async fn cleanup(
        &self,
        _: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        self.log("Cleanup");
        let mut ring = self.ring.lock().unwrap();
        let moving = ring
            .nodes
            .iter()
            .find(|(_, n)| matches!(n.state, pb::NodeState::Joining | pb::NodeState::Leaving))
            .map(|(id, _)| id.clone());
        if let Some(m) = moving {
            let msg = format!("cleanup on {} while {m} is moving", self.node);
            ring.refused.push(msg.clone());
            return Err(Status::failed_precondition(msg));
        }
        let n = ring
            .nodes
            .get_mut(&self.node)
            .filter(|n| n.running)
            .ok_or_else(|| Status::unavailable("pod not running"))?;
        if n.cleanup_running {
            return Ok(Response::new(pb::CleanupResponse {
                started: false,
                cleanup_id: n.cleanup_id,
            }));
        }
        n.cleanup_running = true;
        n.cleanup_id += 1;
        Ok(Response::new(pb::CleanupResponse {
            started: true,
            cleanup_id: n.cleanup_id,
        }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.log("RemoveNode");
        let victim = req.into_inner().node_id;
        let mut ring = self.ring.lock().unwrap();
        let me_ok = ring
            .nodes
            .get(&self.node)
            .is_some_and(|n| n.running && n.state == pb::NodeState::Normal);
        if !me_ok {
            return Err(Status::unavailable("pod not running"));
        }
        let Some(v) = ring.nodes.get(&victim).cloned() else {
            return Err(Status::not_found(format!("no node {victim}")));
        };
        if v.running {
            let msg = format!("{victim} is alive");
            ring.refused.push(format!("RemoveNode of {msg}"));
            return Err(Status::failed_precondition(msg));
        }
        if v.state != pb::NodeState::Left {
            ring.nodes.get_mut(&victim).unwrap().state = pb::NodeState::Leaving;
        }
        let me = ring.nodes.get_mut(&self.node).unwrap();
        if me.removing.as_ref().is_none_or(|(x, _)| *x != victim) {
            me.removing = Some((victim.clone(), 0));
        }
        let done = me.removing.as_ref().map_or(0, |(_, d)| *d);
        let left = v.state == pb::NodeState::Left;
        Ok(Response::new(pb::RemoveNodeResponse {
            status: Some(pb::RemoveNodeStatus {
                node_id: victim,
                phase: if left {
                    pb::remove_node_status::Phase::Done
                } else {
                    pb::remove_node_status::Phase::Streaming
                } as i32,
                ranges_total: RANGES,
                ranges_done: done,
                keys_streamed: u64::from(done) * 100,
                ..Default::default()
            }),
        }))
    }

    async fn decommission(
        &self,
        _: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        self.log("Decommission");
        let mut ring = self.ring.lock().unwrap();
        let refuse = ring.refuse_decommission.clone();
        let live = ring.live();
        let need = ring.n;
        let n = ring
            .nodes
            .get_mut(&self.node)
            .filter(|n| n.running)
            .ok_or_else(|| Status::unavailable("pod not running"))?;
        use pb::decommission_status::Phase;
        if n.state != pb::NodeState::Left {
            if let Some(msg) = refuse {
                return Err(Status::failed_precondition(msg));
            }
            if n.state != pb::NodeState::Leaving && live - 1 < need {
                return Err(Status::failed_precondition(format!(
                    "would leave {} < N={need} nodes",
                    live - 1
                )));
            }
            if matches!(
                n.decommission,
                Phase::Unspecified | Phase::NotStarted | Phase::Failed
            ) {
                n.decommission = Phase::Streaming;
                n.state = pb::NodeState::Leaving;
            }
        }
        let n = n.clone();
        Ok(Response::new(pb::DecommissionResponse {
            status: Some(ring.decommission_status(&n, "")),
        }))
    }

    async fn repair(
        &self,
        _: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairResponse>, Status> {
        self.log("Repair");
        let mut ring = self.ring.lock().unwrap();
        let n = ring
            .nodes
            .get_mut(&self.node)
            .filter(|n| n.running)
            .ok_or_else(|| Status::unavailable("pod not running"))?;
        if n.repair_running {
            return Ok(Response::new(pb::RepairResponse {
                started: false,
                repair_id: n.repair_id,
            }));
        }
        n.repair_running = true;
        n.repair_id += 1;
        Ok(Response::new(pb::RepairResponse {
            started: true,
            repair_id: n.repair_id,
        }))
    }

    async fn drain(
        &self,
        _: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        Ok(Response::new(pb::DrainResponse {}))
    }
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshot"))
    }
    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("list_snapshots"))
    }
    async fn delete_snapshot(
        &self,
        _: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        Err(Status::unimplemented("delete_snapshot"))
    }
    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        self.log("Backup");
        let r = req.into_inner();
        let mut ring = self.ring.lock().unwrap();
        let zone = ring
            .nodes
            .get(&self.node)
            .map(|n| n.zone.clone())
            .unwrap_or_default();
        // One node per zone at a time, and never while the ring moves.
        let same_zone_busy = ring.backups.iter().any(|(id, (_, running, _))| {
            *running && id != &self.node && ring.nodes.get(id).is_some_and(|n| n.zone == zone)
        });
        if same_zone_busy {
            let v = format!(
                "backup of {} while another node of {zone} backs up",
                self.node
            );
            ring.violations.push(v);
        }
        let moving = ring
            .nodes
            .iter()
            .any(|(_, n)| matches!(n.state, pb::NodeState::Joining | pb::NodeState::Leaving));
        if moving {
            let v = format!("backup of {} while the ring moves", self.node);
            ring.violations.push(v);
        }
        ring.backup_calls.push((
            self.node.clone(),
            r.url.clone(),
            r.backup_id.clone(),
            r.options.into_iter().collect(),
        ));
        let last = ring
            .backups
            .get(&self.node)
            .map(|b| b.2.clone())
            .unwrap_or_default();
        ring.backups
            .insert(self.node.clone(), (r.backup_id.clone(), true, last));
        Ok(Response::new(pb::BackupResponse {
            started: true,
            backup_id: r.backup_id,
        }))
    }
    async fn restore_records(
        &self,
        _: Request<pb::RestoreRecordsRequest>,
    ) -> Result<Response<pb::RestoreRecordsResponse>, Status> {
        Err(Status::unimplemented("restore_records"))
    }
    async fn restore(
        &self,
        _: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        Err(Status::unimplemented("restore"))
    }
    async fn prune_backups(
        &self,
        req: Request<pb::PruneBackupsRequest>,
    ) -> Result<Response<pb::PruneBackupsResponse>, Status> {
        self.log("PruneBackups");
        let r = req.into_inner();
        self.ring
            .lock()
            .unwrap()
            .prunes
            .push((r.url, r.keep_last, r.max_age_seconds));
        Ok(Response::new(pb::PruneBackupsResponse {
            deleted: vec!["old".into()],
            bytes_freed: 10,
            ..Default::default()
        }))
    }
    async fn list_backups(
        &self,
        _: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        Err(Status::unimplemented("list_backups"))
    }
    async fn verify_backup(
        &self,
        _: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::VerifyBackupResponse>, Status> {
        Err(Status::unimplemented("verify_backup"))
    }
}

/// The fake nodes and their servers; dropping it stops the servers.
/// The Admin service of a lone running NORMAL node `pod` in `zone`, as
/// [`FakeCluster`] serves each pod (for tests that need one server of their
/// own, behind TLS or a token check, say).
pub fn lone_node_admin(pod: &str, zone: &str) -> AdminServer<impl Admin> {
    let mut ring = Ring {
        n: 1,
        ..Ring::default()
    };
    let mut node = new_node(&mut ring, zone, "r1", "ringkv");
    node.state = pb::NodeState::Normal;
    node.ready = true;
    ring.nodes.insert(pod.to_string(), node);
    AdminServer::new(FakeAdmin {
        node: pod.to_string(),
        ring: Arc::new(Mutex::new(ring)),
        timeline: Timeline::default(),
    })
}

pub struct FakeCluster {
    pub ring: Arc<Mutex<Ring>>,
    addrs: BTreeMap<String, SocketAddr>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

impl FakeCluster {
    /// Starts an Admin server for each pod name a test may create.
    pub async fn start(pods: &[String], n: usize, timeline: Timeline) -> Self {
        let ring = Arc::new(Mutex::new(Ring {
            n,
            ..Ring::default()
        }));
        let mut addrs = BTreeMap::new();
        let mut servers = Vec::new();
        for pod in pods {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(pod.clone(), listener.local_addr().unwrap());
            let svc = AdminServer::new(FakeAdmin {
                node: pod.clone(),
                ring: ring.clone(),
                timeline: timeline.clone(),
            });
            servers.push(tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await;
            }));
        }
        Self {
            ring,
            addrs,
            servers,
        }
    }

    pub fn resolver(&self) -> Resolver {
        let addrs = self.addrs.clone();
        Arc::new(move |a| match addrs.get(&a.pod) {
            Some(s) => s.to_string(),
            None => "127.0.0.1:1".to_string(),
        })
    }

    pub fn state(&self, pod: &str) -> Option<pb::NodeState> {
        self.ring.lock().unwrap().nodes.get(pod).map(|n| n.state)
    }

    /// One tick of the world: node progress, then the StatefulSet controller
    /// and kubelet for every StatefulSet.
    pub fn step(&self, api: &FakeApi, ns: &str) {
        let mut ring = self.ring.lock().unwrap();
        ring.now_ms += 5_000;
        let now = ring.now_ms;
        let fail_once = ring.fail_decommission_once.take();
        let mut failed_used = false;
        use pb::decommission_status::Phase;
        for n in ring.nodes.values_mut() {
            if !n.running {
                continue;
            }
            match n.state {
                pb::NodeState::Joining => {
                    n.state = pb::NodeState::Normal;
                    n.ready = true;
                }
                pb::NodeState::Normal if !n.ready => n.ready = true,
                pb::NodeState::Leaving if n.decommission == Phase::Streaming => {
                    if let (Some(_), false) = (&fail_once, failed_used) {
                        n.decommission = Phase::Failed;
                        failed_used = true;
                    } else {
                        n.ranges_done = (n.ranges_done + 2).min(RANGES);
                        if n.ranges_done == RANGES {
                            n.decommission = Phase::Done;
                            n.state = pb::NodeState::Left;
                        }
                    }
                }
                _ => {}
            }
            if n.repair_running {
                n.repair_running = false;
                n.repair_completed_ms = now;
            }
            if n.cleanup_running {
                n.cleanup_running = false;
                n.cleanup_completed_ms = now;
            }
        }
        // A node backup takes one tick.
        for b in ring.backups.values_mut() {
            if b.1 {
                b.1 = false;
                b.2 = b.0.clone();
            }
        }
        // Removals stream two ranges a tick; the dead node is LEFT at the end.
        let removals: Vec<(String, String)> = ring
            .nodes
            .iter()
            .filter(|(_, n)| n.running)
            .filter_map(|(id, n)| n.removing.as_ref().map(|(v, _)| (id.clone(), v.clone())))
            .collect();
        for (via, victim) in removals {
            let done = {
                let r = ring.nodes.get_mut(&via).unwrap().removing.as_mut().unwrap();
                r.1 = (r.1 + 2).min(RANGES);
                r.1
            };
            if done == RANGES
                && let Some(v) = ring.nodes.get_mut(&victim)
                && v.state == pb::NodeState::Leaving
            {
                v.state = pb::NodeState::Left;
            }
        }
        if fail_once.is_some() && !failed_used {
            ring.fail_decommission_once = fail_once;
        }

        for sts in api.list("statefulsets", ns) {
            step_statefulset(&mut ring, api, ns, &sts);
        }
        // Orphaned pods (their StatefulSet was deleted with --cascade=orphan)
        // keep running untouched until a StatefulSet adopts them.
        let pods: Vec<String> = ring.nodes.keys().cloned().collect();
        for pod in pods {
            write_pod(&ring, api, ns, &pod);
        }
    }
}

fn new_node(ring: &mut Ring, zone: &str, revision: &str, image: &str) -> FakeNode {
    let running = !ring.bad_images.iter().any(|b| b == image);
    FakeNode {
        zone: zone.into(),
        state: pb::NodeState::Joining,
        ready: false,
        running,
        revision: revision.into(),
        image: image.into(),
        pod_uid: ring.uid(),
        decommission: pb::decommission_status::Phase::NotStarted,
        ranges_done: 0,
        repair_running: false,
        repair_id: 0,
        repair_completed_ms: 0,
        restarts: 0,
        cleanup_running: false,
        cleanup_id: 0,
        cleanup_completed_ms: 0,
        dead: false,
        removing: None,
    }
}

/// A pod restarts on `revision` (and its image): same node id, same volume.
fn restart(ring: &mut Ring, pod: &str, revision: &str, image: &str) {
    let running = !ring.bad_images.iter().any(|b| b == image) && !ring.nodes[pod].dead;
    let uid = ring.uid();
    let n = ring.nodes.get_mut(pod).unwrap();
    n.revision = revision.into();
    n.image = image.into();
    n.ready = false;
    n.running = running;
    n.pod_uid = uid;
    n.restarts += 1;
    if !running {
        n.ready = false;
    }
}

fn step_statefulset(ring: &mut Ring, api: &FakeApi, ns: &str, sts: &Value) {
    let name = sts["metadata"]["name"].as_str().unwrap().to_string();
    let zone = sts
        .pointer("/metadata/labels/ringkv.io~1zone")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let r = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1) as i32;
    let p = sts
        .pointer("/spec/updateStrategy/rollingUpdate/partition")
        .and_then(Value::as_i64)
        .unwrap_or(0) as i32;
    let upd = sts
        .pointer("/metadata/annotations/ringkv.io~1template-hash")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let image = sts
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let cur_rev = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .unwrap_or(&upd)
        .to_string();
    let generation = sts
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let when_scaled = sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenScaled")
        .and_then(Value::as_str)
        .unwrap_or("Retain")
        .to_string();
    let size = sts
        .pointer("/spec/volumeClaimTemplates/0/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .unwrap_or("10Gi")
        .to_string();
    let pod = |o: i32| format!("{name}-{o}");
    // Pods above replicas go away (and, per the retention policy, their volumes).
    let doomed: Vec<String> = ring
        .nodes
        .keys()
        .filter(|k| {
            k.strip_prefix(&format!("{name}-"))
                .and_then(|o| o.parse::<i32>().ok())
                .is_some_and(|o| o >= r)
        })
        .cloned()
        .collect();
    for pn in ring.unschedulable.clone() {
        let beyond = pn
            .strip_prefix(&format!("{name}-"))
            .and_then(|o| o.parse::<i32>().ok())
            .is_some_and(|o| o >= r);
        if beyond {
            api.remove("pods", ns, &pn);
        }
    }
    for d in doomed {
        let node = ring.nodes.remove(&d).unwrap();
        if node.state != pb::NodeState::Left && !ring.allow_removal {
            ring.violations.push(format!(
                "{d} removed while {:?}: its data was lost",
                node.state
            ));
        }
        api.remove("pods", ns, &d);
        if when_scaled == "Delete" {
            api.remove("persistentvolumeclaims", ns, &format!("data-{d}"));
            ring.volumes.remove(&format!("data-{d}"));
        }
    }
    for o in 0..r {
        let pn = pod(o);
        if ring.unschedulable.contains(&pn) {
            write_pending_pod(api, ns, &pn);
            continue;
        }
        // A Pod object deleted together with its volume: a new, empty node
        // (its old incarnation must have left the ring first, or data is lost).
        let claim = format!("data-{pn}");
        if ring.nodes.contains_key(&pn)
            && api.get("pods", ns, &pn).is_none()
            && api.get("persistentvolumeclaims", ns, &claim).is_none()
        {
            let old = ring.nodes.remove(&pn).unwrap();
            if old.state != pb::NodeState::Left {
                ring.violations.push(format!(
                    "{pn} re-created on a new volume while {:?}: its data was lost",
                    old.state
                ));
            }
            let rev = if o >= p { upd.clone() } else { cur_rev.clone() };
            let img = if o >= p {
                image.clone()
            } else {
                old.image.clone()
            };
            let n = new_node(ring, &zone, &rev, &img);
            ring.nodes.insert(pn.clone(), n);
        }
        // A Pod object deleted through the API (not by us): re-created on the
        // revision its ordinal gets, like the StatefulSet controller does.
        if ring.nodes.contains_key(&pn) && api.get("pods", ns, &pn).is_none() {
            let (rev, img) = if o >= p {
                (upd.clone(), image.clone())
            } else {
                let n = &ring.nodes[&pn];
                if n.revision == cur_rev {
                    (n.revision.clone(), n.image.clone())
                } else {
                    (cur_rev.clone(), "last-good".to_string())
                }
            };
            restart(ring, &pn, &rev, &img);
        }
        if !ring.nodes.contains_key(&pn) {
            let rev = if o >= p { upd.clone() } else { cur_rev.clone() };
            let n = new_node(ring, &zone, &rev, &image);
            ring.nodes.insert(pn.clone(), n);
        }
        // The volume: created with the pod if missing, kept otherwise.
        if api.get("persistentvolumeclaims", ns, &claim).is_none() {
            let uid = ring.uid();
            ring.volumes.insert(claim.clone(), uid);
            let labels = sts
                .pointer("/spec/volumeClaimTemplates/0/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            api.insert(
                "api/v1",
                "persistentvolumeclaims",
                ns,
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "labels": labels, "uid": format!("pvc-{uid}")},
                    "spec": {"storageClassName": "standard", "resources": {"requests": {"storage": size}}},
                    "status": {"phase": "Bound", "capacity": {"storage": size}}
                }),
            );
        }
    }
    // RollingUpdate like the StatefulSet controller: from the top ordinal
    // down to the partition, replace the first pod on an old revision, and
    // stop at the first unhealthy one.
    for o in (p..r).rev() {
        let pn = pod(o);
        let Some(n) = ring.nodes.get(&pn) else {
            continue;
        };
        if n.revision != upd {
            restart(ring, &pn, &upd, &image);
            break;
        }
        if !n.ready {
            break;
        }
    }
    let exists = |o: i32| ring.nodes.contains_key(&pod(o));
    let unready = (0..r)
        .filter(|&o| exists(o))
        .filter(|&o| {
            !ring.nodes[&pod(o)].ready && ring.nodes[&pod(o)].state == pb::NodeState::Normal
        })
        .count();
    ring.max_unready = ring.max_unready.max(unready);
    // Pending pods exist too (they are just not in the ring).
    let have = (0..r)
        .filter(|&o| exists(o) || ring.unschedulable.contains(&pod(o)))
        .count() as i64;
    let ready = (0..r)
        .filter(|&o| exists(o) && ring.nodes[&pod(o)].ready)
        .count() as i64;
    // A pending pod was created on the update revision.
    let updated = (0..r)
        .filter(|&o| {
            (exists(o) && ring.nodes[&pod(o)].revision == upd)
                || (!exists(o) && ring.unschedulable.contains(&pod(o)))
        })
        .count() as i64;
    let current = if updated == i64::from(r) {
        upd.clone()
    } else {
        cur_rev.clone()
    };
    api.update("statefulsets", ns, &name, |o| {
        o["status"] = json!({
            "replicas": have,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": upd,
            "observedGeneration": generation,
        });
    });
}

/// The Pod object of a ring node, as the kubelet reports it.
fn write_pod(ring: &Ring, api: &FakeApi, ns: &str, pod: &str) {
    let n = &ring.nodes[pod];
    let (cluster, zone) = ("kv", n.zone.as_str());
    let status = if n.dead {
        json!({
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ],
            "containerStatuses": [{"name": "node", "ready": false, "restartCount": 5, "image": n.image, "imageID": "",
                                   "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "data directory unreadable"}}}]
        })
    } else if n.running {
        json!({
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": if n.ready { "True" } else { "False" }}
            ],
            "containerStatuses": [{"name": "node", "ready": n.ready, "restartCount": 0, "image": n.image, "imageID": "",
                                   "state": {"running": {}}}]
        })
    } else {
        json!({
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ],
            "containerStatuses": [{"name": "node", "ready": false, "restartCount": 0, "image": n.image, "imageID": "",
                                   "state": {"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{}\"", n.image)}}}]
        })
    };
    // Annotations someone put on the pod stay (until the pod is re-created).
    let annotations = api
        .get("pods", ns, pod)
        .filter(|o| {
            o.pointer("/metadata/uid").and_then(Value::as_str)
                == Some(&format!("pod-{}", n.pod_uid))
        })
        .and_then(|o| o.pointer("/metadata/annotations").cloned())
        .unwrap_or(json!({}));
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod, "uid": format!("pod-{}", n.pod_uid),
            "annotations": annotations,
            "labels": {
                "app.kubernetes.io/name": "ringkv",
                "app.kubernetes.io/instance": cluster,
                "ringkv.io/zone": zone,
                "controller-revision-hash": n.revision,
            }
        },
        "spec": {"containers": [{"name": "node", "image": n.image}]},
        "status": status,
    });
    if api.get("pods", ns, pod).as_ref() != Some(&obj) {
        api.insert("api/v1", "pods", ns, obj);
    }
}

fn write_pending_pod(api: &FakeApi, ns: &str, pod: &str) {
    let zone = pod
        .strip_prefix("kv-")
        .and_then(|r| r.rsplit_once('-'))
        .map_or("", |(z, _)| z);
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod, "uid": format!("pending-{pod}"),
            "labels": {"app.kubernetes.io/name": "ringkv", "app.kubernetes.io/instance": "kv", "ringkv.io/zone": zone}
        },
        "spec": {"containers": [{"name": "node", "image": "any"}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient memory."}]
        }
    });
    if api.get("pods", ns, pod).is_none() {
        api.insert("api/v1", "pods", ns, obj);
    }
}
