//! Gossip membership on chitchat: Scuttlebutt anti-entropy gossip of every
//! node's key-value state, heartbeats, and a phi-accrual failure detector.
//!
//! Each node publishes its entry key by key (`zone`, `state`, `tokens`,
//! `internode`, `grpc`, `http`); the chitchat generation is the node's start
//! time, so a restart supersedes the old incarnation. Seeds are host:port
//! strings; a name that resolves to many addresses (a Kubernetes headless
//! Service) counts as all of them and is re-resolved every minute by chitchat.
//!
//! Chitchat forgets dead nodes after a grace period; the ring must not (a
//! node down for a day still owns its ranges until it is decommissioned), so
//! the view keeps every member it has ever seen, marked not alive.
//!
//! Every datagram passes [`super::udp`] first (cluster secret, replay
//! window, size and decompression bounds). What gossip says is still only
//! believed when plausible: an incarnation whose generation (its start time,
//! wall-clock ms) lies more than [`GENERATION_SKEW`] ahead of our clock is
//! ignored, and of a node's incarnations the view prefers one it hears from
//! and that has published its whole state. So a forged datagram naming a
//! node with generation 2^62 cannot shadow the real node, and once a forger
//! goes quiet the live incarnation wins again (issue 9, finding 2).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState as GossipState,
    ProtocolVersion, spawn_chitchat,
};
use parking_lot::Mutex;
use ringkv_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::guard::GossipSecret;
use super::removal::{self, Removal, Removals};
use super::udp::{GossipStats, GuardedTransport};
use super::{Member, MembershipView, NodeState};
use crate::ratelimit::LogEvery;
use crate::transport::FaultInjector;

/// How far ahead of our clock a generation (a start time) may be.
pub const GENERATION_SKEW: Duration = Duration::from_secs(600);

const CLUSTER_ID: &str = "ringkv";
const K_ZONE: &str = "zone";
const K_STATE: &str = "state";
const K_TOKENS: &str = "tokens";
const K_INTERNODE: &str = "internode";
const K_GRPC: &str = "grpc";
const K_HTTP: &str = "http";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    #[error("cannot bind gossip socket {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("advertise host {host:?} does not resolve: {reason}")]
    Advertise { host: String, reason: String },
    #[error(transparent)]
    Secret(#[from] super::guard::SecretError),
}

/// How to gossip.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    pub listen: SocketAddr,
    /// Host peers use to reach this node (its gossip port is appended).
    pub advertise_host: String,
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub phi_threshold: f64,
    /// Test hook: gossip obeys the same partitions as internode calls.
    pub faults: Option<Arc<FaultInjector>>,
    /// The cluster's gossip secret; `None` gossips unauthenticated.
    pub secret: Option<GossipSecret>,
}

#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.inner.me)
            .finish()
    }
}

struct Inner {
    me: String,
    addr: SocketAddr,
    handle: Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    local: Mutex<pb::MemberInfo>,
    /// Every member ever seen, by id (see the module comment).
    known: Mutex<BTreeMap<String, Member>>,
    /// This node's previous incarnation as the cluster remembers it.
    previous: Mutex<Option<Member>>,
    /// Every removal heard of (see `removal`), and who announces which.
    removals: Mutex<Removals>,
    heard: Mutex<BTreeMap<String, Removals>>,
    tx: watch::Sender<Arc<MembershipView>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<GossipStats>,
    /// Incarnations currently ignored as implausible (for metrics).
    implausible: std::sync::atomic::AtomicU64,
    implausible_log: LogEvery,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode_tokens(t: &[u64]) -> String {
    let mut s = String::with_capacity(t.len() * 21);
    for (i, x) in t.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&x.to_string());
    }
    s
}

fn decode_tokens(s: &str) -> Option<Vec<u64>> {
    s.split_ascii_whitespace()
        .map(|t| t.parse::<u64>().ok())
        .collect()
}

fn local_kvs(l: &pb::MemberInfo) -> Vec<(String, String)> {
    vec![
        (K_ZONE.into(), l.zone.clone()),
        (K_STATE.into(), l.state.to_string()),
        (K_TOKENS.into(), encode_tokens(&l.tokens)),
        (K_INTERNODE.into(), l.internode_addr.clone()),
        (K_GRPC.into(), l.client_grpc_addr.clone()),
        (K_HTTP.into(), l.http_addr.clone()),
    ]
}

