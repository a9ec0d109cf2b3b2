//! An in-process cluster on loopback for tests: every node on ephemeral ports,
//! its own temp dir, one shared fault injector.
#![allow(dead_code)]

pub mod azurite;
pub mod s3;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use ringkv_node::{Config, FaultInjector, NodeOptions, RunningNode};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::key_value_client::KeyValueClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub struct Cluster {
    pub nodes: Vec<RunningNode>,
    pub faults: Arc<FaultInjector>,
    pub dir: tempfile::TempDir,
    /// Each node's configuration (as started), for restarts and additions.
    pub configs: Vec<Config>,
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Cluster {
    pub async fn start(count: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::new());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            faults,
            dir,
            configs: Vec::new(),
        };
        for _ in 0..count {
            cluster.add_node(&tweak).await;
        }
        cluster.wait_converged().await;
        cluster
    }

    /// Starts one more node, seeded with node 0 (it joins a running ring).
    pub async fn add_node(&mut self, tweak: impl Fn(&mut Config)) -> usize {
        let i = self.configs.len();
        let mut c = Config::loopback(
            &format!("node-{i}"),
            self.dir.path().join(format!("node-{i}")),
        );
        c.request_timeout = Duration::from_secs(5);
        c.gossip_interval = Duration::from_millis(100);
        if let Some(first) = self.nodes.first() {
            c.seeds = vec![first.addrs.gossip.to_string()];
        }
        tweak(&mut c);
        let node = RunningNode::start(
            c.clone(),
            NodeOptions {
                faults: Some(self.faults.clone()),
            },
        )
        .await
        .unwrap();
        self.configs.push(c);
        self.nodes.push(node);
        i
    }

    /// Stops node `i` and starts it again on the same ports and data
    /// directory, wiped first if `wipe`.
    pub async fn restart(&mut self, i: usize, wipe: bool) {
        let c = self.configs[i].clone();
        let mut c2 = c.clone();
        let old = &self.nodes[i];
        c2.listen_gossip = old.addrs.gossip;
        c2.listen_internode = old.addrs.internode;
        c2.listen_grpc = old.addrs.grpc;
        c2.listen_http = old.addrs.http;
        if i > 0 {
            c2.seeds = vec![self.nodes[0].addrs.gossip.to_string()];
        } else {
            c2.seeds = vec![self.nodes[1].addrs.gossip.to_string()];
        }
        self.nodes.remove(i).shutdown().await;
        if wipe {
            std::fs::remove_dir_all(&c.data_dir).unwrap();
        }
        let node = RunningNode::start(
            c2,
            NodeOptions {
                faults: Some(self.faults.clone()),
            },
        )
        .await
        .unwrap();
        self.nodes.insert(i, node);
    }

    /// Until every node sees every node with tokens in its ring.
    pub async fn wait_converged(&self) {
        let n = self.nodes.len();
        eventually(
            Duration::from_secs(60),
            "membership to converge",
            || async {
                self.nodes
                    .iter()
                    .all(|node| node.coordinator.topology().ring.nodes().len() == n)
            },
        )
        .await;
    }

    /// The membership view node `i`'s request path acts on: its topology,
    /// which follows gossip's view a moment later (and forgives a revived
    /// peer's circuit breaker first). Tests wait on this, not on gossip.
    pub fn view(&self, i: usize) -> Arc<ringkv_node::membership::MembershipView> {
        self.nodes[i].coordinator.topology().view.clone()
    }

    /// Whether node `i`'s coordinator sends requests to `peer` now: alive in
    /// its topology and not routed around by the circuit breaker.
    pub fn routes_to(&self, i: usize, peer: &str) -> bool {
        self.view(i).get(peer).is_some_and(|m| m.alive)
            && !self.nodes[i]
                .coordinator
                .suspects()
                .iter()
                .any(|s| s == peer)
    }

    pub async fn kv(&self, i: usize) -> KeyValueClient<Channel> {
        KeyValueClient::connect(format!("http://{}", self.nodes[i].addrs.grpc))
            .await
            .unwrap()
    }

    pub async fn admin(&self, i: usize) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.nodes[i].addrs.internode))
            .await
            .unwrap()
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.node_id() == id).unwrap()
    }

    /// Node ids of the replicas of `key`, primary first.
    pub fn replicas(&self, key: &[u8]) -> Vec<String> {
        let t = self.nodes[0].coordinator.topology();
        t.replicas(key, self.nodes[0].config.n as usize)
            .iter()
            .map(|m| m.node_id.clone())
            .collect()
    }

    /// A node that is not a replica of `key`, if any.
    pub fn non_replica(&self, key: &[u8]) -> Option<usize> {
        let reps = self.replicas(key);
        (0..self.nodes.len()).find(|i| !reps.contains(&self.nodes[*i].node_id().to_string()))
    }

    /// Live values in node `i`'s own store (no quorum).
    pub async fn local_values(&self, i: usize, key: &[u8]) -> Vec<Vec<u8>> {
        let rec = self.nodes[i].replica.store().read(key).await.unwrap();
        let now = ringkv_node::coordinator::now_ms();
        rec.map(|r| {
            r.live_values(now)
                .iter()
                .map(|v| v.data.clone().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default()
    }

    /// A counter or gauge from node `i`'s metrics (0 when absent).
    pub fn metric(&self, i: usize, name: &str) -> u64 {
        self.nodes[i].metrics.value(name).unwrap_or(0)
    }

    pub async fn total_records(&self) -> u64 {
        let mut n = 0;
        for node in &self.nodes {
            n += node.replica.store().count().await.unwrap();
        }
        n
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

pub async fn put(
    kv: &mut KeyValueClient<Channel>,
    key: &str,
    value: &str,
    context: &str,
) -> Result<pb::PutResponse, tonic::Status> {
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        context: context.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

pub async fn get(kv: &mut KeyValueClient<Channel>, key: &str) -> pb::GetResponse {
    kv.get(pb::GetRequest {
        key: key.as_bytes().to_vec().into(),
        r: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// A read of every replica (`r = all`): every sibling any replica holds.
pub async fn get_all(kv: &mut KeyValueClient<Channel>, key: &str) -> pb::GetResponse {
    kv.get(pb::GetRequest {
        key: key.as_bytes().to_vec().into(),
        r: "all".into(),
    })
    .await
    .unwrap()
    .into_inner()
}

pub fn values(r: &pb::GetResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .siblings
        .iter()
        .map(|s| String::from_utf8(s.value.to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

/// A minimal HTTP/1.1 exchange (Connection: close), enough for API tests.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body; ignore write errors then.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[pos + 2 + size + 2..];
    }
}

/// A chitchat Syn (protocol V0) as an attacker writes it: a digest naming
/// `nodes` (id, generation) at gossip address `addr`, for cluster "ringkv".
pub fn forged_syn(nodes: &[(&str, u64)], addr: std::net::SocketAddrV4, heartbeat: u64) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u16).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    let mut b = 45_139u16.to_le_bytes().to_vec();
    b.extend_from_slice(&[0, 0]); // version 0, Syn
    b.extend_from_slice(&(nodes.len() as u16).to_le_bytes());
    for (id, generation) in nodes {
        s(&mut b, id);
        b.extend_from_slice(&generation.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&addr.ip().octets());
        b.extend_from_slice(&addr.port().to_le_bytes());
        b.extend_from_slice(&heartbeat.to_le_bytes()); // heartbeat
        b.extend_from_slice(&0u64.to_le_bytes()); // last gc version
        b.extend_from_slice(&0u64.to_le_bytes()); // max version
    }
    s(&mut b, "ringkv");
    b
}

/// Sends raw datagrams to `to` from a fresh UDP socket.
pub async fn send_udp(to: std::net::SocketAddr, datagrams: &[Vec<u8>]) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for d in datagrams {
        s.send_to(d, to).await.unwrap();
    }
}

/// A node's gossip drop counter for `reason`.
pub fn dropped(node: &RunningNode, reason: &str) -> u64 {
    node.membership
        .gossip_dropped()
        .get(reason)
        .copied()
        .unwrap_or(0)
}
