//! A cluster of real `ringkv-node` processes.
//!
//! On loopback every node binds port 0 and publishes what it bound in
//! `endpoints.json` in its data directory. In network namespaces every node
//! has its own address and uses the standard ports (7000 gossip, 7001
//! internode/admin, 7070 client gRPC, 8080 HTTP), as in a Kubernetes pod.
//! Everything started is stopped when the cluster is dropped, also when a
//! test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::{Admin, Client};
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::internode_client::InternodeClient;
use ringkv_proto::v1::{
    DecommissionRequest, DecommissionResponse, ReadReplicaRequest, Record, RepairRequest,
    RepairResponse, StatusResponse,
};

use crate::netns::Network;

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub n: u32,
    pub w: u32,
    pub r: u32,
    /// Zones assigned round-robin to nodes.
    pub zones: Vec<String>,
    /// Run every node in its own network namespace (partitions possible).
    pub namespaces: bool,
    pub gossip_interval: Duration,
    pub request_timeout: Duration,
    /// Engine WAL sync: "always", "never", "periodic:<d>".
    pub sync: String,
    /// More `--flag value` pairs for every node.
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            n: 3,
            w: 2,
            r: 2,
            zones: vec!["default".into()],
            namespaces: false,
            gossip_interval: Duration::from_millis(200),
            request_timeout: Duration::from_secs(2),
            sync: "never".into(),
            extra_args: Vec::new(),
        }
    }
}

/// What a node published in `endpoints.json` in `dir`, once it has. A node
/// in a network namespace binds 0.0.0.0 there and is reached at `ip`.
pub fn read_endpoints(dir: &Path, ip: Option<std::net::Ipv4Addr>) -> Option<Endpoints> {
    let t = std::fs::read_to_string(dir.join("endpoints.json")).ok()?;
    let v = serde_json::from_str::<serde_json::Value>(&t).ok()?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let host_port = |k: &str| match ip {
        Some(ip) => {
            let p = s(k).rsplit(':').next().unwrap_or_default().to_string();
            format!("{ip}:{p}")
        }
        None => s(k),
    };
    Some(Endpoints {
        grpc: format!("http://{}", host_port("grpc")),
        admin: format!("http://{}", host_port("internode")),
        http: host_port("http"),
        gossip: host_port("gossip"),
    })
}

