//! `ringkv snapshot`, `ringkv backup [verify|list|prune]` and `ringkv restore`.
//!
//! Snapshots and backups run on the nodes (Admin API); a cluster backup is
//! every live node's backup under one id, started together and waited for.
//! verify, list and prune read the object store from this process (with
//! this process's credentials). Restore downloads and verifies the backup
//! here, then loads every record into the target cluster through its
//! nodes' Admin.RestoreRecords, which merges it into the key's current
//! replicas — so any backup restores into a cluster of any size.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ringkv_node::backup::remote::{AdminSink, admin_url};
use ringkv_node::backup::restore::{Progress, RestoreOptions, restore};
use ringkv_node::backup::{BackupError, Retention, Target, prune, verify};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::BoxError;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot on the node (hard links under <data>/snapshots/<id>/).
    Create {
        /// Snapshot id (default: snap-<unix ms>).
        id: Option<String>,
    },
    /// List the node's snapshots.
    List,
    /// Delete one of the node's snapshots.
    Delete { id: String },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    cmd: Option<BackupCmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Where to: s3://bucket/prefix (credentials from AWS_* in the nodes'
    /// environment; ?endpoint=...&allow_http=true&region=... for other S3
    /// servers) or file:///dir (a directory every node can reach).
    #[arg(long)]
    url: Option<String>,
    /// Backup id (default: the UTC time, e.g. 2026-12-01T16-30-00Z).
    #[arg(long)]
    id: Option<String>,
    /// Upload rate per node, bytes per second (suffixes K, M, G: binary);
    /// default 64M.
    #[arg(long, value_parser = parse_bytes)]
    rate: Option<u64>,
    /// Start the node backups and return without waiting.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Check every object of a backup (size and SHA-256); names each missing
    /// or corrupt object and exits non-zero if there is one.
    Verify {
        #[arg(long)]
        url: String,
        #[arg(long)]
        backup: String,
    },
    /// List the backups at a URL.
    List {
        #[arg(long)]
        url: String,
    },
    /// Delete old backups (keep the newest K and/or those younger than
    /// max-age; the newest is always kept), then every file object no
    /// remaining manifest names.
    Prune {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<Duration>,
        /// Objects younger than this are never collected (a backup being
        /// uploaded has no manifest yet).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "6h")]
        min_object_age: Duration,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup location (as for `ringkv backup --url`).
    #[arg(long)]
    from: String,
    #[arg(long)]
    backup: String,
    /// Local directory for the downloaded files (removed afterwards);
    /// needs room for the whole backup.
    #[arg(long)]
    scratch: Option<std::path::PathBuf>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let m = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(format!("unknown unit in {s:?} (K, M or G)")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a byte count: {e}"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: must be between 1 byte and 2^64")),
        Some(v) => Ok(v),
    }
}

async fn admin(addr: &str) -> Result<AdminClient<Channel>, BoxError> {
    let ch = tonic::transport::Endpoint::from_shared(admin_url(addr))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot reach node admin API {addr}: {e}"))?;
    Ok(AdminClient::new(ch))
}

/// Live NORMAL members' (node id, admin address), as `admin_addr` sees
/// them; refuses when a member is down (its backup would be missing).
async fn live_members(admin_addr: &str) -> Result<Vec<(String, String)>, BoxError> {
    let st = admin(admin_addr)
        .await?
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    let mut out = Vec::new();
    let mut down = Vec::new();
    for m in st.members {
        let state = pb::NodeState::try_from(m.state).unwrap_or(pb::NodeState::Unspecified);
        if state == pb::NodeState::Left {
            continue;
        }
        if !m.alive {
            down.push(m.node_id);
        } else if state == pb::NodeState::Normal {
            out.push((m.node_id, m.internode_addr));
        }
    }
    if !down.is_empty() {
        return Err(format!(
            "nodes {} are down: a cluster backup needs every node",
            down.join(", ")
        )
        .into());
    }
    if out.is_empty() {
        return Err("no NORMAL node in the cluster".into());
    }
    Ok(out)
}

