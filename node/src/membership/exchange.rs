//! Static-seed membership transport: every `gossip_interval` a node sends its
//! whole member table to its seeds and to every member it knows, over UDP on
//! the gossip port; a receiver merges it and answers with its own table. Seeds
//! are re-resolved each round, so a headless Service name counts as all of
//! its pods. This is deliberately simple (tables are small at this scale);
//! chitchat replaces it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use ringkv_proto::v1 as pb;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{Member, MemberTable, MembershipView};

/// Largest datagram we send; a table that does not fit is cut to what does.
const MAX_DATAGRAM: usize = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    me: String,
    socket: UdpSocket,
    seeds: Vec<String>,
    interval: Duration,
    table: Mutex<MemberTable>,
    tx: watch::Sender<Arc<MembershipView>>,
    version: AtomicU64,
    published: Mutex<Vec<Member>>,
    heard_from: Mutex<HashSet<String>>,
    heard: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Membership {
    /// Binds the gossip socket (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> Result<UdpSocket, MembershipError> {
        UdpSocket::bind(addr)
            .await
            .map_err(|source| MembershipError::Bind { addr, source })
    }

    /// Starts exchanging tables. `local` is this node's entry.
    pub fn start(
        socket: UdpSocket,
        local: pb::MemberInfo,
        seeds: Vec<String>,
        interval: Duration,
    ) -> Membership {
        let dead_after = (interval * 10).max(Duration::from_secs(3));
        let table = MemberTable::new(local.clone(), dead_after);
        let view = Arc::new(table.view(Instant::now(), 1));
        let (tx, _) = watch::channel(view.clone());
        let inner = Arc::new(Inner {
            me: local.node_id.clone(),
            socket,
            seeds,
            interval,
            table: Mutex::new(table),
            tx,
            version: AtomicU64::new(1),
            published: Mutex::new(view.members.clone()),
            heard_from: Mutex::new(HashSet::new()),
            heard: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let recv = tokio::spawn(recv_loop(inner.clone()));
        let tick = tokio::spawn(tick_loop(inner.clone()));
        inner.tasks.lock().extend([recv, tick]);
        Membership { inner }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.socket.local_addr().ok()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MembershipView>> {
        self.inner.tx.subscribe()
    }

    pub fn view(&self) -> Arc<MembershipView> {
        self.inner.tx.borrow().clone()
    }

    pub fn local(&self) -> pb::MemberInfo {
        self.inner.table.lock().local().clone()
    }

    /// Changes this node's own entry (tokens, state) and tells the others now.
    pub async fn update_local(&self, f: impl FnOnce(&mut pb::MemberInfo)) {
        {
            let mut t = self.inner.table.lock();
            let l = t.local_mut();
            f(l);
            l.heartbeat += 1;
        }
        publish(&self.inner);
        round(&self.inner).await;
    }

    /// Waits until some other member has answered, or `timeout`; true if one did.
    pub async fn wait_for_peer(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.heard.notified();
            if !self.inner.heard_from.lock().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.inner.heard_from.lock().is_empty();
            }
        }
    }

    pub fn shutdown(&self) {
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

fn publish(inner: &Inner) {
    let view = {
        let t = inner.table.lock();
        t.view(Instant::now(), 0)
    };
    let mut published = inner.published.lock();
    if *published != view.members {
        *published = view.members.clone();
        let version = inner.version.fetch_add(1, Ordering::Relaxed) + 1;
        inner.tx.send_replace(Arc::new(MembershipView {
            version,
            members: view.members,
        }));
    }
}

fn encode_table(inner: &Inner, want_reply: bool) -> Vec<u8> {
    let t = inner.table.lock();
    let mut msg = pb::MemberTable {
        from: inner.me.clone(),
        members: t.all(),
        want_reply,
    };
    let mut bytes = msg.encode_to_vec();
    // Keep our own entry (last) and as many others as fit.
    while bytes.len() > MAX_DATAGRAM && msg.members.len() > 1 {
        msg.members.remove(0);
        bytes = msg.encode_to_vec();
    }
    bytes
}

async fn round(inner: &Inner) {
    let payload = encode_table(inner, true);
    let mut targets: HashSet<SocketAddr> = HashSet::new();
    let mut names: Vec<String> = inner.seeds.clone();
    names.extend(inner.table.lock().gossip_addrs());
    for name in names {
        if let Ok(addrs) = tokio::net::lookup_host(name.as_str()).await {
            targets.extend(addrs);
        }
    }
    let mine = inner.socket.local_addr().ok();
    for t in targets {
        if Some(t) == mine {
            continue;
        }
        if let Err(e) = inner.socket.send_to(&payload, t).await {
            tracing::debug!(target = %t, error = %e, "gossip send failed");
        }
    }
}

async fn tick_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        inner.table.lock().local_mut().heartbeat += 1;
        round(&inner).await;
        // Liveness changes with time alone, so re-check every round.
        publish(&inner);
    }
}

async fn recv_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = match inner.socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from unreachable peers surface here on Linux; keep going.
                tracing::trace!(error = %e, "gossip receive error");
                continue;
            }
        };
        let Ok(msg) = pb::MemberTable::decode(&buf[..len]) else {
            tracing::debug!(%from, "undecodable gossip datagram dropped");
            continue;
        };
        if msg.from == inner.me || msg.from.is_empty() {
            continue;
        }
        let now = Instant::now();
        {
            let mut t = inner.table.lock();
            for m in msg.members {
                t.merge(m, now);
            }
        }
        if inner.heard_from.lock().insert(msg.from.clone()) {
            inner.heard.notify_waiters();
        }
        publish(&inner);
        if msg.want_reply {
            let payload = encode_table(&inner, false);
            let _ = inner.socket.send_to(&payload, from).await;
        }
    }
}