/// Waits (at most 60 s) until the node just started as `child` publishes
/// what it bound in `dir`; the error says whether it exited or timed out.
pub fn wait_endpoints(
    dir: &Path,
    ip: Option<std::net::Ipv4Addr>,
    child: &mut Child,
) -> Result<Endpoints, String> {
    let until = deadline(60);
    loop {
        if let Some(e) = read_endpoints(dir, ip) {
            return Ok(e);
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited during start ({st})"));
        }
        if Instant::now() > until {
            return Err("did not start in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 15 lines of a log file, for failure messages.
pub fn tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Where a node answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Client gRPC, as a URI (`http://host:port`).
    pub grpc: String,
    /// Internode + Admin gRPC, as a URI.
    pub admin: String,
    /// HTTP API, as `host:port`.
    pub http: String,
    /// Gossip, as `host:port`.
    pub gossip: String,
}

#[derive(Debug)]
struct Node {
    id: String,
    zone: String,
    dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
    endpoints: Option<Endpoints>,
}

pub struct ProcessCluster {
    /// Internode channels by address, reused across calls (a node that
    /// restarts on loopback gets new ports, hence a new entry).
    channels: std::sync::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
    binary: PathBuf,
    root: tempfile::TempDir,
    opts: Options,
    nodes: Vec<Node>,
    net: Option<Network>,
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child process we own.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// True when every thread under `/proc/<pid>/task` is in state T (stopped).
fn all_threads_stopped(tasks: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(tasks) else {
        return true; // gone
    };
    dir.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('T' | 't') | None
        )
    })
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

impl ProcessCluster {
    /// Start `opts.nodes` nodes one after the other (each seeded with the
    /// first) and wait until every node sees all of them alive.
    pub async fn start(binary: impl AsRef<Path>, opts: Options) -> Result<ProcessCluster, String> {
        let net = if opts.namespaces {
            Some(Network::create(opts.nodes)?)
        } else {
            None
        };
        let mut c = ProcessCluster {
            channels: Default::default(),
            binary: binary.as_ref().to_path_buf(),
            root: tempfile::tempdir().map_err(|e| e.to_string())?,
            opts: opts.clone(),
            nodes: Vec::new(),
            net,
        };
        for _ in 0..opts.nodes {
            c.add_node_process()?;
        }
        c.wait_all_alive(c.nodes.len()).await?;
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn network(&self) -> Option<&Network> {
        self.net.as_ref()
    }

    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    pub fn endpoints(&self, i: usize) -> &Endpoints {
        self.nodes[i]
            .endpoints
            .as_ref()
            .expect("node started at least once")
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].stopped
    }

    /// Indices of nodes that are running and not stopped.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    fn seeds(&self) -> Option<String> {
        let s: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| n.endpoints.as_ref().map(|e| e.gossip.clone()))
            .take(3)
            .collect();
        (!s.is_empty()).then(|| s.join(","))
    }

    /// Add a node (its own namespace when namespaces are on), start it, and
    /// return its index. Does not wait for the others to see it.
    pub fn add_node_process(&mut self) -> Result<usize, String> {
        let i = self.nodes.len();
        if let Some(net) = self.net.as_mut()
            && i >= net.nodes()
        {
            net.add_node()?;
        }
        let zone = self.opts.zones[i % self.opts.zones.len()].clone();
        let id = format!("n{i}");
        let dir = self.root.path().join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        self.nodes.push(Node {
            id,
            zone,
            dir,
            child: None,
            stopped: false,
            endpoints: None,
        });
        self.spawn(i)?;
        Ok(i)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let seeds = self.seeds();
        let node = &self.nodes[i];
        let endpoints_file = node.dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("process.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", net.namespace(i)])
                    .arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let (bind, advertise) = match &self.net {
            Some(net) => ("0.0.0.0".to_string(), net.ip(i).to_string()),
            None => ("127.0.0.1".to_string(), "127.0.0.1".to_string()),
        };
        let port = |p: u16| {
            if self.net.is_some() {
                format!("{bind}:{p}")
            } else {
                format!("{bind}:0")
            }
        };
        cmd.args(["--node-id", &node.id, "--zone", &node.zone])
            .arg("--data-dir")
            .arg(&node.dir)
            .args([
                "--listen-gossip",
                &port(7000),
                "--listen-internode",
                &port(7001),
            ])
            .args(["--listen-grpc", &port(7070), "--listen-http", &port(8080)])
            .args(["--advertise-host", &advertise])
            .args([
                "--n",
                &self.opts.n.to_string(),
                "--w",
                &self.opts.w.to_string(),
                "--r",
                &self.opts.r.to_string(),
            ])
            .args([
                "--gossip-interval",
                &format!("{}ms", self.opts.gossip_interval.as_millis()),
            ])
            .args([
                "--request-timeout",
                &format!("{}ms", self.opts.request_timeout.as_millis()),
            ])
            .args(["--sync", &self.opts.sync])
            .args(&self.opts.extra_args);
        if let Some(s) = &seeds {
            cmd.args(["--seeds", s]);
        }
        // Nothing from the test's own environment leaks into the node's config.
        for (k, _) in std::env::vars() {
            if k.starts_with("RINGKV_") {
                cmd.env_remove(k);
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RINGKV_E2E_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("spawning node {i}: {e}"))?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.stopped = false;
        let node_dir = node.dir.clone();
        // Wait for the node to publish what it bound.
        let ip = self.net.as_ref().map(|n| n.ip(i));
        let child = self.nodes[i].child.as_mut().expect("just spawned");
        match wait_endpoints(&node_dir, ip, child) {
            Ok(e) => {
                self.nodes[i].endpoints = Some(e);
                Ok(())
            }
            Err(why) => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.nodes[i].child = None;
                }
                Err(format!("node {i} {why}; log: {}", self.log_tail(i)))
            }
        }
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.nodes[i].dir.join("process.log"))
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            signal(&c, libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].stopped = false;
    }

    /// SIGSTOP node `i` (it keeps its sockets but answers nothing).
    /// Returns once every thread of the node has stopped (the signal is
    /// asynchronous: a loaded machine can let a worker thread serve requests
    /// for milliseconds after `kill` returns).
    pub fn stop(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c, libc::SIGSTOP);
            let tasks = format!("/proc/{}/task", c.id());
            self.nodes[i].stopped = true;
            let until = deadline(10);
            while !all_threads_stopped(&tasks) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGCONT a stopped node.
    pub fn resume(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c, libc::SIGCONT);
        }
        self.nodes[i].stopped = false;
    }

    /// Start a killed node again with the same identity and data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// Kill node `i` and delete everything in its data directory.
    pub fn wipe(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        let dir = &self.nodes[i].dir;
        std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())
    }

    pub async fn client(&self, i: usize) -> Result<Client, String> {
        Client::connect(&self.endpoints(i).grpc)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn admin(&self, i: usize) -> Result<Admin, String> {
        Admin::connect(&self.endpoints(i).admin)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn status(&self, i: usize) -> Result<StatusResponse, String> {
        self.admin(i)
            .await?
            .status()
            .await
            .map_err(|e| e.to_string())
    }

    /// Ask node `i` to run anti-entropy now (Admin.Repair).
    pub async fn repair(&self, i: usize) -> Result<RepairResponse, String> {
        let mut a = AdminClient::connect(self.endpoints(i).admin.clone())
            .await
            .map_err(|e| e.to_string())?;
        a.repair(RepairRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    }

    /// Ask node `i` to decommission itself (Admin.Decommission).
    pub async fn decommission(&self, i: usize) -> Result<DecommissionResponse, String> {
        let mut a = AdminClient::connect(self.endpoints(i).admin.clone())
            .await
            .map_err(|e| e.to_string())?;
        a.decommission(DecommissionRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
    }

    /// Poll node `i`'s status until `pred` holds (at most `secs`).
    pub async fn wait_status(
        &self,
        i: usize,
        secs: u64,
        what: &str,
        pred: impl Fn(&StatusResponse) -> bool,
    ) -> Result<StatusResponse, String> {
        let until = deadline(secs);
        loop {
            let last = match self.status(i).await {
                Ok(s) if pred(&s) => return Ok(s),
                Ok(s) => format!(
                    "{:?}",
                    s.members
                        .iter()
                        .map(|m| (&m.node_id, m.state, m.alive))
                        .collect::<Vec<_>>()
                ),
                Err(e) => e,
            };
            if Instant::now() > until {
                return Err(format!(
                    "node {i}: waited {secs} s for {what}; last: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until every running node sees `n` members alive and NORMAL
    /// (joins streamed, ready to serve reads).
    pub async fn wait_all_alive(&self, n: usize) -> Result<(), String> {
        let normal = ringkv_proto::v1::NodeState::Normal as i32;
        for i in self.running() {
            self.wait_status(i, 120, &format!("{n} live NORMAL members"), |s| {
                s.members
                    .iter()
                    .filter(|m| m.alive && m.tokens > 0 && m.state == normal)
                    .count()
                    == n
            })
            .await?;
        }
        Ok(())
    }

    /// A counter or gauge from node `i`'s `/metrics` (0 when absent or
    /// unreachable).
    pub async fn metric(&self, i: usize, name: &str) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = &self.endpoints(i).http;
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return 0;
        };
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return 0;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body).await;
        ringkv_node::metrics::sample(&body, name).unwrap_or(0)
    }

    /// Node `i`'s own stored record of `key` (no quorum).
    pub async fn replica_record(&self, i: usize, key: &[u8]) -> Result<Option<Record>, String> {
        let addr = self.endpoints(i).admin.clone();
        let cached = self.channels.lock().unwrap().get(&addr).cloned();
        let ch = match cached {
            Some(ch) => ch,
            None => {
                let ch = tonic::transport::Endpoint::from_shared(addr.clone())
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                self.channels.lock().unwrap().insert(addr, ch.clone());
                ch
            }
        };
        let mut c = InternodeClient::new(ch);
        let r = c
            .read_replica(ReadReplicaRequest {
                key: key.to_vec().into(),
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.into_inner().record)
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("--- log of node {i} ---\n{}", self.log_tail(i));
            }
        }
    }
}

/// The live values of a stored record (siblings), tombstones and expired
/// values left out.
pub fn live_values(r: &Record) -> Vec<Vec<u8>> {
    use ringkv_proto::v1::record::Kind;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let live = |v: &ringkv_proto::v1::StoredValue| {
        v.value
            .as_ref()
            .filter(|_| v.expires_at_unix_ms == 0 || v.expires_at_unix_ms > now)
            .map(|b| b.to_vec())
    };
    match &r.kind {
        Some(Kind::Causal(c)) => c
            .entries
            .iter()
            .flat_map(|e| e.values.iter().filter_map(live))
            .collect(),
        Some(Kind::Lww(l)) => l.value.as_ref().and_then(live).into_iter().collect(),
        None => Vec::new(),
    }
}
