//! Starting each system under test on loopback, in its own data directory:
//! a 3-node ringkv, a 3-member etcd, a single Redis.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::BenchError;
use crate::servers::{Servers, free_port, version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    Ringkv,
    Etcd,
    Redis,
}

impl SystemKind {
    /// Run order and table order.
    pub const ALL: [SystemKind; 3] = [SystemKind::Ringkv, SystemKind::Etcd, SystemKind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Ringkv => "ringkv",
            SystemKind::Etcd => "etcd",
            SystemKind::Redis => "redis",
        }
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SystemKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ringkv" => Ok(SystemKind::Ringkv),
            "etcd" => Ok(SystemKind::Etcd),
            "redis" => Ok(SystemKind::Redis),
            other => Err(format!(
                "unknown system {other:?}: use ringkv, etcd or redis"
            )),
        }
    }
}

/// A started system: its server processes and where clients reach it.
pub struct System {
    pub kind: SystemKind,
    pub servers: Servers,
    /// Client addresses, one per server (`http://127.0.0.1:port` for the
    /// gRPC systems, `redis://127.0.0.1:port/` for Redis).
    pub endpoints: Vec<String>,
    /// Version and configuration, for the report.
    pub description: String,
}

fn start_err(kind: SystemKind, reason: impl Into<String>) -> BenchError {
    BenchError::Start {
        system: kind.name().into(),
        reason: reason.into(),
    }
}

fn mkdir(p: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(p).map_err(BenchError::io(format!("creating {}", p.display())))
}

/// Waits until `ready` holds (polled every 100 ms), failing early when a
/// server exits and after `limit`.
async fn wait_ready<F, Fut>(
    kind: SystemKind,
    servers: &mut Servers,
    limit: Duration,
    what: &str,
    mut ready: F,
) -> Result<(), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = Instant::now() + limit;
    loop {
        servers.check()?;
        let last = match ready().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > until {
            return Err(start_err(
                kind,
                format!("{what} not reached in {limit:?}; last: {last}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 3-node ringkv of real `ringkv-node` processes (N=3 W=2 R=2, one node
/// per zone, WAL `sync`), every port picked by the kernel.
pub async fn start_ringkv(node_bin: &Path, dir: &Path, sync: &str) -> Result<System, BenchError> {
    let kind = SystemKind::Ringkv;
    if !node_bin.is_file() {
        return Err(start_err(
            kind,
            format!(
                "{} not found: build it with `cargo build --release -p ringkv-node` (bench/peers.sh does)",
                node_bin.display()
            ),
        ));
    }
    let mut servers = Servers::new(kind.name());
    let mut endpoints = Vec::new();
    let mut admins = Vec::new();
    let mut seed: Option<String> = None;
    for i in 0..3 {
        let name = format!("node-{i}");
        let ndir = dir.join(&name);
        mkdir(&ndir)?;
        let mut cmd = Command::new(node_bin);
        cmd.args(["--node-id", &name])
            .arg("--data-dir")
            .arg(&ndir)
            .args(["--zone", ["zone-a", "zone-b", "zone-c"][i]])
            .args(["--listen-http", "127.0.0.1:0"])
            .args(["--listen-grpc", "127.0.0.1:0"])
            .args(["--listen-internode", "127.0.0.1:0"])
            .args(["--listen-gossip", "127.0.0.1:0"])
            .args(["--advertise-host", "127.0.0.1"])
            .args(["--n", "3", "--w", "2", "--r", "2"])
            .args(["--sync", sync])
            // As `ringkv local` runs its nodes.
            .args(["--gossip-interval", "250ms"]);
        if let Some(s) = &seed {
            cmd.args(["--seeds", s]);
        }
        // The node's defaults, whatever the caller's shell has set.
        for (k, _) in std::env::vars() {
            if k.starts_with("RINGKV_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        servers.spawn(&name, cmd, &ndir.join("node.log"))?;
        let file = ndir.join("endpoints.json");
        let mut ep = serde_json::Value::Null;
        wait_ready(
            kind,
            &mut servers,
            Duration::from_secs(60),
            &format!("{name} endpoints.json"),
            || {
                let r = std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
                    });
                if let Ok(v) = &r {
                    ep = v.clone();
                }
                async move { r.map(|_| ()) }
            },
        )
        .await?;
        let s = |k: &str| ep[k].as_str().unwrap_or_default().to_string();
        if seed.is_none() {
            seed = Some(s("gossip"));
        }
        endpoints.push(format!("http://{}", s("grpc")));
        admins.push(format!("http://{}", s("internode")));
    }
    // Every node must see all three alive, NORMAL and owning tokens.
    let normal = ringkv_client::pb::NodeState::Normal as i32;
    for admin in &admins {
        wait_ready(
            kind,
            &mut servers,
            Duration::from_secs(120),
            &format!("3 NORMAL members seen by {admin}"),
            || {
                let admin = admin.clone();
                async move {
                    let mut a = ringkv_client::Admin::connect(&admin)
                        .await
                        .map_err(|e| e.to_string())?;
                    let st = a.status().await.map_err(|e| e.to_string())?;
                    let up = st
                        .members
                        .iter()
                        .filter(|m| m.alive && m.tokens > 0 && m.state == normal)
                        .count();
                    if up == 3 {
                        Ok(())
                    } else {
                        Err(format!("{up} of 3 members up"))
                    }
                }
            },
        )
        .await?;
    }
    Ok(System {
        kind,
        servers,
        endpoints,
        description: format!(
            "ringkv {} ({}): 3 nodes, N=3 W=2 R=2, sync={sync}, causal contexts",
            env!("CARGO_PKG_VERSION"),
            node_bin.display()
        ),
    })
}

/// One HTTP/1.0 GET on loopback; the body when the status is 200.
async fn http_get(host_port: &str, path: &str) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(host_port)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_string())
    } else {
        Err(head.lines().next().unwrap_or("no answer").to_string())
    }
}

/// A 3-member etcd cluster with its default durability (WAL fsync per
/// commit). Auto-compaction every minute and an 8 GiB quota keep the MVCC
/// history of a long write run from filling the backend.
pub async fn start_etcd(etcd: &Path, dir: &Path) -> Result<System, BenchError> {
    let kind = SystemKind::Etcd;
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port()?, free_port()?));
    }
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut servers = Servers::new(kind.name());
    let mut endpoints = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let name = format!("m{i}");
        let mdir = dir.join(&name);
        mkdir(&mdir)?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(etcd);
        cmd.args(["--name", &name])
            .arg("--data-dir")
            .arg(mdir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("ringkv-bench-{}", std::process::id()),
            ])
            .args(["--auto-compaction-mode", "periodic"])
            .args(["--auto-compaction-retention", "1m"])
            .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "warn"]);
        // ETCD_* variables would override the flags above.
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        servers.spawn(&name, cmd, &mdir.join("etcd.log"))?;
        endpoints.push(client_url);
    }
    for (client, _) in &ports {
        let hp = format!("127.0.0.1:{client}");
        wait_ready(
            kind,
            &mut servers,
            Duration::from_secs(60),
            &format!("etcd member at {hp} healthy"),
            || {
                let hp = hp.clone();
                async move {
                    let body = http_get(&hp, "/health").await?;
                    if body.contains("\"health\":\"true\"") {
                        Ok(())
                    } else {
                        Err(body)
                    }
                }
            },
        )
        .await?;
    }
    Ok(System {
        kind,
        servers,
        endpoints,
        description: format!(
            "{}: 3 members, default durability (fsync per commit), linearizable reads",
            version(etcd)
        ),
    })
}

