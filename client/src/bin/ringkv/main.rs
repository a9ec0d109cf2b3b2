//! `ringkv`: the ringkv command line.

mod backup;
mod bench;
mod local;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringkv_client::{Admin, Client, Context, PutOptions};

#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv: a Dynamo-style distributed key-value store"
)]
struct Cli {
    /// Client gRPC address of any node.
    #[arg(
        long,
        global = true,
        env = "RINGKV_ADDR",
        default_value = "http://127.0.0.1:7070"
    )]
    addr: String,
    /// Admin (internode) gRPC address of a node.
    #[arg(
        long,
        global = true,
        env = "RINGKV_ADMIN",
        default_value = "http://127.0.0.1:7001"
    )]
    admin: String,
    #[command(flatten)]
    security: Security,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How to reach a secured cluster (`ringkv local --secure` prints these).
#[derive(clap::Args)]
struct Security {
    /// PEM CA certificate the nodes' certificates chain to; turns TLS on
    /// (addresses become https://).
    #[arg(long, global = true, env = "RINGKV_CACERT")]
    cacert: Option<PathBuf>,
    /// PEM client certificate (needed for Admin commands when TLS is on,
    /// and for everything under `tls_mode: required`).
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        env = "RINGKV_CERT",
        requires = "client_key"
    )]
    cert: Option<PathBuf>,
    /// PEM key of --cert.
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        env = "RINGKV_KEY",
        requires = "client_cert"
    )]
    key: Option<PathBuf>,
    /// Bearer token (read, readwrite or admin).
    #[arg(
        long,
        global = true,
        env = "RINGKV_TOKEN",
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true, env = "RINGKV_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Name the nodes' certificates must carry (default: the host dialled).
    #[arg(long, global = true, env = "RINGKV_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
}

