//! Token-aware routing: the client learns the ring from any node
//! (`KeyValue.Ring`) and sends each request straight to a replica of its
//! key, as Cassandra and Scylla drivers do, so no request pays a forward
//! hop. Replicas take turns coordinating (a rotating start in the
//! preference list). The ring is refreshed in the background every
//! `REFRESH`; a replica that cannot be reached is avoided for `AVOID` and the
//! request goes to the seed node, which accepts any request — a stale ring
//! costs a hop, never correctness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::{ConnectOptions, Transport};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::key_value_client::KeyValueClient;

/// How often the ring is fetched again.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a replica that could not be reached is skipped.
const AVOID: Duration = Duration::from_secs(5);

/// The token of a key (the same hash the nodes use).
pub fn key_token(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// One fetched ring.
#[derive(Debug, Default)]
struct Table {
    /// (node id, client gRPC address) by index.
    nodes: Vec<(String, String)>,
    /// Range end tokens, sorted, and each range's replicas (node indices).
    ends: Vec<u64>,
    replicas: Vec<Vec<u32>>,
}

impl Table {
    fn from_pb(r: pb::RingResponse) -> Table {
        let mut ranges: Vec<(u64, Vec<u32>)> = r
            .ranges
            .into_iter()
            .map(|x| (x.end, x.replicas))
            .filter(|(_, reps)| !reps.is_empty())
            .collect();
        ranges.sort_by_key(|(end, _)| *end);
        let n = r.nodes.len() as u32;
        Table {
            nodes: r
                .nodes
                .into_iter()
                .map(|x| (x.node_id, x.grpc_addr))
                .collect(),
            ends: ranges.iter().map(|(e, _)| *e).collect(),
            replicas: ranges
                .into_iter()
                .map(|(_, reps)| reps.into_iter().filter(|&i| i < n).collect())
                .collect(),
        }
    }

    /// The replicas of `token`, preference order.
    fn replicas_of(&self, token: u64) -> &[u32] {
        if self.ends.is_empty() {
            return &[];
        }
        let i = self.ends.partition_point(|&e| e < token);
        &self.replicas[if i == self.ends.len() { 0 } else { i }]
    }
}

/// Routing state shared by the clones of a `Client`.
#[derive(Debug)]
pub(crate) struct Router {
    table: RwLock<Arc<Table>>,
    fetched: Mutex<Instant>,
    refreshing: AtomicBool,
    /// Clients per node address, created lazily (connect on first use).
    channels: Mutex<HashMap<String, KeyValueClient<Transport>>>,
    /// Addresses that failed, and until when to avoid them.
    avoid: Mutex<HashMap<String, Instant>>,
    turn: AtomicUsize,
    seed: KeyValueClient<Transport>,
    /// How to dial the other nodes (TLS, token).
    opts: ConnectOptions,
}

impl Router {
    /// Learns the ring through `seed`; `None` when the node does not offer
    /// it (an older server) or has no ring yet.
    /// `seed_addr` is the address `seed` connects to: the seed's own
    /// connection serves the requests routed to it.
    pub(crate) async fn learn(
        seed: KeyValueClient<Transport>,
        seed_addr: &str,
        opts: ConnectOptions,
    ) -> Option<Arc<Router>> {
        let table = fetch(&seed).await?;
        let bare = seed_addr
            .split_once("://")
            .map_or(seed_addr, |(_, rest)| rest)
            .trim_end_matches('/');
        Some(Arc::new(Router {
            table: RwLock::new(Arc::new(table)),
            fetched: Mutex::new(Instant::now()),
            refreshing: AtomicBool::new(false),
            channels: Mutex::new(HashMap::from([(bare.to_string(), seed.clone())])),
            avoid: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            seed,
            opts,
        }))
    }

    /// The client to send a request about `key` to, and the address it
    /// goes to (`None`: the seed).
    pub(crate) fn route(
        self: &Arc<Self>,
        key: &[u8],
    ) -> (KeyValueClient<Transport>, Option<String>) {
        self.maybe_refresh();
        let table = self.table.read().expect("ring lock").clone();
        let reps = table.replicas_of(key_token(key));
        if !reps.is_empty() {
            let now = Instant::now();
            let avoid = self.avoid.lock().expect("avoid lock");
            let start = self.turn.fetch_add(1, Ordering::Relaxed);
            for k in 0..reps.len() {
                let (_, addr) = &table.nodes[reps[(start + k) % reps.len()] as usize];
                if avoid.get(addr).is_some_and(|until| *until > now) {
                    continue;
                }
                if let Some(c) = self.channel(addr) {
                    return (c, Some(addr.clone()));
                }
            }
        }
        (self.seed.clone(), None)
    }

    /// Skips `addr` for a while (it could not be reached).
    pub(crate) fn avoid(&self, addr: &str) {
        self.avoid
            .lock()
            .expect("avoid lock")
            .insert(addr.to_string(), Instant::now() + AVOID);
    }

    fn channel(&self, addr: &str) -> Option<KeyValueClient<Transport>> {
        let mut chans = self.channels.lock().expect("channel lock");
        if let Some(c) = chans.get(addr) {
            return Some(c.clone());
        }
        let ep = self
            .opts
            .endpoint(addr)
            .ok()?
            .connect_timeout(Duration::from_secs(2));
        let c = crate::kv_client(ep.connect_lazy(), self.opts.auth().ok()?);
        chans.insert(addr.to_string(), c.clone());
        Some(c)
    }

    fn maybe_refresh(self: &Arc<Self>) {
        if self.fetched.lock().expect("fetched lock").elapsed() < REFRESH {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(t) = fetch(&this.seed).await {
                *this.table.write().expect("ring lock") = Arc::new(t);
            }
            *this.fetched.lock().expect("fetched lock") = Instant::now();
            this.refreshing.store(false, Ordering::Release);
        });
    }
}