/// One Redis on loopback: AOF with `appendfsync everysec`, no RDB
/// snapshots, no replication (the unreplicated speed reference).
pub async fn start_redis(redis: &Path, dir: &Path) -> Result<System, BenchError> {
    let kind = SystemKind::Redis;
    let port = free_port()?;
    mkdir(dir)?;
    let mut servers = Servers::new(kind.name());
    let mut cmd = Command::new(redis);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .args(["--save", ""])
        .args(["--daemonize", "no", "--protected-mode", "no"]);
    servers.spawn("redis", cmd, &dir.join("redis.log"))?;
    let hp = format!("127.0.0.1:{port}");
    wait_ready(
        kind,
        &mut servers,
        Duration::from_secs(30),
        "redis PING",
        || {
            let hp = hp.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(&hp)
                    .await
                    .map_err(|e| e.to_string())?;
                s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let a = String::from_utf8_lossy(&buf[..n]).to_string();
                if a.starts_with("+PONG") {
                    Ok(())
                } else {
                    Err(a)
                }
            }
        },
    )
    .await?;
    Ok(System {
        kind,
        servers,
        endpoints: vec![format!("redis://{hp}/")],
        description: format!(
            "{}: 1 node, appendonly yes, appendfsync everysec, no RDB snapshots, no replication",
            version(redis)
        ),
    })
}

/// The data directory of `kind` under the run's root.
pub fn data_dir(root: &Path, kind: SystemKind) -> PathBuf {
    root.join(kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_round_trip() {
        for k in SystemKind::ALL {
            assert_eq!(k.name().parse::<SystemKind>(), Ok(k));
        }
        assert!("cassandra".parse::<SystemKind>().is_err());
    }

    #[tokio::test]
    async fn a_missing_node_binary_is_a_clear_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = start_ringkv(&dir.path().join("ringkv-node"), dir.path(), "always")
            .await
            .err()
            .expect("no binary there");
        assert!(err.to_string().contains("cargo build --release"), "{err}");
    }

    #[tokio::test]
    async fn http_get_reads_status_and_body() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hp = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 200 OK\r\n\r\n{\"health\":\"true\"}",
                "HTTP/1.0 503 Service Unavailable\r\n\r\n",
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(
            http_get(&hp, "/health").await.unwrap(),
            "{\"health\":\"true\"}"
        );
        assert!(http_get(&hp, "/health").await.unwrap_err().contains("503"));
    }
}
