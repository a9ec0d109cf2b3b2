//! `ringkv local`: a cluster of real node processes on loopback. Each node is
//! this same executable run as `ringkv node ...`, so `cargo run --bin ringkv
//! -- local` needs nothing else built. Node i listens on HTTP 8080+i, client
//! gRPC 7070+i, internode/admin 7001+i and gossip (UDP) 7200+i unless the
//! base ports are moved (0 = pick free ports). Logs go to DATA/node-i/node.log.
//!
//! A running local cluster takes orders on the Unix socket DATA/local.sock:
//! `ringkv local add` starts one more node (it joins the ring and streams its
//! ranges in), `ringkv local remove node-i` decommissions node-i (it streams
//! its ranges to their new owners and announces LEFT) and then stops it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::process::{Child, Command};

#[derive(clap::Subcommand)]
pub enum LocalAction {
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

const CONTROL_SOCKET: &str = "local.sock";

/// What every node of this local cluster is started with.
struct Spawner {
    exe: PathBuf,
    data: PathBuf,
    a: LocalArgs,
    n: u32,
    w: u32,
    r: u32,
}

impl Spawner {
    async fn spawn(
        &self,
        i: u16,
        seed: Option<&str>,
    ) -> Result<(String, Child, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
        let a = &self.a;
        let name = format!("node-{i}");
        let dir = self.data.join(&name);
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
        // Children die with us even if we are SIGKILLed.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        match wait_endpoints(&dir, &mut child, &name).await {
            Ok(ep) => Ok((name, child, ep)),
            Err(e) => {
                let _ = child.start_kill();
                Err(e.into())
            }
        }
    }

    fn describe(&self, name: &str, ep: &serde_json::Value) -> String {
        let s = |k: &str| ep[k].as_str().unwrap_or("?").to_string();
        format!(
            "{name}  http://{}  grpc {}  admin {}  (logs {})",
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
    let spawner = Spawner {
        exe,
        data: data.clone(),
        a,
        n,
        w,
        r,
    };
    let mut nodes = Nodes(Vec::new());
    let mut seed: Option<String> = None;
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
    for i in 0..count {
        let left = std::fs::read_to_string(data.join(format!("node-{i}")).join("ring_state"))
            .is_ok_and(|s| s.trim() == "left");
        if left {
            continue;
        }
        let (name, child, ep) = spawner.spawn(i, seed.as_deref()).await?;
        if seed.is_none() {
            seed = ep["gossip"].as_str().map(str::to_string);
        }
        println!("{}", spawner.describe(&name, &ep));
        nodes.0.push((name, child));
    }
    let sock = data.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let control = tokio::net::UnixListener::bind(&sock)?;
    println!("cluster running; Ctrl-C stops it (data is kept)");

    enum Event {
        Stop,
        Exited(String, std::process::ExitStatus),
        Order(tokio::net::UnixStream),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut code = ExitCode::SUCCESS;
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => Event::Stop,
            _ = term.recv() => Event::Stop,
            (name, st) = first_exit(&mut nodes) => Event::Exited(name, st),
            Ok((s, _)) = control.accept() => Event::Order(s),
        };
        match ev {
            Event::Stop => break,
            Event::Exited(name, st) => {
                eprintln!("{name} exited unexpectedly ({st}); stopping the others");
                code = ExitCode::FAILURE;
                break;
            }
            Event::Order(s) => {
                if let Err(e) = serve_order(s, &spawner, &mut nodes, seed.as_deref()).await {
                    eprintln!("control order failed: {e}");
                }
            }
        }
    }
    let _ = std::fs::remove_file(&sock);
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

async fn first_exit(nodes: &mut Nodes) -> (String, std::process::ExitStatus) {
    loop {
        for (name, c) in nodes.0.iter_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                return (name.clone(), st);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Handles one `add` or `remove NODE` order, answering line by line; the
/// last line starts with `ok` or `error`.
async fn serve_order(
    s: tokio::net::UnixStream,
    spawner: &Spawner,
    nodes: &mut Nodes,
    seed: Option<&str>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (rd, mut wr) = s.into_split();
    let mut line = String::new();
    BufReader::new(rd).read_line(&mut line).await?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let answer = match words.as_slice() {
        ["add"] => {
            let mut i = 0u16;
            while nodes.0.iter().any(|(n, _)| *n == format!("node-{i}"))
                || spawner
                    .data
                    .join(format!("node-{i}"))
                    .join("tokens")
                    .exists()
            {
                i += 1;
            }
            match spawner.spawn(i, seed).await {
                Ok((name, child, ep)) => {
                    let d = spawner.describe(&name, &ep);
                    println!("{d}");
                    nodes.0.push((name.clone(), child));
                    format!(
                        "ok added {d}\n{name} is JOINING: it streams its ranges, then turns NORMAL (see `ringkv status`)"
                    )
                }
                Err(e) => format!("error: {e}"),
            }
        }
        ["remove", name] => match remove(spawner, nodes, name, &mut wr).await {
            Ok(()) => format!("ok {name} decommissioned (LEFT) and stopped"),
            Err(e) => format!("error: {e}"),
        },
        _ => format!("error: unknown order {:?} (add | remove NODE)", line.trim()),
    };
    // `ok` lines go last so the client's verdict is the final line.
    let mut out = answer.lines().collect::<Vec<_>>();
    if out.len() > 1 && out[0].starts_with("ok") {
        let first = out.remove(0);
        out.push(first);
    }
    wr.write_all((out.join("\n") + "\n").as_bytes()).await
}

async fn remove(
    spawner: &Spawner,
    nodes: &mut Nodes,
    name: &str,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let idx = nodes
        .0
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| format!("no running node called {name}"))?;
    let ep: serde_json::Value =
        std::fs::read_to_string(spawner.data.join(name).join(ringkv_node::ENDPOINTS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| format!("{name} has no endpoints.json"))?;
    let admin = format!("http://{}", ep["internode"].as_str().unwrap_or_default());
    let mut a = ringkv_client::Admin::connect(&admin)
        .await
        .map_err(|e| e.to_string())?;
    a.decommission().await.map_err(|e| e.to_string())?;
    let _ = wr
        .write_all(format!("{name}: decommissioning (streaming its ranges away)\n").as_bytes())
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        let st = a.status().await.map_err(|e| e.to_string())?;
        let d = st.decommission.unwrap_or_default();
        use ringkv_proto::v1::decommission_status::Phase;
        match Phase::try_from(d.phase) {
            Ok(Phase::Done) => break,
            Ok(Phase::Failed) => return Err(format!("decommission failed: {}", d.error)),
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err("decommission did not finish within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, mut child) = nodes.0.remove(idx);
    signal(&child, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    // Its data directory stays, marked LEFT; a restart of `local` skips it.
    Ok(())
}