pub async fn snapshot(admin_addr: &str, cmd: SnapshotCmd) -> Result<ExitCode, BoxError> {
    let mut a = admin(admin_addr).await?;
    match cmd {
        SnapshotCmd::Create { id } => {
            let s = a
                .snapshot(pb::SnapshotRequest {
                    id: id.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .snapshot
                .unwrap_or_default();
            println!(
                "snapshot {} taken: {} files, {} bytes, {}",
                s.id, s.files, s.bytes, s.path
            );
        }
        SnapshotCmd::List => {
            let l = a
                .list_snapshots(pb::ListSnapshotsRequest {})
                .await?
                .into_inner();
            for s in l.snapshots {
                println!(
                    "{}\t{}\t{} files\t{} bytes\t{}",
                    s.id,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(s.created_unix_ms)
                    ),
                    s.files,
                    s.bytes,
                    s.path
                );
            }
        }
        SnapshotCmd::Delete { id } => {
            let d = a
                .delete_snapshot(pb::DeleteSnapshotRequest { id: id.clone() })
                .await?
                .into_inner();
            if !d.deleted {
                eprintln!("no snapshot {id}");
                return Ok(ExitCode::FAILURE);
            }
            println!("snapshot {id} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn backup(admin_addr: &str, args: BackupArgs) -> Result<ExitCode, BoxError> {
    match args.cmd {
        Some(BackupCmd::Verify { url, backup }) => verify_cmd(&url, &backup).await,
        Some(BackupCmd::List { url }) => {
            let t = Target::open(&url, [])?;
            for b in prune::list_backups(&t).await? {
                let nodes: Vec<&str> = b.nodes.iter().map(|m| m.node_id.as_str()).collect();
                println!(
                    "{}\t{}\t{} nodes ({})\t{} files\t{} bytes\t{} uploaded",
                    b.id,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(b.started_unix_ms())
                    ),
                    nodes.len(),
                    nodes.join(","),
                    b.files(),
                    b.bytes(),
                    b.uploaded_bytes()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BackupCmd::Prune {
            url,
            keep_last,
            max_age,
            min_object_age,
            dry_run,
        }) => {
            let t = Target::open(&url, [])?;
            let r = Retention {
                keep_last,
                max_age,
                min_object_age,
                dry_run,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let rep = prune::prune(&t, &r, now).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!(
                "kept {} backups, {verb} {} ({}); {verb} {} objects, {} bytes",
                rep.kept.len(),
                rep.deleted.len(),
                rep.deleted.join(", "),
                rep.objects_deleted,
                rep.bytes_freed
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let Some(url) = args.run.url else {
                return Err("--url is required (or a subcommand: verify, list, prune)".into());
            };
            cluster_backup(
                admin_addr,
                &url,
                args.run.id,
                args.run.rate,
                !args.run.no_wait,
            )
            .await
        }
    }
}

async fn verify_cmd(url: &str, backup: &str) -> Result<ExitCode, BoxError> {
    let t = Target::open(url, [])?;
    match verify::verify(&t, backup).await {
        Ok(r) => {
            println!(
                "backup {} verifies: {} nodes ({}), {} objects, {} bytes",
                r.backup_id,
                r.nodes.len(),
                r.nodes.join(", "),
                r.files,
                r.bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(BackupError::Unverified {
            backup_id,
            problems,
        }) => {
            eprintln!("backup {backup_id} does NOT verify:");
            for p in problems {
                eprintln!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn backup_line(node: &str, s: &pb::BackupStatus) -> String {
    let mut line = format!(
        "{node}: {} files {}/{} ({} uploaded), {} of {} bytes uploaded, {} skipped",
        s.phase,
        s.files_done,
        s.files_total,
        s.files_uploaded,
        s.bytes_uploaded,
        s.bytes_total,
        s.bytes_skipped
    );
    if !s.error.is_empty() {
        line.push_str(&format!(" — {}", s.error));
    }
    line
}

async fn cluster_backup(
    admin_addr: &str,
    url: &str,
    id: Option<String>,
    rate: Option<u64>,
    wait: bool,
) -> Result<ExitCode, BoxError> {
    let id = id.unwrap_or_else(|| {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-")
    });
    let members = live_members(admin_addr).await?;
    let mut clients = Vec::new();
    for (node, addr) in &members {
        let mut a = admin(addr).await?;
        let r = a
            .backup(pb::BackupRequest {
                url: url.to_string(),
                backup_id: id.clone(),
                rate_limit_bytes_per_sec: rate.unwrap_or(0),
                options: Default::default(),
            })
            .await
            .map_err(|e| format!("{node}: {}", e.message()))?
            .into_inner();
        if !r.started {
            return Err(format!("{node} is already running backup {}", r.backup_id).into());
        }
        clients.push((node.clone(), a));
    }
    println!("backup {id} started on {} nodes", members.len());
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let mut done = vec![None; clients.len()];
    while done.iter().any(Option::is_none) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, (node, a)) in clients.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let s = a
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| format!("{node}: {}", e.message()))?
                .into_inner()
                .backup
                .unwrap_or_default();
            if s.backup_id != id {
                return Err(format!("{node} reports backup {:?}, not {id}", s.backup_id).into());
            }
            println!("{}", backup_line(node, &s));
            if !s.running {
                done[i] = Some(s);
            }
        }
    }
    let done: Vec<pb::BackupStatus> = done.into_iter().flatten().collect();
    let failed: Vec<String> = clients
        .iter()
        .zip(&done)
        .filter(|(_, s)| s.phase != "done")
        .map(|((n, _), s)| format!("{n}: {}", s.error))
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "backup {id} FAILED on {} nodes (run it again with --id {id} to resume):",
            failed.len()
        );
        for f in failed {
            eprintln!("  {f}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let (total, up): (u64, u64) = done.iter().fold((0, 0), |(t, u), s| {
        (t + s.bytes_total, u + s.bytes_uploaded)
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backup {id} done: {} nodes, {total} bytes ({up} uploaded, {} already stored) in {secs:.1} s",
        done.len(),
        total - up.min(total)
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints restore progress every few seconds.
struct Printer {
    total: AtomicU64,
    downloaded: AtomicU64,
    keys: AtomicU64,
    last: std::sync::Mutex<Instant>,
}

impl Printer {
    fn tick(&self, force: bool) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if force || last.elapsed() >= Duration::from_secs(2) {
            *last = Instant::now();
            println!(
                "restore: {} of {} bytes downloaded, {} keys loaded",
                self.downloaded.load(Ordering::Relaxed),
                self.total.load(Ordering::Relaxed),
                self.keys.load(Ordering::Relaxed)
            );
        }
    }
}

impl Progress for Printer {
    fn phase(&self, phase: &'static str) {
        println!("restore: {phase}");
    }
    fn download_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }
    fn downloaded(&self, bytes: u64) {
        self.downloaded.fetch_add(bytes, Ordering::Relaxed);
        self.tick(false);
    }
    fn loaded(&self, keys: u64) {
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.tick(false);
    }
}

pub async fn restore_cmd(admin_addr: &str, args: RestoreArgs) -> Result<ExitCode, BoxError> {
    let target = Target::open(&args.from, [])?;
    let members = live_members(admin_addr).await?;
    let addrs: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
    let sink = Arc::new(AdminSink::new(&addrs)?);
    let scratch = args.scratch.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringkv-restore-{}", std::process::id()))
    });
    let printer = Arc::new(Printer {
        total: AtomicU64::new(0),
        downloaded: AtomicU64::new(0),
        keys: AtomicU64::new(0),
        last: std::sync::Mutex::new(Instant::now()),
    });
    let started = Instant::now();
    match restore(
        &target,
        &args.backup,
        sink,
        &RestoreOptions::new(scratch),
        printer.clone(),
    )
    .await
    {
        Ok(r) => {
            printer.tick(true);
            println!(
                "restore of {} done into {} nodes: {} nodes' backups, {} files, {} bytes, {} records read, {} keys loaded ({} replica writes, {} undecodable skipped) in {:.1} s",
                r.backup_id,
                members.len(),
                r.nodes.len(),
                r.files,
                r.bytes_downloaded,
                r.records_read,
                r.keys_loaded,
                r.replica_writes,
                r.undecodable,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(BackupError::Unverified {
            backup_id,
            problems,
        }) => {
            eprintln!("backup {backup_id} does NOT verify; nothing was restored:");
            for p in problems {
                eprintln!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let keys = printer.keys.load(Ordering::Relaxed);
            if keys > 0 {
                eprintln!(
                    "restore FAILED after loading {keys} keys: the cluster holds part of backup {} (running the restore again is safe: loading merges idempotently)",
                    args.backup
                );
            } else {
                eprintln!("restore FAILED before loading anything");
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("8kb").unwrap(), 8 << 10);
        for bad in ["", "0", "x", "5T", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