/// A member from its gossiped state; `None` until the state has arrived.
fn member_from_gossip(id: &ChitchatId, st: &GossipState, alive: bool) -> Option<Member> {
    let state = NodeState::from_proto(st.get(K_STATE)?.parse().ok()?)?;
    Some(Member {
        node_id: id.node_id.to_string(),
        zone: st.get(K_ZONE)?.to_string(),
        state,
        generation: id.generation_id,
        tokens: Arc::new(decode_tokens(st.get(K_TOKENS)?)?),
        internode_addr: st.get(K_INTERNODE)?.to_string(),
        client_grpc_addr: st.get(K_GRPC)?.to_string(),
        http_addr: st.get(K_HTTP)?.to_string(),
        gossip_addr: id.gossip_advertise_addr.to_string(),
        alive,
    })
}

async fn resolve_advertise(host: &str, port: u16) -> Result<SocketAddr, MembershipError> {
    // In Kubernetes the pod's own DNS name can lag its start by a moment.
    let mut last = String::new();
    for _ in 0..30 {
        match tokio::net::lookup_host((host, port)).await {
            Ok(mut it) => {
                if let Some(a) = it.next() {
                    return Ok(a);
                }
                last = "no addresses".into();
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(MembershipError::Advertise {
        host: host.into(),
        reason: last,
    })
}

impl Membership {
    /// Binds the gossip socket and starts gossiping. `local` is this node's
    /// entry (its `gossip_addr` and `generation` are filled in here).
    pub async fn start(
        mut local: pb::MemberInfo,
        opts: GossipOptions,
    ) -> Result<Membership, MembershipError> {
        let bind_err = |reason: String| MembershipError::Bind {
            addr: opts.listen,
            reason,
        };
        // Chitchat binds its own socket and needs its advertised address
        // first, so an ephemeral port is found by binding and releasing it.
        let mut attempts = 0;
        let stats = Arc::new(GossipStats::default());
        let (handle, addr) = loop {
            attempts += 1;
            let listen = if opts.listen.port() == 0 {
                let probe =
                    std::net::UdpSocket::bind(opts.listen).map_err(|e| bind_err(e.to_string()))?;
                probe.local_addr().map_err(|e| bind_err(e.to_string()))?
            } else {
                opts.listen
            };
            let advertise = resolve_advertise(&opts.advertise_host, listen.port()).await?;
            if let Some(f) = &opts.faults {
                f.register_gossip(advertise, &local.node_id);
                f.register_gossip(listen, &local.node_id);
            }
            local.gossip_addr = advertise.to_string();
            let id = ChitchatId::new(local.node_id.clone(), local.generation, advertise);
            let config = ChitchatConfig {
                chitchat_id: id,
                cluster_id: CLUSTER_ID.into(),
                gossip_interval: opts.interval,
                listen_addr: listen,
                seed_nodes: opts.seeds.clone(),
                failure_detector_config: FailureDetectorConfig {
                    phi_threshold: opts.phi_threshold,
                    sampling_window_size: 1000,
                    // A gap longer than this is an outage, not a sample.
                    max_interval: opts.interval * 10,
                    initial_interval: opts.interval,
                    dead_node_grace_period: Duration::from_secs(24 * 3600),
                },
                marked_for_deletion_grace_period: Duration::from_secs(3600),
                catchup_callback: None,
                extra_liveness_predicate: None,
                protocol_version: ProtocolVersion::V0,
            };
            let transport = GuardedTransport {
                me: local.node_id.clone(),
                secret: opts.secret.clone(),
                faults: opts.faults.clone(),
                stats: stats.clone(),
            };
            match spawn_chitchat(config, local_kvs(&local), &transport).await {
                Ok(h) => break (h, listen),
                Err(e) if opts.listen.port() == 0 && attempts < 5 => {
                    tracing::debug!(error = %e, "gossip port taken meanwhile; retrying");
                }
                Err(e) => return Err(bind_err(format!("{e:#}"))),
            }
        };
        let me = local.node_id.clone();
        let self_member = Member::from_info(&local, true);
        let view = MembershipView {
            version: 1,
            members: self_member.into_iter().collect(),
        };
        let (tx, _) = watch::channel(Arc::new(view));
        let inner = Arc::new(Inner {
            me,
            addr,
            chitchat: handle.chitchat(),
            handle: Mutex::new(Some(handle)),
            local: Mutex::new(local),
            known: Mutex::new(BTreeMap::new()),
            previous: Mutex::new(None),
            removals: Mutex::new(Removals::new()),
            heard: Mutex::new(BTreeMap::new()),
            tx,
            tasks: Mutex::new(Vec::new()),
            stats,
            implausible: Default::default(),
            implausible_log: LogEvery::new(Duration::from_secs(60)),
        });
        let task = tokio::spawn(follow(inner.clone(), opts.interval));
        inner.tasks.lock().push(task);
        Ok(Membership { inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Gossip datagrams dropped before decoding, by reason (every reason listed).
    pub fn gossip_dropped(&self) -> BTreeMap<&'static str, u64> {
        self.inner.stats.dropped()
    }

    /// Gossip datagrams accepted and handed to chitchat.
    pub fn gossip_accepted(&self) -> u64 {
        self.inner
            .stats
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Incarnations gossip currently names that are ignored (a generation
    /// too far in the future).
    pub fn implausible_incarnations(&self) -> u64 {
        self.inner
            .implausible
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MembershipView>> {
        self.inner.tx.subscribe()
    }

    pub fn view(&self) -> Arc<MembershipView> {
        self.inner.tx.borrow().clone()
    }

    pub fn local(&self) -> pb::MemberInfo {
        self.inner.local.lock().clone()
    }

    /// Changes this node's own entry (tokens, state) and publishes it.
    pub async fn update_local(&self, f: impl FnOnce(&mut pb::MemberInfo)) {
        let kvs = {
            let mut l = self.inner.local.lock();
            f(&mut l);
            local_kvs(&l)
        };
        {
            let mut cc = self.inner.chitchat.lock().await;
            let st = cc.self_node_state();
            for (k, v) in kvs {
                st.set(k, v);
            }
        }
        rebuild(&self.inner).await;
    }

    /// Waits until the failure detector considers some other node alive and
    /// its state has arrived, or `timeout`; true if so.
    pub async fn wait_for_peer(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self
                .view()
                .members
                .iter()
                .any(|m| m.node_id != self.inner.me && m.alive)
            {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This node's previous incarnation (same id, older generation) as the
    /// cluster remembers it: how a node whose data directory was lost gets
    /// its tokens back.
    pub fn previous_self(&self) -> Option<Member> {
        let mut prev = self.inner.previous.lock().clone()?;
        if let Some(r) = self.inner.removals.lock().get(&prev.node_id)
            && r.applies_to(prev.generation, &prev.tokens)
        {
            prev.state = r.state();
        }
        Some(prev)
    }

    /// Announces (or re-announces) a removal in this node's gossip state.
    pub async fn announce_removal(&self, r: Removal) {
        removal::merge(&mut self.inner.removals.lock(), r.clone());
        {
            let mut cc = self.inner.chitchat.lock().await;
            cc.self_node_state().set(r.key(), r.value());
        }
        rebuild(&self.inner).await;
    }

    /// Every removal this node has heard of, newest announcement of each.
    pub fn removals(&self) -> Removals {
        self.inner.removals.lock().clone()
    }

    /// Nodes whose gossip state announces the removal of `node_id`'s
    /// incarnation `generation` (this node included once it announces it).
    pub fn removal_announcers(&self, node_id: &str, generation: u64) -> Vec<String> {
        self.inner
            .heard
            .lock()
            .iter()
            .filter(|(_, rs)| rs.get(node_id).is_some_and(|r| r.generation == generation))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Stops gossiping (peers will see this node go silent).
    pub fn shutdown(&self) {
        if let Some(h) = self.inner.handle.lock().take() {
            let _ = h.initiate_shutdown();
            h.abort();
        }
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Rebuilds the view whenever chitchat's live set or any state changes, and
/// at least once per gossip round (liveness changes with time alone).
async fn follow(inner: Arc<Inner>, interval: Duration) {
    let mut live = inner.chitchat.lock().await.live_nodes_watcher();
    loop {
        rebuild(&inner).await;
        tokio::select! {
            r = live.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(interval) => {},
        }
    }
}

async fn rebuild(inner: &Inner) {
    let latest_generation = wall_ms().saturating_add(GENERATION_SKEW.as_millis() as u64);
    let seen: Vec<Member> = {
        let cc = inner.chitchat.lock().await;
        let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
        let my_generation = inner.local.lock().generation;
        // Removal announcements, from each node's newest incarnation.
        let mut heard: BTreeMap<String, (u64, Removals)> = BTreeMap::new();
        for (id, st) in cc.node_states() {
            if id.generation_id > latest_generation {
                continue;
            }
            let found: Removals = st
                .iter_prefix(removal::KEY_PREFIX)
                .filter_map(|(k, v)| Removal::parse(k, &v.value))
                .map(|r| (r.node_id.clone(), r))
                .collect();
            let e = heard
                .entry(id.node_id.to_string())
                .or_insert((id.generation_id, Removals::new()));
            if id.generation_id >= e.0 {
                *e = (id.generation_id, found);
            }
        }
        {
            let mut all = inner.removals.lock();
            for (_, rs) in heard.values() {
                for r in rs.values() {
                    removal::merge(&mut all, r.clone());
                }
            }
        }
        *inner.heard.lock() = heard.into_iter().map(|(k, (_, rs))| (k, rs)).collect();
        let mut implausible = 0u64;
        // The preferred incarnation of each node: plausible, with its whole
        // state, heard from if any is, then the newest.
        let mut best: HashMap<&str, Member> = HashMap::new();
        for (id, st) in cc.node_states() {
            if id.generation_id > latest_generation {
                implausible += 1;
                if let Some(suppressed) = inner.implausible_log.allow() {
                    tracing::warn!(
                        node = %id.node_id,
                        generation = id.generation_id,
                        from = %id.gossip_advertise_addr,
                        suppressed,
                        "gossip names an incarnation that starts in the future; ignored"
                    );
                }
                continue;
            }
            if *id.node_id == *inner.me {
                if id.generation_id < my_generation
                    && let Some(m) = member_from_gossip(id, st, false)
                {
                    let mut prev = inner.previous.lock();
                    if prev.as_ref().is_none_or(|p| p.generation < m.generation) {
                        *prev = Some(m);
                    }
                }
                continue;
            }
            let Some(m) = member_from_gossip(id, st, live.contains(id)) else {
                continue;
            };
            match best.get(&*id.node_id) {
                Some(b) if (b.alive, b.generation) >= (m.alive, m.generation) => {}
                _ => {
                    best.insert(&id.node_id, m);
                }
            }
        }
        inner
            .implausible
            .store(implausible, std::sync::atomic::Ordering::Relaxed);
        best.into_values().collect()
    };
    let members = {
        let mut known = inner.known.lock();
        let mut fresh: HashSet<String> = HashSet::new();
        for m in seen {
            fresh.insert(m.node_id.clone());
            // A remembered newer incarnation (one chitchat has since
            // forgotten) wins over an older silent one, never over one
            // that is heard from (a forger that stopped loses to the node).
            match known.get(&m.node_id) {
                Some(k) if k.generation > m.generation && !m.alive => {}
                _ => {
                    known.insert(m.node_id.clone(), m);
                }
            }
        }
        for (id, m) in known.iter_mut() {
            if !fresh.contains(id) {
                m.alive = false;
            }
        }
        let mut members: Vec<Member> = known.values().cloned().collect();
        removal::apply(&mut members, &inner.removals.lock(), &inner.me);
        members.extend(Member::from_info(&inner.local.lock(), true));
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members
    };
    inner.tx.send_if_modified(|cur| {
        if cur.members == members {
            return false;
        }
        *cur = Arc::new(MembershipView {
            version: cur.version + 1,
            members,
        });
        true
    });
}
