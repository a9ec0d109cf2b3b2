//! A fake ringkv cluster: one real Admin gRPC server per potential pod (bound to
//! 127.0.0.1:0), backed by a shared in-memory ring, plus a simulation of the
//! StatefulSet controller and kubelet that turns StatefulSet specs in the fake
//! API into pods (ring members) and StatefulSet status.
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
    pub revision: String,
    pub decommission: pb::decommission_status::Phase,
    pub ranges_done: u32,
    pub repair_running: bool,
    pub repair_id: u64,
    pub repair_completed_ms: u64,
    /// Existed before the current rollout began (for counting restarts).
    pub restarts: u32,
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
                alive: true,
                ..Default::default()
            })
            .collect()
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
            ..Default::default()
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
}

/// The fake nodes and their servers; dropping it stops the servers.
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

    /// One tick of the world: node progress, then the StatefulSet controller.
    pub fn step(&self, api: &FakeApi, ns: &str) {
        let mut ring = self.ring.lock().unwrap();
        ring.now_ms += 5_000;
        let now = ring.now_ms;
        let fail_once = ring.fail_decommission_once.take();
        let mut failed_used = false;
        use pb::decommission_status::Phase;
        for n in ring.nodes.values_mut() {
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
        }
        if fail_once.is_some() && !failed_used {
            ring.fail_decommission_once = fail_once;
        }

        for sts in api.list("statefulsets", ns) {
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
            let cur_rev = sts
                .pointer("/status/currentRevision")
                .and_then(Value::as_str)
                .unwrap_or(&upd)
                .to_string();
            let generation = sts
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let pod = |o: i32| format!("{name}-{o}");
            // Pods above replicas go away.
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
            for d in doomed {
                let node = ring.nodes.remove(&d).unwrap();
                if node.state != pb::NodeState::Left && !ring.allow_removal {
                    ring.violations.push(format!(
                        "{d} removed while {:?}: its data was lost",
                        node.state
                    ));
                }
            }
            for o in 0..r {
                ring.nodes.entry(pod(o)).or_insert_with(|| FakeNode {
                    zone: zone.clone(),
                    state: pb::NodeState::Joining,
                    ready: false,
                    revision: if o >= p { upd.clone() } else { cur_rev.clone() },
                    decommission: Phase::NotStarted,
                    ranges_done: 0,
                    repair_running: false,
                    repair_id: 0,
                    repair_completed_ms: 0,
                    restarts: 0,
                });
            }
            // RollingUpdate: the highest outdated ordinal >= partition, one at a time.
            let all_ready = (0..r).all(|o| ring.nodes[&pod(o)].ready);
            if all_ready
                && let Some(o) = (p..r).rev().find(|&o| ring.nodes[&pod(o)].revision != upd)
            {
                let n = ring.nodes.get_mut(&pod(o)).unwrap();
                n.revision = upd.clone();
                n.ready = false;
                n.restarts += 1;
            }
            let unready = (0..r)
                .filter(|&o| {
                    !ring.nodes[&pod(o)].ready && ring.nodes[&pod(o)].state == pb::NodeState::Normal
                })
                .count();
            ring.max_unready = ring.max_unready.max(unready);
            let ready = (0..r).filter(|&o| ring.nodes[&pod(o)].ready).count() as i64;
            let updated = (0..r)
                .filter(|&o| ring.nodes[&pod(o)].revision == upd)
                .count() as i64;
            let current = if updated == i64::from(r) {
                upd.clone()
            } else {
                cur_rev.clone()
            };
            api.update("statefulsets", ns, &name, |o| {
                o["status"] = json!({
                    "replicas": r,
                    "readyReplicas": ready,
                    "updatedReplicas": updated,
                    "currentRevision": current,
                    "updateRevision": upd,
                    "observedGeneration": generation,
                });
            });
        }
    }
}