impl Security {
    fn options(&self) -> Result<ringkv_client::ConnectOptions, BoxError> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(p)) => Some(
                String::from_utf8(read(p, "--token-file")?)
                    .map_err(|_| format!("--token-file {}: not UTF-8", p.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(ringkv_client::ConnectOptions {
            ca_pem: self
                .cacert
                .as_ref()
                .map(|p| read(p, "--cacert"))
                .transpose()?,
            identity: match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((read(c, "--cert")?, read(k, "--key")?)),
                _ => None,
            },
            token,
            tls_server_name: self.tls_server_name.clone(),
        })
    }
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only obscure clap derive
enum Cmd {
    /// Read a key: prints the value (or every sibling) to stdout, the context to stderr.
    Get {
        key: String,
        /// Read consistency: one | quorum | all | <n>.
        #[arg(long, default_value = "")]
        r: String,
        /// Print JSON with every sibling and the context.
        #[arg(long)]
        json: bool,
    },
    /// Write a key (VALUE `-` reads stdin). Without --context the value becomes
    /// a sibling of whatever is there; pass the context from `get` to replace it.
    Put {
        key: String,
        value: String,
        #[arg(long, default_value = "")]
        context: String,
        /// Time to live, e.g. 30s, 5m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Write consistency: one | quorum | all | <n>.
        #[arg(long, default_value = "")]
        w: String,
    },
    /// Delete a key (pass the context from `get` to delete what you saw).
    Delete {
        key: String,
        #[arg(long, default_value = "")]
        context: String,
        #[arg(long, default_value = "")]
        w: String,
    },
    /// Show a node's view of the cluster (Admin.Status).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop a node accepting client requests (Kubernetes preStop).
    Drain,
    /// Decommission a node: stream its ranges to their new owners, then LEFT.
    /// Idempotent and resumable; refuses when fewer than N nodes would remain.
    Decommission {
        /// Wait until it has LEFT, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Run Merkle anti-entropy on a node now (every range it replicates).
    Repair {
        /// Wait until the repair finishes, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Drop every record the node no longer replicates (after a node joined,
    /// or sloppy writes it took), once each range is on its replicas.
    /// Refused while a node is joining or leaving.
    Cleanup {
        /// Wait until it finishes, printing progress; fails if a range was kept.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a node that is gone for good (run against any other live node,
    /// which coordinates): its ranges stream from the surviving replicas to
    /// their new owners, then it is LEFT everywhere. Refused while the node is
    /// alive, while another node joins or leaves, or below N nodes.
    Removenode {
        /// The id of the dead node.
        node: String,
        /// Wait until it is done, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Take, list or delete a snapshot on the node (--admin).
    #[command(subcommand)]
    Snapshot(backup::SnapshotCmd),
    /// Back the whole cluster up to object storage (every live node under one
    /// backup id, incremental); or verify, list, prune backups.
    Backup(backup::BackupArgs),
    /// Restore a backup into the running cluster of --admin (any size): the
    /// backup is verified first, then every record is merged into its
    /// current replicas.
    Restore(backup::RestoreArgs),
    /// Run a local cluster of real node processes on loopback.
    Local(local::LocalArgs),
    /// Drive a running cluster with load and print throughput and latency.
    Bench(bench::BenchArgs),
    /// Run one node (what `ringkv local` starts; same as `ringkv-node`).
    #[command(hide = true)]
    Node {
        #[command(flatten)]
        args: ringkv_node::Args,
    },
}

// `ringkv node` / `ringkv local` run real nodes from this executable.
#[global_allocator]
static GLOBAL: ringkv_node::Allocator = ringkv_node::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Node { args } = cli.cmd {
        return ringkv_node::main_with_args(args);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringkv: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let opts = match &cli.cmd {
        // They start nodes rather than call them.
        Cmd::Local(_) | Cmd::Node { .. } => Default::default(),
        _ => cli.security.options()?,
    };
    match cli.cmd {
        Cmd::Get { key, r, json } => {
            let mut c = Client::connect_with(&cli.addr, &opts).await?;
            let got = c.get_with(&key, &r).await?;
            if json {
                use base64::Engine as _;
                let sibs: Vec<_> = got
                    .siblings
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "value": std::str::from_utf8(&s.value).ok(),
                            "value_base64": base64::engine::general_purpose::STANDARD.encode(&s.value),
                            "expires_at_unix_ms": s.expires_at_unix_ms,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"found": got.found(), "siblings": sibs, "context": got.context.as_str()})
                );
            } else if !got.found() {
                eprintln!("not found");
                if !got.context.as_str().is_empty() {
                    eprintln!("context: {}", got.context.as_str());
                }
                return Ok(ExitCode::from(1));
            } else {
                let mut out = std::io::stdout().lock();
                if got.has_conflict() {
                    eprintln!(
                        "{} siblings (concurrent writes); resolve with put --context",
                        got.siblings.len()
                    );
                }
                for s in &got.siblings {
                    out.write_all(&s.value)?;
                    out.write_all(b"\n")?;
                }
                eprintln!("context: {}", got.context.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Put {
            key,
            value,
            context,
            ttl,
            w,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                value.into_bytes()
            };
            let mut c = Client::connect_with(&cli.addr, &opts).await?;
            let opts = PutOptions {
                context: Context(context),
                ttl,
                w,
            };
            let res = c.put_with(&key, value, opts).await?;
            println!("ok ({} acks)", res.acks);
            eprintln!("context: {}", res.context.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Delete { key, context, w } => {
            let mut c = Client::connect_with(&cli.addr, &opts).await?;
            let acks = c.delete(&key, &Context(context), &w).await?;
            println!("deleted ({acks} acks)");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            let s = a.status().await?;
            print_status(&s, json);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drain => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            a.drain().await?;
            println!("drained");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Decommission { wait } => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            let d = a.decommission().await?;
            println!("{}", decommission_line(&d));
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            use ringkv_client::pb::decommission_status::Phase;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = a.status().await?.decommission.unwrap_or_default();
                println!("{}", decommission_line(&d));
                match Phase::try_from(d.phase) {
                    Ok(Phase::Done) => return Ok(ExitCode::SUCCESS),
                    Ok(Phase::Failed) => return Ok(ExitCode::FAILURE),
                    _ => {}
                }
            }
        }
        Cmd::Repair { wait } => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            let (started, id) = a.repair().await?;
            println!(
                "repair {id} {}",
                if started {
                    "started"
                } else {
                    "already running"
                }
            );
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = a.status().await?.repair.unwrap_or_default();
                println!("{}", repair_line(&r));
                if !r.running {
                    return Ok(if r.last_error.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
            }
        }
        Cmd::Cleanup { wait } => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            let (started, id) = a.cleanup().await?;
            println!(
                "cleanup {id} {}",
                if started {
                    "started"
                } else {
                    "already running"
                }
            );
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let c = a.status().await?.cleanup.unwrap_or_default();
                println!("{}", cleanup_line(&c));
                if !c.running {
                    return Ok(if c.last_error.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
            }
        }
        Cmd::Removenode { node, wait } => {
            let mut a = Admin::connect_with(&cli.admin, &opts).await?;
            let r = a.remove_node(&node).await?;
            println!("{}", removal_line(&r));
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            use ringkv_client::pb::remove_node_status::Phase;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = a.status().await?.removal.unwrap_or_default();
                println!("{}", removal_line(&r));
                match Phase::try_from(r.phase) {
                    Ok(Phase::Done) => return Ok(ExitCode::SUCCESS),
                    Ok(Phase::Failed) => return Ok(ExitCode::FAILURE),
                    _ => {}
                }
            }
        }
        Cmd::Snapshot(c) => backup::snapshot(&cli.admin, c).await,
        Cmd::Backup(args) => backup::backup(&cli.admin, args).await,
        Cmd::Restore(args) => backup::restore_cmd(&cli.admin, args).await,
        Cmd::Local(args) => local::run(args).await,
        Cmd::Bench(args) => bench::run(args, opts).await,
        Cmd::Node { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn state_name(s: i32) -> &'static str {
    match ringkv_proto::v1::NodeState::try_from(s) {
        Ok(ringkv_proto::v1::NodeState::Joining) => "JOINING",
        Ok(ringkv_proto::v1::NodeState::Normal) => "NORMAL",
        Ok(ringkv_proto::v1::NodeState::Leaving) => "LEAVING",
        Ok(ringkv_proto::v1::NodeState::Left) => "LEFT",
        Ok(ringkv_proto::v1::NodeState::Repairing) => "REPAIRING",
        _ => "UNKNOWN",
    }
}

fn decommission_line(d: &ringkv_client::pb::DecommissionStatus) -> String {
    use ringkv_client::pb::decommission_status::Phase;
    let phase = match Phase::try_from(d.phase) {
        Ok(Phase::NotStarted) => "not started",
        Ok(Phase::Streaming) => "streaming",
        Ok(Phase::Done) => "done (LEFT)",
        Ok(Phase::Failed) => "FAILED",
        _ => "unknown",
    };
    let mut s = format!(
        "decommission: {phase}, ranges {}/{}, {} keys / {} bytes streamed",
        d.ranges_done, d.ranges_total, d.keys_streamed, d.bytes_streamed
    );
    if !d.error.is_empty() {
        s.push_str(&format!(
            " — {} (run decommission again to resume)",
            d.error
        ));
    }
    s
}

fn cleanup_line(c: &ringkv_client::pb::CleanupStatus) -> String {
    let mut s = format!(
        "cleanup: {}, ranges {}/{} ({} kept), {} keys / {} bytes dropped, {} keys / {} bytes pushed to replicas first; last complete cleanup {}",
        if c.running { "RUNNING" } else { "idle" },
        c.ranges_done,
        c.ranges_total,
        c.ranges_kept,
        c.keys_dropped,
        c.bytes_dropped,
        c.keys_pushed,
        c.bytes_pushed,
        ago(c.last_completed_unix_ms)
    );
    if !c.last_error.is_empty() {
        s.push_str(&format!(" — {}", c.last_error));
    }
    s
}

fn removal_line(r: &ringkv_client::pb::RemoveNodeStatus) -> String {
    use ringkv_client::pb::remove_node_status::Phase;
    let phase = match Phase::try_from(r.phase) {
        Ok(Phase::NotStarted) => "not started",
        Ok(Phase::Announcing) => "announcing (waiting for every live node to hear)",
        Ok(Phase::Streaming) => "streaming",
        Ok(Phase::Done) => "done (LEFT)",
        Ok(Phase::Failed) => "FAILED",
        _ => "unknown",
    };
    let mut s = format!(
        "removenode {}: {phase}, ranges {}/{}, {} keys / {} bytes streamed",
        r.node_id, r.ranges_done, r.ranges_total, r.keys_streamed, r.bytes_streamed
    );
    if !r.error.is_empty() {
        s.push_str(&format!(" — {} (run removenode again to resume)", r.error));
    }
    s
}

fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{}s ago", now.saturating_sub(unix_ms) / 1000)
}

fn repair_line(r: &ringkv_client::pb::RepairStatus) -> String {
    let fresh = r
        .ranges
        .iter()
        .filter(|x| x.last_completed_unix_ms > 0)
        .count();
    let mut s = format!(
        "repair: {}, ranges {}/{}, {} keys / {} bytes streamed, {} digest bytes; last complete repair {}; {fresh}/{} ranges ever repaired",
        if r.running { "RUNNING" } else { "idle" },
        r.ranges_done,
        r.ranges_total,
        r.keys_streamed,
        r.bytes_streamed,
        r.digest_bytes,
        ago(r.last_completed_unix_ms),
        r.ranges.len()
    );
    if !r.last_error.is_empty() {
        s.push_str(&format!(" — last error: {}", r.last_error));
    }
    s
}

fn print_status(s: &ringkv_client::StatusResponse, json: bool) {
    let repl = s.replication.unwrap_or_default();
    if json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "node_id": m.node_id, "zone": m.zone, "state": state_name(m.state), "alive": m.alive,
                    "client_grpc_addr": m.client_grpc_addr, "http_addr": m.http_addr, "internode_addr": m.internode_addr,
                    "tokens": m.tokens, "generation": m.generation, "owned_fraction": m.owned_fraction,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "node_id": s.node_id, "zone": s.zone, "state": state_name(s.state), "version": s.version,
                "replication": {"n": repl.n, "w": repl.w, "r": repl.r}, "conflict_mode": s.conflict_mode,
                "draining": s.draining, "uptime_ms": s.uptime_ms, "members": members,
                "pending_hints": s.pending_hints, "pending_hints_by_node": s.pending_hints_by_node,
                "repair": s.repair.as_ref().map(|r| serde_json::json!({
                    "running": r.running, "repair_id": r.repair_id, "ranges_total": r.ranges_total,
                    "ranges_done": r.ranges_done, "keys_streamed": r.keys_streamed,
                    "bytes_streamed": r.bytes_streamed, "digest_bytes": r.digest_bytes,
                    "last_completed_unix_ms": r.last_completed_unix_ms, "last_error": r.last_error,
                })),
                "decommission": s.decommission.as_ref().map(|d| serde_json::json!({
                    "phase": d.phase, "ranges_total": d.ranges_total, "ranges_done": d.ranges_done,
                    "keys_streamed": d.keys_streamed, "bytes_streamed": d.bytes_streamed, "error": d.error,
                })),
                "cleanup": s.cleanup.as_ref().map(|c| serde_json::json!({
                    "running": c.running, "cleanup_id": c.cleanup_id, "ranges_total": c.ranges_total,
                    "ranges_done": c.ranges_done, "ranges_kept": c.ranges_kept,
                    "keys_dropped": c.keys_dropped, "bytes_dropped": c.bytes_dropped,
                    "keys_pushed": c.keys_pushed, "bytes_pushed": c.bytes_pushed,
                    "last_completed_unix_ms": c.last_completed_unix_ms, "last_error": c.last_error,
                })),
                "removal": s.removal.as_ref().map(|r| serde_json::json!({
                    "node_id": r.node_id, "phase": r.phase, "ranges_total": r.ranges_total,
                    "ranges_done": r.ranges_done, "keys_streamed": r.keys_streamed,
                    "bytes_streamed": r.bytes_streamed, "error": r.error,
                })),
                "removed_nodes": s.removed_nodes.iter().map(|r| serde_json::json!({
                    "node_id": r.node_id, "generation": r.generation, "done": r.done,
                    "removed_by": r.removed_by, "at_unix_ms": r.at_unix_ms,
                })).collect::<Vec<_>>(),
                "backup": s.backup.as_ref().map(|b| serde_json::json!({
                    "running": b.running, "backup_id": b.backup_id, "phase": b.phase,
                    "url": b.url, "files_total": b.files_total, "files_done": b.files_done,
                    "files_uploaded": b.files_uploaded, "bytes_total": b.bytes_total,
                    "bytes_uploaded": b.bytes_uploaded, "bytes_skipped": b.bytes_skipped,
                    "started_unix_ms": b.started_unix_ms, "finished_unix_ms": b.finished_unix_ms,
                    "error": b.error, "last_completed_id": b.last_completed_id,
                    "last_completed_unix_ms": b.last_completed_unix_ms,
                })),
                "restore": s.restore.as_ref().map(|r| serde_json::json!({
                    "running": r.running, "backup_id": r.backup_id, "phase": r.phase,
                    "url": r.url, "bytes_downloaded": r.bytes_downloaded,
                    "bytes_total": r.bytes_total, "keys_loaded": r.keys_loaded,
                    "started_unix_ms": r.started_unix_ms, "finished_unix_ms": r.finished_unix_ms,
                    "error": r.error,
                })),
            })
        );
        return;
    }
    println!(
        "node {} (zone {}) {}{} — N={} W={} R={} conflict_mode={} version {}",
        s.node_id,
        s.zone,
        state_name(s.state),
        if s.draining { ", DRAINING" } else { "" },
        repl.n,
        repl.w,
        repl.r,
        s.conflict_mode,
        s.version
    );
    println!(
        "{:<16} {:<10} {:<8} {:<6} {:>6} {:>8}  {:<22} {:<22}",
        "MEMBER", "ZONE", "STATE", "ALIVE", "TOKENS", "OWNS", "GRPC", "HTTP"
    );
    for m in &s.members {
        println!(
            "{:<16} {:<10} {:<8} {:<6} {:>6} {:>7.1}%  {:<22} {:<22}",
            m.node_id,
            m.zone,
            state_name(m.state),
            if m.alive { "yes" } else { "no" },
            m.tokens,
            m.owned_fraction * 100.0,
            m.client_grpc_addr,
            m.http_addr
        );
    }
    let hints: Vec<String> = s
        .pending_hints_by_node
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "hints held: {}{}",
        s.pending_hints,
        if hints.is_empty() {
            String::new()
        } else {
            format!(" ({})", hints.join(", "))
        }
    );
    if let Some(r) = &s.repair {
        println!("{}", repair_line(r));
    }
    if let Some(j) = &s.join {
        println!(
            "join: ranges {}/{}, {} keys / {} bytes streamed in",
            j.ranges_done, j.ranges_total, j.keys_streamed, j.bytes_streamed
        );
    }
    if let Some(d) = &s.decommission
        && d.phase != ringkv_client::pb::decommission_status::Phase::NotStarted as i32
    {
        println!("{}", decommission_line(d));
    }
    if let Some(c) = &s.cleanup
        && (c.running || c.cleanup_id != 0)
    {
        println!("{}", cleanup_line(c));
    }
    if let Some(r) = &s.removal
        && r.phase != ringkv_client::pb::remove_node_status::Phase::NotStarted as i32
    {
        println!("{}", removal_line(r));
    }
    if let Some(b) = &s.backup
        && !b.backup_id.is_empty()
    {
        println!(
            "backup {} to {}: {}, files {}/{} ({} uploaded), {} of {} bytes uploaded, {} skipped{}",
            b.backup_id,
            b.url,
            b.phase,
            b.files_done,
            b.files_total,
            b.files_uploaded,
            b.bytes_uploaded,
            b.bytes_total,
            b.bytes_skipped,
            if b.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", b.error)
            }
        );
    }
    if let Some(r) = &s.restore
        && !r.backup_id.is_empty()
    {
        println!(
            "restore of {} from {}: {}, {} of {} bytes downloaded, {} keys loaded{}",
            r.backup_id,
            r.url,
            r.phase,
            r.bytes_downloaded,
            r.bytes_total,
            r.keys_loaded,
            if r.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", r.error)
            }
        );
    }
    for r in &s.removed_nodes {
        println!(
            "removed: {} (generation {}) by {} {}{}",
            r.node_id,
            r.generation,
            r.removed_by,
            ago(r.at_unix_ms),
            if r.done { "" } else { ", streaming" }
        );
    }
}