async fn fetch(seed: &KeyValueClient<Transport>) -> Option<Table> {
    let resp = seed
        .clone()
        .ring(pb::RingRequest {})
        .await
        .ok()?
        .into_inner();
    let t = Table::from_pb(resp);
    (!t.ends.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Table {
        Table::from_pb(pb::RingResponse {
            n: 2,
            nodes: vec![
                pb::RingNode {
                    node_id: "a".into(),
                    grpc_addr: "a:1".into(),
                    alive: true,
                    zone: String::new(),
                },
                pb::RingNode {
                    node_id: "b".into(),
                    grpc_addr: "b:1".into(),
                    alive: true,
                    zone: String::new(),
                },
            ],
            ranges: vec![
                pb::RingRange {
                    end: 300,
                    replicas: vec![1, 0],
                },
                pb::RingRange {
                    end: 100,
                    replicas: vec![0, 1],
                },
                // A bad index from a confused server is dropped, not followed.
                pb::RingRange {
                    end: 200,
                    replicas: vec![7],
                },
            ],
        })
    }

    #[test]
    fn a_token_maps_to_the_first_range_ending_at_or_after_it() {
        let t = ring();
        assert_eq!(t.replicas_of(0), &[0, 1]);
        assert_eq!(t.replicas_of(100), &[0, 1]);
        assert_eq!(t.replicas_of(101), &[] as &[u32]);
        assert_eq!(t.replicas_of(250), &[1, 0]);
        assert_eq!(t.replicas_of(300), &[1, 0]);
        // Past the last end: wraps to the first range.
        assert_eq!(t.replicas_of(u64::MAX), &[0, 1]);
    }

    #[test]
    fn the_key_hash_matches_the_nodes() {
        for k in [&b"user:1"[..], b"", b"\xff\x00k"] {
            assert_eq!(key_token(k), ringkv_node::ring::key_token(k));
        }
    }
}
