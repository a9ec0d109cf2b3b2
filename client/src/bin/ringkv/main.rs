//! `ringkv`: the ringkv command line.

mod backup;
mod bench;
mod local;
mod status;

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
            (None, Some(p)) => Some(token_from_file(
                &String::from_utf8(read(p, "--token-file")?)
                    .map_err(|_| format!("--token-file {}: not UTF-8", p.display()))?,
            )),
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

/// The token in a `--token-file`: the file's content, or — given a node's
/// `auth_tokens_file` (`<role> <token>` lines) — its first admin token, so a
/// pod's own tokens file works for its preStop drain.
fn token_from_file(content: &str) -> String {
    let admin = content.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("admin")).then(|| w.next()).flatten()
    });
    admin.unwrap_or(content.trim()).to_string()
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
            status::print(&s, json);
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
            println!("{}", status::decommission_line(&d));
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            use ringkv_client::pb::decommission_status::Phase;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = a.status().await?.decommission.unwrap_or_default();
                println!("{}", status::decommission_line(&d));
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
                println!("{}", status::repair_line(&r));
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
                println!("{}", status::cleanup_line(&c));
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
            println!("{}", status::removal_line(&r));
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            use ringkv_client::pb::remove_node_status::Phase;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = a.status().await?.removal.unwrap_or_default();
                println!("{}", status::removal_line(&r));
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

#[cfg(test)]
mod token_file_tests {
    use super::token_from_file;

    #[test]
    fn a_raw_token_or_the_admin_line_of_a_tokens_file() {
        assert_eq!(token_from_file("s3cr3t\n"), "s3cr3t");
        assert_eq!(
            token_from_file("# tokens\nread r1\nreadwrite w1\nadmin a1\nadmin a2\n"),
            "a1"
        );
    }
}
