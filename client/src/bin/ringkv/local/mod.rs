//! `ringkv local`: a cluster of real node processes on loopback. Each node is
//! this same executable run as `ringkv node ...`, so `cargo run --bin ringkv
//! -- local` needs nothing else built. Node i listens on HTTP 8080+i, client
//! gRPC 7070+i, internode/admin 7001+i and gossip (UDP) 7200+i unless the
//! base ports are moved (0 = pick free ports). Logs go to DATA/node-i/node.log.
//!
//! `local` supervises its nodes as a StatefulSet would its pods
//! ([`supervisor`]): a node that dies is reported and restarted on its data
//! directory after a back-off, and the others keep running. A running local
//! cluster takes orders on the Unix socket DATA/local.sock: `list`, `stop
//! NODE`, `start NODE`, `kill NODE [--stay-down]`, `add` (one more node: it
//! joins the ring and streams its ranges in) and `remove NODE` (decommission,
//! then stop).

mod secure;
mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use supervisor::Supervisor;

#[derive(clap::Subcommand)]
pub enum LocalAction {
    /// Show every node of the running local cluster in DATA and its state.
    List {
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
    /// Stop a node cleanly (SIGTERM); it stays down until `start`.
    Stop {
        /// Node name, e.g. node-2.
        node: String,
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
    /// Start a stopped node (or one waiting to restart) on its data directory.
    Start {
        /// Node name, e.g. node-2.
        node: String,
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
    /// SIGKILL a node, as a crash would; the supervisor restarts it after a
    /// short back-off unless `--stay-down`.
    Kill {
        /// Node name, e.g. node-2.
        node: String,
        /// Leave it down until `ringkv local start NODE`.
        #[arg(long)]
        stay_down: bool,
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
    /// Add a node to the running local cluster in DATA.
    Add {
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
    /// Decommission a node of the running local cluster in DATA, then stop it.
    Remove {
        /// Node name, e.g. node-2.
        node: String,
        #[arg(long, default_value = "./ringkv-data")]
        data: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LocalArgs {
    #[command(subcommand)]
    action: Option<LocalAction>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    nodes: u16,
    /// Data directory (one sub-directory per node; kept between runs).
    #[arg(long, default_value = "./ringkv-data")]
    data: PathBuf,
    /// HTTP port of node 0 (node i uses +i); 0 picks free ports.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Client gRPC port of node 0; 0 picks free ports.
    #[arg(long, default_value_t = 7070)]
    grpc_port: u16,
    /// Internode/Admin gRPC port of node 0; 0 picks free ports.
    #[arg(long, default_value_t = 7001)]
    internode_port: u16,
    /// Gossip (UDP) port of node 0; 0 picks free ports.
    #[arg(long, default_value_t = 7200)]
    gossip_port: u16,
    /// Replication factor and default quorums (capped to the node count).
    #[arg(long)]
    n: Option<u32>,
    #[arg(long)]
    w: Option<u32>,
    #[arg(long)]
    r: Option<u32>,
    /// `causal` or `lww`.
    #[arg(long, default_value = "causal")]
    conflict_mode: String,
    /// Engine WAL sync: always, periodic:<duration>, never.
    #[arg(long, default_value = "always")]
    sync: String,
    /// Turn on TLS (mutual TLS between nodes and for Admin), bearer tokens
    /// and authenticated gossip, with a CA, certificates, a gossip secret
    /// and an admin token generated under DATA/secure.
    #[arg(long)]
    secure: bool,
}

fn port(base: u16, i: u16) -> u16 {
    if base == 0 { 0 } else { base + i }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// The last lines of a node's log, for reports of a failed start.
fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a node published once it was listening, if it has.
fn read_endpoints(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(ringkv_node::ENDPOINTS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

const CONTROL_SOCKET: &str = "local.sock";

/// What every node of this local cluster is started with.
struct Spawner {
    exe: PathBuf,
    data: PathBuf,
    a: LocalArgs,
    n: u32,
    w: u32,
    r: u32,
    secure: Option<secure::Secure>,
}

impl Spawner {
    fn dir(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    /// Starts node `i` on its data directory (not waiting for it to listen).
    fn launch(&self, i: u16, seed: Option<&str>) -> Result<Child, std::io::Error> {
        let a = &self.a;
        let name = format!("node-{i}");
        let dir = self.dir(&name);
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(dir.join(ringkv_node::ENDPOINTS_FILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .args(["--node-id", &name])
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--zone",
                &format!("zone-{}", (b'a' + (i % 3) as u8) as char),
            ])
            .args([
                "--listen-http",
                &format!("127.0.0.1:{}", port(a.http_port, i)),
            ])
            .args([
                "--listen-grpc",
                &format!("127.0.0.1:{}", port(a.grpc_port, i)),
            ])
            .args([
                "--listen-internode",
                &format!("127.0.0.1:{}", port(a.internode_port, i)),
            ])
            .args([
                "--listen-gossip",
                &format!("127.0.0.1:{}", port(a.gossip_port, i)),
            ])
            .args(["--advertise-host", "127.0.0.1"])
            .args([
                "--n",
                &self.n.to_string(),
                "--w",
                &self.w.to_string(),
                "--r",
                &self.r.to_string(),
            ])
            .args(["--conflict-mode", &a.conflict_mode, "--sync", &a.sync])
            .args(["--gossip-interval", "250ms"])
            .env_remove("RINGKV_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(s) = seed {
            cmd.args(["--seeds", s]);
        }
        if let Some(sec) = &self.secure {
            cmd.args(sec.node_args());
        }
        // Children die with us even if we are SIGKILLed.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Starts node `i` and waits (60 s at most) until it listens.
    async fn spawn(
        &self,
        i: u16,
        seed: Option<&str>,
    ) -> Result<(Child, serde_json::Value), String> {
        let name = format!("node-{i}");
        let mut child = self
            .launch(i, seed)
            .map_err(|e| format!("{name}: cannot start: {e}"))?;
        let dir = self.dir(&name);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(ep) = read_endpoints(&dir) {
                return Ok((child, ep));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before it started:\n{}",
                    log_tail(&dir, 5)
                ));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(format!(
                    "{name} did not start within 60s; see {}",
                    dir.join("node.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn describe(&self, name: &str, ep: &serde_json::Value) -> String {
        let s = |k: &str| ep[k].as_str().unwrap_or("?").to_string();
        format!(
            "{name}  {}://{}  grpc {}  admin {}  (logs {})",
            if self.secure.is_some() {
                "https"
            } else {
                "http"
            },
            s("http"),
            s("grpc"),
            s("internode"),
            self.data.join(name).join("node.log").display()
        )
    }
}

/// Sends one order to a running `ringkv local` and prints its answer.
async fn order(
    data: &Path,
    line: &str,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let sock = data.join(CONTROL_SOCKET);
    let mut s = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
        format!(
            "no local cluster is running in {} ({}: {e})",
            data.display(),
            sock.display()
        )
    })?;
    s.write_all(format!("{line}\n").as_bytes()).await?;
    let mut lines = BufReader::new(s).lines();
    let mut ok = false;
    while let Some(l) = lines.next_line().await? {
        ok = l.starts_with("ok");
        println!("{l}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn run(a: LocalArgs) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match &a.action {
        Some(LocalAction::List { data }) => return order(data, "list").await,
        Some(LocalAction::Stop { node, data }) => {
            return order(data, &format!("stop {node}")).await;
        }
        Some(LocalAction::Start { node, data }) => {
            return order(data, &format!("start {node}")).await;
        }
        Some(LocalAction::Kill {
            node,
            stay_down,
            data,
        }) => {
            let flag = if *stay_down { " --stay-down" } else { "" };
            return order(data, &format!("kill {node}{flag}")).await;
        }
        Some(LocalAction::Add { data }) => return order(data, "add").await,
        Some(LocalAction::Remove { node, data }) => {
            return order(data, &format!("remove {node}")).await;
        }
        None => {}
    }
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&a.data)?;
    let data = a.data.canonicalize()?;
    let count = a.nodes as u32;
    let n = a.n.unwrap_or(3).min(count);
    let w = a.w.unwrap_or(n / 2 + 1).min(n);
    let r = a.r.unwrap_or(n / 2 + 1).min(n);
    let secure = if a.secure {
        Some(secure::prepare(&data)?)
    } else {
        None
    };
    let spawner = Spawner {
        exe,
        data: data.clone(),
        a,
        n,
        w,
        r,
        secure,
    };
    println!(
        "ringkv local: {} nodes, N={n} W={w} R={r}, data in {}",
        spawner.a.nodes,
        data.display()
    );
    // Nodes added by an earlier run come back too.
    let mut count = spawner.a.nodes;
    while data.join(format!("node-{count}")).join("tokens").exists() {
        count += 1;
    }
    let sup = Arc::new(Supervisor::new(spawner));
    // Children are SIGKILLed if we return early (kill_on_drop).
    for i in 0..count {
        let left = std::fs::read_to_string(data.join(format!("node-{i}")).join("ring_state"))
            .is_ok_and(|s| s.trim() == "left");
        if left {
            continue;
        }
        let line = sup.boot(i).await?;
        println!("{line}");
    }
    if let Some(sec) = &sup.spawner().secure {
        let ep = read_endpoints(&data.join("node-0")).unwrap_or_default();
        let s = |k: &str| ep[k].as_str().unwrap_or("127.0.0.1:?").to_string();
        println!("{}", sec.usage(&s("http"), &s("grpc"), &s("internode")));
    }
    let sock = data.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let control = tokio::net::UnixListener::bind(&sock)?;
    println!(
        "cluster running; Ctrl-C stops it (data is kept); a node that dies is restarted; `ringkv local list|stop|start|kill|add|remove` steer it"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => sup.supervise(),
            Ok((s, _)) = control.accept() => {
                let sup = sup.clone();
                tokio::spawn(async move {
                    if let Err(e) = sup.serve_order(s).await {
                        eprintln!("control order failed: {e}");
                    }
                });
            }
        }
    }
    let _ = std::fs::remove_file(&sock);
    println!("stopping...");
    sup.stop_all().await;
    Ok(ExitCode::SUCCESS)
}
