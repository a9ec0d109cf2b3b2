//! `ringkv local`: a cluster of real node processes on loopback. Each node is
//! this same executable run as `ringkv node ...`, so `cargo run --bin ringkv
//! -- local` needs nothing else built. Node i listens on HTTP 8080+i, client
//! gRPC 7070+i, internode/admin 7001+i and gossip (UDP) 7200+i unless the
//! base ports are moved (0 = pick free ports). Logs go to DATA/node-i/node.log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub struct LocalArgs {
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
}

/// Children are SIGKILLed if `local` itself unwinds or errors out.
struct Nodes(Vec<(String, Child)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.start_kill();
        }
    }
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

async fn wait_endpoints(
    dir: &Path,
    child: &mut Child,
    name: &str,
) -> Result<serde_json::Value, String> {
    let file = dir.join(ringkv_node::ENDPOINTS_FILE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return Ok(v);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{name} exited ({status}) before it started:\n{}",
                tail.join("\n")
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{name} did not start within 60s; see {}",
                dir.join("node.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(a: LocalArgs) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&a.data)?;
    let data = a.data.canonicalize()?;
    let count = a.nodes as u32;
    let n = a.n.unwrap_or(3).min(count);
    let w = a.w.unwrap_or(n / 2 + 1).min(n);
    let r = a.r.unwrap_or(n / 2 + 1).min(n);
    let mut nodes = Nodes(Vec::new());
    let mut seed: Option<String> = None;
    println!(
        "ringkv local: {} nodes, N={n} W={w} R={r}, data in {}",
        a.nodes,
        data.display()
    );
    for i in 0..a.nodes {
        let name = format!("node-{i}");
        let dir = data.join(&name);
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(dir.join(ringkv_node::ENDPOINTS_FILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let mut cmd = Command::new(&exe);
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
                &n.to_string(),
                "--w",
                &w.to_string(),
                "--r",
                &r.to_string(),
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
        if let Some(s) = &seed {
            cmd.args(["--seeds", s]);
        }
        // Children die with us even if we are SIGKILLed.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let ep = match wait_endpoints(&dir, &mut child, &name).await {
            Ok(ep) => ep,
            Err(e) => {
                nodes.0.push((name, child));
                return Err(e.into());
            }
        };
        let s = |k: &str| ep[k].as_str().unwrap_or("?").to_string();
        if seed.is_none() {
            seed = Some(s("gossip"));
        }
        println!(
            "{name}  http://{}  grpc {}  admin {}  (logs {})",
            s("http"),
            s("grpc"),
            s("internode"),
            dir.join("node.log").display()
        );
        nodes.0.push((name, child));
    }
    println!("cluster running; Ctrl-C stops it (data is kept)");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exited = async {
        loop {
            for (name, c) in nodes.0.iter_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return (name.clone(), st);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
        (name, st) = exited => {
            eprintln!("{name} exited unexpectedly ({st}); stopping the others");
            code = ExitCode::FAILURE;
        }
    }
    println!("stopping...");
    for (_, c) in &nodes.0 {
        signal(c, libc::SIGTERM);
    }
    for (name, c) in nodes.0.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(15), c.wait()).await {
            Ok(_) => println!("{name} stopped"),
            Err(_) => {
                eprintln!("{name} did not stop in 15s; killing it");
                let _ = c.kill().await;
            }
        }
    }
    Ok(code)
}
