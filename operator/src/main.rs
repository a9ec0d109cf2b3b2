//! `ringkv-operator`: reconciles KVClusters. Runs in the cluster (see the Helm
//! chart) with leader election, Prometheus `/metrics` and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use ringkv_operator::admin::AdminPool;
use ringkv_operator::controller::{self, Context, Settings};
use ringkv_operator::leader::{self, Elector, LeaseConfig};
use ringkv_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "ringkv-operator",
    version,
    about = "Kubernetes operator for ringkv KVClusters"
)]
struct Args {
    /// Only watch these namespaces, comma-separated (default: all namespaces).
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Node image for KVClusters that do not set spec.image.
    #[arg(long, env = "RINGKV_NODE_IMAGE")]
    default_image: Option<String>,
    /// Address of the /metrics, /healthz and /readyz HTTP server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so several replicas can run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "ringkv-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a standby waits, from the last lease change it saw, before
    /// taking over. The leader stops reconciling after failing to renew for
    /// two thirds of it (client-go's 15 s / 10 s / 2 s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// DNS domain of the Kubernetes cluster (node addresses, seeds).
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Timeout of every node Admin call.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    admin_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = ringkv_operator::telemetry::init(args.log_json)?;
    let code = match run(args).await {
        Ok(()) => 0,
        Err(e) => {
            error!(error = %e, "operator stopped");
            1
        }
    };
    telemetry.shutdown();
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signal_stop(stop_tx.clone()));

    let server = tokio::spawn(serve_http(
        args.metrics_addr,
        metrics.clone(),
        stop_rx.clone(),
    ));

    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("ringkv-operator-{}", std::process::id()))
    });
    let lease_cfg = LeaseConfig::new(
        &args.lease_name,
        &args.lease_namespace,
        &identity,
        args.lease_duration,
    );
    lease_cfg.validate()?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_cfg.namespace);
    let mut elector = Elector::new(lease_cfg.clone());
    // Set when the lease is lost: the controller is dropped at once (in-flight
    // reconciles are cancelled, not finished) and the process exits.
    let lost = Arc::new(tokio::sync::Notify::new());
    let lost_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if args.leader_election {
        if !wait_for_leadership(&leases, &mut elector, stop_rx.clone()).await {
            info!("stopped before becoming leader");
            server.await??;
            return Ok(());
        }
        metrics.leader.set(1);
        tokio::spawn(keep_leadership(
            leases.clone(),
            elector,
            stop_rx.clone(),
            lost.clone(),
            lost_flag.clone(),
        ));
    } else {
        metrics.leader.set(1);
    }

    let settings = Settings {
        default_image: args
            .default_image
            .unwrap_or_else(|| Settings::default().default_image),
        cluster_domain: args.cluster_domain.clone(),
        ..Settings::default()
    };
    info!(image = %settings.default_image, namespaces = ?args.namespaces, "starting controller");
    let ctx = Arc::new(Context::new(
        client,
        AdminPool::in_cluster(args.admin_timeout, args.cluster_domain.clone()),
        settings,
        metrics.clone(),
    ));
    let rx = stop_rx.clone();
    // One controller per watched namespace (each with namespaced watches, so
    // namespaced RBAC suffices), or one for all namespaces.
    let namespaces: Vec<Option<String>> = {
        let list: Vec<String> = args
            .namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if list.is_empty() {
            vec![None]
        } else {
            list.into_iter().map(Some).collect()
        }
    };
    let running = futures::future::join_all(namespaces.into_iter().map(|ns| {
        let mut rx = rx.clone();
        controller::run(ctx.clone(), ns, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    }));
    let running = async move {
        running.await;
        drop(rx);
    };
    tokio::select! {
        () = running => info!("controller stopped"),
        () = lost.notified() => error!("lost the leader lease: stopped reconciling"),
    }
    metrics.leader.set(0);
    let was_lost = lost_flag.load(std::sync::atomic::Ordering::SeqCst);
    if args.leader_election
        && !was_lost
        && let Err(e) = leader::release(&leases, &lease_cfg).await
    {
        warn!(error = %e, "could not release the lease");
    }
    let _ = stop_tx.send(true);
    server.await??;
    if was_lost {
        anyhow::bail!("lost the leader lease");
    }
    Ok(())
}

/// Milliseconds of the process's monotonic clock (leader election timing).
fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

async fn signal_stop(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "no SIGTERM handler");
                    let _ = ctrl_c.await;
                    let _ = stop.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
    let _ = stop.send(true);
}

async fn wait_for_leadership(
    leases: &Api<Lease>,
    elector: &mut Elector,
    mut stop: watch::Receiver<bool>,
) -> bool {
    loop {
        match elector
            .round(leases, mono_ms(), k8s_openapi::jiff::Timestamp::now())
            .await
        {
            Ok(true) => {
                info!(identity = %elector.cfg.identity, "became leader");
                return true;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election round failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.cfg.retry_period) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews the lease every retry period. Another holder, or no successful
/// renewal within the renew deadline (shorter than the lease duration a
/// standby waits), ends leadership: reconciling stops before anyone else may
/// start.
async fn keep_leadership(
    leases: Api<Lease>,
    mut elector: Elector,
    mut stop: watch::Receiver<bool>,
    lost: Arc<tokio::sync::Notify>,
    lost_flag: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.cfg.retry_period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let retry = elector.cfg.retry_period;
        let round = elector.round(&leases, mono_ms(), k8s_openapi::jiff::Timestamp::now());
        // A round may not outlast the deadline itself.
        match tokio::time::timeout(retry, round).await {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => {
                error!("another replica took the lease");
                break;
            }
            Ok(Err(e)) => warn!(error = %e, "renewing the lease failed"),
            Err(_) => warn!("renewing the lease timed out"),
        }
        if elector.must_stop(mono_ms()) {
            error!("could not renew the lease within the renew deadline");
            break;
        }
    }
    lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    lost.notify_one();
}

async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}
