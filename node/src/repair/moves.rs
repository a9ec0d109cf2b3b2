//! Join and decommission: range streaming built on the range sync.
//!
//! Join: a new node announces JOINING with its tokens (so writes for the
//! ranges it will own start reaching it as a pending replica), waits for that
//! to spread, then syncs every range it will replicate with the range's
//! current replicas, and only then turns NORMAL and serves reads.
//!
//! Decommission: the node announces LEAVING (writes for its ranges start
//! reaching their future owners too), syncs every range it replicates with
//! the replicas that will take it over, then announces LEFT and stops taking
//! client requests. Both record their phase in the data directory
//! (`ring_state`), so a restart resumes them instead of serving half-moved
//! data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::decommission_status::Phase;

use super::{Repairer, SyncStats, TokenRange};
use crate::membership::{Member, Membership, NodeState};
use crate::ring::Topology;

const STATE_FILE: &str = "ring_state";
const PARALLEL: usize = 4;

/// Where a joining node streams range `r` from: its current replicas but us.
fn sources(topo: &Topology, r: TokenRange, n: usize, me: &str) -> Vec<Member> {
    topo.replicas_of_token(r.end, n)
        .into_iter()
        .filter(|m| m.node_id != me)
        .cloned()
        .collect()
}

/// A move this node was in when it stopped, if any.
pub fn load_state(dir: &Path) -> std::io::Result<Option<NodeState>> {
    match std::fs::read_to_string(dir.join(STATE_FILE)) {
        Ok(s) => Ok(match s.trim() {
            "joining" => Some(NodeState::Joining),
            "leaving" => Some(NodeState::Leaving),
            "left" => Some(NodeState::Left),
            "repairing" => Some(NodeState::Repairing),
            _ => None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records (or with `None` clears) the move in progress, durably.
pub fn save_state(dir: &Path, state: Option<NodeState>) -> std::io::Result<()> {
    let path = dir.join(STATE_FILE);
    let Some(s) = state else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    let word = match s {
        NodeState::Joining => "joining",
        NodeState::Leaving => "leaving",
        NodeState::Left => "left",
        NodeState::Repairing => "repairing",
        NodeState::Normal => return save_state(dir, None),
    };
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(word.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[derive(Debug, thiserror::Error)]
pub enum DecommissionError {
    #[error(
        "decommissioning would leave {remaining} NORMAL node(s), fewer than the replication factor N={n}"
    )]
    TooFewNodes { remaining: usize, n: u32 },
    #[error("this node is {0:?}; only a NORMAL (or resuming LEAVING) node can decommission")]
    WrongState(NodeState),
}

#[derive(Debug, Default, Clone)]
struct Progress {
    total: u32,
    done: u32,
    keys: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Decom {
    phase: Phase,
    running: bool,
    progress: Progress,
    error: String,
}

type OnLeft = Box<dyn Fn() + Send + Sync>;

pub struct Moves {
    repair: Arc<Repairer>,
    membership: Membership,
    dir: PathBuf,
    /// How long a state change is given to spread by gossip before data moves.
    settle: Duration,
    join: Mutex<Option<Progress>>,
    decom: Mutex<Decom>,
    on_left: OnLeft,
}

impl std::fmt::Debug for Moves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moves").field("dir", &self.dir).finish()
    }
}

impl Moves {
    pub fn new(
        repair: Arc<Repairer>,
        membership: Membership,
        dir: PathBuf,
        settle: Duration,
        on_left: OnLeft,
    ) -> Arc<Moves> {
        let left = membership.local().state == NodeState::Left.to_proto() as i32;
        Arc::new(Moves {
            repair,
            membership,
            dir,
            settle,
            join: Mutex::new(None),
            decom: Mutex::new(Decom {
                phase: if left { Phase::Done } else { Phase::NotStarted },
                running: false,
                progress: Progress::default(),
                error: String::new(),
            }),
            on_left,
        })
    }

    fn state(&self) -> NodeState {
        NodeState::from_proto(self.membership.local().state).unwrap_or(NodeState::Normal)
    }

    async fn set_state(&self, s: NodeState) -> std::io::Result<()> {
        save_state(&self.dir, Some(s))?;
        self.membership
            .update_local(|l| l.state = s.to_proto() as i32)
            .await;
        Ok(())
    }

    /// Syncs each range with its peers, `PARALLEL` ranges at a time; returns
    /// the ranges that failed.
    async fn stream(
        &self,
        work: Vec<(TokenRange, Vec<Member>)>,
        progress: impl Fn(SyncStats) + Sync,
        need_all: bool,
    ) -> Vec<(TokenRange, Vec<Member>, String)> {
        let progress = &progress;
        futures::stream::iter(work)
            .map(|(range, peers)| async move {
                let mut ok = 0;
                let mut err = String::new();
                for p in &peers {
                    if !p.alive {
                        err = format!("{} is down", p.node_id);
                        continue;
                    }
                    match self.repair.sync_range(range, p).await {
                        Ok(s) => {
                            ok += 1;
                            progress(s);
                        }
                        Err(e) => err = format!("{}: {e}", p.node_id),
                    }
                }
                let complete = if need_all { ok == peers.len() } else { ok > 0 };
                if complete {
                    None
                } else {
                    Some((range, peers, err))
                }
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|x| async move { x })
            .collect()
            .await
    }

    /// Runs a join to completion: streams in every range this node will
    /// replicate, retrying until each has come from at least one current
    /// replica, then turns NORMAL.
    pub async fn join(self: Arc<Self>) {
        tokio::time::sleep(self.settle).await;
        let topo = self.repair.topology();
        let me = self.repair.node_id().to_string();
        let n = self.repair.n() as usize;
        let mut work: Vec<(TokenRange, Vec<Member>)> = super::ring_ranges(&topo.future)
            .into_iter()
            .filter(|r| {
                topo.future_replicas_of_token(r.end, n)
                    .iter()
                    .any(|m| m.node_id == me)
            })
            .map(|r| (r, sources(&topo, r, n, &me)))
            .collect();
        *self.join.lock() = Some(Progress {
            total: work.len() as u32,
            ..Default::default()
        });
        tracing::info!(ranges = work.len(), "joining: streaming ranges in");
        let metrics = self.repair.metrics().clone();
        loop {
            let total = work.len();
            let failed = self
                .stream(
                    work,
                    |s| {
                        metrics.stream_keys.inc_by(s.keys);
                        metrics.stream_bytes.inc_by(s.bytes);
                        if let Some(p) = self.join.lock().as_mut() {
                            p.keys += s.keys;
                            p.bytes += s.bytes;
                        }
                    },
                    false,
                )
                .await;
            if let Some(p) = self.join.lock().as_mut() {
                p.done += (total - failed.len()) as u32;
            }
            if failed.is_empty() {
                break;
            }
            tracing::warn!(failed = failed.len(), first = %failed[0].2, "joining: some ranges could not stream yet; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Liveness may have changed: refresh each range's sources.
            let topo = self.repair.topology();
            work = failed
                .into_iter()
                .map(|(r, _, _)| (r, sources(&topo, r, n, &me)))
                .collect();
        }
        if let Err(e) = save_state(&self.dir, None) {
            tracing::error!(error = %e, "cannot record the end of the join; staying JOINING");
            return;
        }
        self.membership
            .update_local(|l| l.state = NodeState::Normal.to_proto() as i32)
            .await;
        tracing::info!("joined: NORMAL");
    }

    pub fn join_status(&self) -> Option<pb::JoinStatus> {
        self.join.lock().as_ref().map(|p| pb::JoinStatus {
            ranges_total: p.total,
            ranges_done: p.done,
            keys_streamed: p.keys,
            bytes_streamed: p.bytes,
        })
    }

    pub fn decommission_status(&self) -> pb::DecommissionStatus {
        let d = self.decom.lock();
        pb::DecommissionStatus {
            phase: d.phase as i32,
            ranges_total: d.progress.total,
            ranges_done: d.progress.done,
            keys_streamed: d.progress.keys,
            bytes_streamed: d.progress.bytes,
            error: d.error.clone(),
        }
    }

    /// Starts (or resumes, or reports) a decommission; see admin.proto.
    pub fn decommission(self: &Arc<Self>) -> Result<pb::DecommissionStatus, DecommissionError> {
        {
            let mut d = self.decom.lock();
            let state = self.state();
            if state == NodeState::Left || d.phase == Phase::Done {
                d.phase = Phase::Done;
                drop(d);
                return Ok(self.decommission_status());
            }
            if d.running {
                drop(d);
                return Ok(self.decommission_status());
            }
            if !matches!(state, NodeState::Normal | NodeState::Leaving) {
                return Err(DecommissionError::WrongState(state));
            }
            let repair = &self.repair;
            let n = repair.n();
            let me = repair.node_id();
            let remaining = repair
                .topology()
                .view
                .members
                .iter()
                .filter(|m| m.node_id != me && m.state == NodeState::Normal && !m.tokens.is_empty())
                .count();
            if remaining < n as usize {
                return Err(DecommissionError::TooFewNodes { remaining, n });
            }
            d.running = true;
            d.phase = Phase::Streaming;
            d.error.clear();
        }
        let this = self.clone();
        tokio::spawn(async move { this.run_decommission().await });
        Ok(self.decommission_status())
    }

    async fn run_decommission(self: Arc<Self>) {
        let fail = |this: &Self, e: String| {
            tracing::warn!(error = %e, "decommission failed; call Decommission again to resume");
            let mut d = this.decom.lock();
            d.running = false;
            d.phase = Phase::Failed;
            d.error = e;
        };
        if let Err(e) = self.set_state(NodeState::Leaving).await {
            return fail(&self, format!("cannot record LEAVING: {e}"));
        }
        tracing::info!("decommission: LEAVING");
        tokio::time::sleep(self.settle).await;
        let repair = self.repair.clone();
        let topo = repair.topology();
        let n = repair.n() as usize;
        let me = repair.node_id().to_string();
        let work: Vec<(TokenRange, Vec<Member>)> = self
            .repair
            .my_ranges()
            .into_iter()
            .filter_map(|(r, peers)| {
                let targets: Vec<Member> = topo
                    .future_replicas_of_token(r.end, n)
                    .into_iter()
                    .filter(|m| m.node_id != me && !peers.iter().any(|p| p.node_id == m.node_id))
                    .cloned()
                    .collect();
                (!targets.is_empty()).then_some((r, targets))
            })
            .collect();
        {
            let mut d = self.decom.lock();
            d.progress = Progress {
                total: work.len() as u32,
                ..Default::default()
            };
        }
        let total = work.len();
        let metrics = repair.metrics().clone();
        let failed = self
            .stream(
                work,
                |s| {
                    metrics.stream_keys.inc_by(s.keys);
                    metrics.stream_bytes.inc_by(s.bytes);
                    let mut d = self.decom.lock();
                    d.progress.keys += s.keys;
                    d.progress.bytes += s.bytes;
                },
                true,
            )
            .await;
        self.decom.lock().progress.done = (total - failed.len()) as u32;
        if let Some((r, _, e)) = failed.first() {
            return fail(
                &self,
                format!("{} range(s) not streamed; first {r:?}: {e}", failed.len()),
            );
        }
        if let Err(e) = self.set_state(NodeState::Left).await {
            return fail(&self, format!("cannot record LEFT: {e}"));
        }
        tracing::info!("decommissioned: LEFT; no longer serving");
        // Let LEFT spread before refusing clients, so none is sent here after.
        tokio::time::sleep(self.settle).await;
        (self.on_left)();
        let mut d = self.decom.lock();
        d.running = false;
        d.phase = Phase::Done;
    }
}
