//! Wiring: opens storage, binds every listener, joins the membership, picks
//! tokens on first start, and serves the four APIs until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admin::AdminService;
use crate::api::grpc::KeyValueService;
use crate::api::internode::InternodeService;
use crate::api::{ApiState, Gate};
use crate::config::Config;
use crate::coordinator::{Coordinator, Settings};
use crate::membership::{GossipOptions, Membership, MembershipError, NodeState};
use crate::metrics::Metrics;
use crate::repair::{Cleaner, Moves, Remover, Repairer};
use crate::replica::handoff::{Handoff, HandoffSettings};
use crate::replica::{HintStore, Replica, StorageError, Store};
use crate::ring::{
    Ring, RingNode, SharedTopology, SplitMix64, TokenFileError, Topology, allocate_tokens,
    load_or_create_tokens, load_tokens,
};
use crate::transport::{FaultInjector, InternodeClient};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} belongs to node {found:?}, not {configured:?}; point data_dir elsewhere or fix node_id"
    )]
    WrongNode {
        path: std::path::PathBuf,
        found: String,
        configured: String,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Tls(#[from] crate::security::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::security::AuthError),
}

/// Test and embedding hooks that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Shared fault injector for the internode transport (tests).
    pub faults: Option<Arc<FaultInjector>>,
}

/// The addresses a started node actually listens on.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BoundAddrs {
    pub gossip: SocketAddr,
    pub internode: SocketAddr,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// A running node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub config: Arc<Config>,
    pub addrs: BoundAddrs,
    pub faults: Arc<FaultInjector>,
    pub coordinator: Arc<Coordinator>,
    pub replica: Arc<Replica>,
    pub membership: Membership,
    pub metrics: Arc<Metrics>,
    pub repair: Arc<Repairer>,
    /// TLS material (reloaded from disk), when `tls_mode` is not disabled.
    pub tls: Option<Arc<crate::security::Tls>>,
    state: ApiState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

/// The data directory remembers whose it is, so a volume mounted on the wrong
/// pod is refused instead of silently served under another identity.
fn claim_data_dir(dir: &Path, node_id: &str) -> Result<(), NodeError> {
    let io = |source| NodeError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == node_id => Ok(()),
        Ok(found) => Err(NodeError::WrongNode {
            path: dir.to_path_buf(),
            found: found.trim().to_string(),
            configured: node_id.into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{node_id}\n")).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

use crate::replica::now_ms;

impl RunningNode {
    pub async fn start(config: Config, opts: NodeOptions) -> Result<RunningNode, NodeError> {
        config.validate()?;
        let config = Arc::new(config);
        let started = Instant::now();
        claim_data_dir(&config.data_dir, &config.node_id)?;
        // Certificates and tokens are read before anything listens: a
        // broken file stops the start with the file's name.
        let tls = match (
            config.tls_mode,
            &config.tls_cert,
            &config.tls_key,
            &config.tls_ca,
        ) {
            (crate::security::TlsMode::Disabled, ..) => None,
            (mode, Some(cert), Some(key), Some(ca)) => {
                Some(crate::security::Tls::load(mode, cert, key, ca)?)
            }
            // `validate` refuses a TLS mode without its files.
            _ => None,
        };
        let tokens = match &config.auth_tokens_file {
            Some(p) => Some(crate::security::Tokens::load(p)?),
            None => None,
        };
        let store = {
            let dir = config.data_dir.join("engine");
            let (sync, grace) = (config.sync, config.tombstone_grace);
            tokio::task::spawn_blocking(move || Store::open(&dir, sync, grace))
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??
        };

        let hints = {
            let dir = config.data_dir.join("hints");
            let sync = config.sync;
            tokio::task::spawn_blocking(move || HintStore::open(&dir, sync))
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??
        };

        let internode_l = bind("listen_internode", config.listen_internode).await?;
        let grpc_l = bind("listen_grpc", config.listen_grpc).await?;
        let http_l = bind("listen_http", config.listen_http).await?;
        let local = |s: &dyn Fn() -> std::io::Result<SocketAddr>, what, addr| {
            s().map_err(|source| NodeError::Bind { what, addr, source })
        };
        let internode_a = local(
            &|| internode_l.local_addr(),
            "listen_internode",
            config.listen_internode,
        )?;
        let grpc_a = local(&|| grpc_l.local_addr(), "listen_grpc", config.listen_grpc)?;
        let http_a = local(&|| http_l.local_addr(), "listen_http", config.listen_http)?;
        let adv = |a: SocketAddr| format!("{}:{}", config.advertise_host, a.port());

        // Tokens persisted by an earlier run mean this node is already a
        // member; a move it was in the middle of resumes.
        let persisted = load_tokens(&config.data_dir)?;
        let moving = crate::repair::moves::load_state(&config.data_dir).map_err(|source| {
            NodeError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let initial = match (&persisted, moving) {
            (None, _) => NodeState::Joining,
            (Some(_), Some(s)) => s,
            (Some(_), None) => NodeState::Normal,
        };
        // Never below an earlier run's, whatever the clock says now.
        let generation = crate::membership::generation::next_generation(&config.data_dir, now_ms())
            .map_err(|source| NodeError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        let info = pb::MemberInfo {
            node_id: config.node_id.clone(),
            zone: config.zone.clone(),
            state: initial.to_proto() as i32,
            generation,
            tokens: persisted.clone().unwrap_or_default(),
            internode_addr: adv(internode_a),
            client_grpc_addr: adv(grpc_a),
            http_addr: adv(http_a),
            gossip_addr: String::new(),
            heartbeat: 0,
        };
        let faults = opts.faults.unwrap_or_default();
        let membership = Membership::start(
            info,
            GossipOptions {
                listen: config.listen_gossip,
                advertise_host: config.advertise_host.clone(),
                seeds: config.seeds.clone(),
                interval: config.gossip_interval,
                phi_threshold: config.phi_threshold,
                faults: Some(faults.clone()),
                secret: match &config.gossip_secret_file {
                    Some(p) => Some(
                        crate::membership::GossipSecret::load(p)
                            .map_err(|e| NodeError::Membership(MembershipError::Secret(e)))?,
                    ),
                    None => None,
                },
            },
        )
        .await?;
        let addrs = BoundAddrs {
            gossip: membership.local_addr(),
            internode: internode_a,
            grpc: grpc_a,
            http: http_a,
        };

        // What to do once serving: stream ranges in (a new node), repair
        // (a node whose data directory was lost), or nothing.
        let mut after_start = match initial {
            NodeState::Joining if persisted.is_some() => AfterStart::Join,
            // Restoring lost data when it stopped: resume.
            NodeState::Repairing => AfterStart::Repair,
            _ => AfterStart::Nothing,
        };
        let mut start = crate::replica::writer::Start::Existing;
        if persisted.is_none() {
            let (tokens, origin) = choose_tokens(&config, &membership).await;
            let state = match origin {
                TokenOrigin::FirstNode => {
                    start = crate::replica::writer::Start::New;
                    NodeState::Normal
                }
                TokenOrigin::Adopted => {
                    start = crate::replica::writer::Start::DataLost;
                    after_start = AfterStart::Repair;
                    NodeState::Repairing
                }
                TokenOrigin::Allocated => {
                    start = crate::replica::writer::Start::New;
                    after_start = AfterStart::Join;
                    NodeState::Joining
                }
            };
            // The move is recorded before the tokens: a crash in between
            // must not restart this node as a NORMAL member without its data.
            if state != NodeState::Normal {
                crate::repair::moves::save_state(&config.data_dir, Some(state)).map_err(
                    |source| NodeError::DataDir {
                        path: config.data_dir.clone(),
                        source,
                    },
                )?;
            }
            let (tokens, _) = load_or_create_tokens(&config.data_dir, || tokens)?;
            membership
                .update_local(|l| {
                    l.tokens = tokens.clone();
                    l.state = state.to_proto() as i32;
                })
                .await;
            tracing::info!(
                tokens = tokens.len(),
                ?origin,
                ?state,
                "tokens chosen and persisted"
            );
        }

        let metrics = Arc::new(Metrics::new());
        // The internode server accepts twice this per message.
        let frame_limit = config.max_value_bytes + (256 << 10);
        let client = InternodeClient::new(
            &config.node_id,
            faults.clone(),
            config.request_timeout,
            frame_limit,
        )
        .with_metrics(metrics.clone())
        .with_tls(tls.clone());
        let writer =
            crate::replica::writer::writer_id(&config.data_dir, &config.node_id, start, now_ms())
                .map_err(|source| NodeError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        if writer != config.node_id {
            tracing::info!(%writer, "the last stop was not clean: minting versions under a new writer id");
        }
        // LWW timestamps never go back across restarts (`version::hlc`).
        let hlc = match config.conflict_mode {
            crate::config::ConflictMode::Lww => {
                let path = config.data_dir.join(HLC_FILE);
                crate::version::Hlc::persistent(&path, Arc::new(ringkv_engine::SystemClock))
                    .map_err(|source| NodeError::DataDir { path, source })?
            }
            crate::config::ConflictMode::Causal => crate::version::Hlc::new(),
        };
        let replica = Arc::new(
            Replica::new(&config.node_id, &writer, store, hints, metrics.clone())
                .with_clock(hlc, config.max_clock_skew),
        );
        let topology = Arc::new(SharedTopology::default());
        topology.set(Topology::with_replication(
            membership.view(),
            config.n as usize,
        ));
        let coordinator = Arc::new(Coordinator::new(
            Settings::from_config(&config),
            replica.clone(),
            topology.clone(),
            client.clone(),
        ));
        let repair = Repairer::new(
            replica.clone(),
            topology.clone(),
            client.clone(),
            config.n,
            config.repair_rate,
        );
        let gate = Arc::new(Gate::default());
        if initial == NodeState::Left {
            gate.close();
        }
        // Time for a state change to reach every node by gossip.
        let settle = (config.gossip_interval * 5).max(Duration::from_millis(500))
            + config.request_timeout.min(Duration::from_secs(2));
        let moves = Moves::new(
            repair.clone(),
            membership.clone(),
            config.data_dir.clone(),
            settle,
            {
                let gate = gate.clone();
                Box::new(move || gate.close())
            },
        );

        let cleanup = Cleaner::new(repair.clone(), config.repair_rate);
        let remover = Remover::new(
            repair.clone(),
            membership.clone(),
            config.data_dir.clone(),
            settle,
            {
                let gate = gate.clone();
                Box::new(move || gate.close())
            },
        );

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(remover.clone().keep(
            config.gossip_interval.min(Duration::from_secs(1)),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(follow_membership(
            membership.clone(),
            topology.clone(),
            client.clone(),
            config.n as usize,
            metrics.clone(),
            stop_rx.clone(),
        )));
        let handoff = Handoff {
            replica: replica.clone(),
            topology: topology.clone(),
            client: client.clone(),
            settings: HandoffSettings {
                max_hint_window: config.max_hint_window,
                rate: config.hint_delivery_rate,
                tick: config.gossip_interval.min(Duration::from_secs(1)),
                max_batch_bytes: config.max_value_bytes,
            },
        };
        tasks.push(tokio::spawn(handoff.run(stop_rx.clone())));
        if let Some(every) = config.repair_interval {
            tasks.push(tokio::spawn(
                repair.clone().schedule(every, stop_rx.clone()),
            ));
        }

        let backups = crate::backup::Backups::new(
            config.clone(),
            replica.clone(),
            membership.clone(),
            topology.clone(),
            client.clone(),
            metrics.clone(),
        );
        let state = ApiState {
            backups,
            config: config.clone(),
            coord: coordinator.clone(),
            replica: replica.clone(),
            membership: membership.clone(),
            metrics: metrics.clone(),
            gate,
            started,
            repair: repair.clone(),
            moves: moves.clone(),
            cleanup,
            remover,
        };
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        if let Some(tls) = &tls {
            tasks.push(tokio::spawn(
                tls.clone()
                    .watch(crate::security::RELOAD_INTERVAL, stop_rx.clone()),
            ));
        }
        if let Some(t) = &tokens {
            tasks.push(tokio::spawn(
                t.clone()
                    .watch(crate::security::RELOAD_INTERVAL, stop_rx.clone()),
            ));
        }
        let guard = |api: &'static str| crate::security::Guard {
            tokens: tokens.clone(),
            mtls: tls.is_some(),
            api,
            metrics: metrics.clone(),
        };
        use crate::security::Listener;
        let limits = crate::security::HttpLimits::default();

        // Internode and Admin: mutual TLS when TLS is on (the handshake
        // refuses a client without a certificate of the cluster CA).
        // No per-call timeout here: Admin calls such as Repair and the
        // FetchRange stream legitimately run for minutes.
        let internode = tonic::transport::Server::builder()
            .trace_fn(crate::telemetry::internode_span(&config.node_id))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .layer(crate::security::auth::GrpcAuthLayer(guard("admin")))
            .add_service(
                pb::internode_server::InternodeServer::new(InternodeService {
                    state: state.clone(),
                })
                .max_decoding_message_size(frame_limit * 2)
                .max_encoding_message_size(frame_limit * 2),
            )
            .add_service(pb::admin_server::AdminServer::new(AdminService {
                state: state.clone(),
            }))
            .serve_with_incoming_shutdown(
                crate::security::listen::incoming(
                    internode_l,
                    tls.clone(),
                    Listener::Internode,
                    metrics.clone(),
                ),
                stopped(stop_rx.clone()),
            );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = internode.await {
                tracing::error!(error = %e, "internode server failed");
            }
        }));

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| NodeError::Reflection(e.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| NodeError::Reflection(e.to_string()))?;
        // A client call that has not finished within this (e.g. a stream
        // whose body never arrives) is cancelled, releasing what it pins.
        let client_call_limit = (config.request_timeout * 4).max(CLIENT_CALL_LIMIT);
        let grpc = tonic::transport::Server::builder()
            .trace_fn(crate::telemetry::request_span(&config.node_id))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .timeout(client_call_limit)
            .layer(crate::security::auth::GrpcAuthLayer(guard("grpc")))
            .add_service(
                pb::key_value_server::KeyValueServer::new(KeyValueService {
                    state: state.clone(),
                })
                .max_decoding_message_size(frame_limit)
                .max_encoding_message_size(frame_limit * 4),
            )
            .add_service(reflection)
            .add_service(reflection_alpha)
            .serve_with_incoming_shutdown(
                crate::security::listen::incoming(
                    grpc_l,
                    tls.clone(),
                    Listener::ClientGrpc,
                    metrics.clone(),
                ),
                stopped(stop_rx.clone()),
            );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc.await {
                tracing::error!(error = %e, "client gRPC server failed");
            }
        }));

        let router = crate::api::http::router(state.clone())
            .layer(axum::middleware::from_fn_with_state(
                guard("http"),
                crate::security::auth::http_auth,
            ))
            .layer(axum::middleware::from_fn_with_state(
                std::sync::Arc::<str>::from(config.node_id.as_str()),
                crate::telemetry::http_span,
            ));
        let http = crate::security::listen::serve_http(
            crate::security::listen::incoming(http_l, tls.clone(), Listener::Http, metrics.clone()),
            router,
            limits,
            stopped(stop_rx),
            Duration::from_secs(5),
        );
        tasks.push(tokio::spawn(http));

        match after_start {
            AfterStart::Join => {
                tasks.push(tokio::spawn(moves.clone().join()));
            }
            AfterStart::Repair => {
                // The data directory was lost: get this node's ranges back
                // from the other replicas, serving no reads until done.
                tasks.push(tokio::spawn(crate::repair::restore::run(
                    repair.clone(),
                    membership.clone(),
                    config.data_dir.clone(),
                    settle,
                )));
            }
            AfterStart::Nothing => {}
        }

        write_endpoints(&config, &addrs);
        tracing::info!(node = %config.node_id, http = %addrs.http, grpc = %addrs.grpc, internode = %addrs.internode, gossip = %addrs.gossip, "node started");
        Ok(RunningNode {
            config,
            addrs,
            faults,
            coordinator,
            replica,
            membership,
            metrics,
            repair,
            tls,
            state,
            stop,
            tasks,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Admin status as this node would answer it.
    pub fn status(&self) -> pb::StatusResponse {
        crate::api::admin::status(&self.state)
    }

    /// Stops accepting, lets in-flight requests finish, closes storage.
    pub async fn shutdown(self) {
        self.state.gate.drain(Duration::from_secs(5)).await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            // Servers finish in-flight calls; don't wait forever on a stuck client.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // A node that has left keeps gossiping a few rounds so its LEFT state
        // reaches the others: stopped right after decommission, it would stay
        // LEAVING (down, still owning ranges) in their rings.
        if self.membership.local().state == NodeState::Left.to_proto() as i32 {
            let linger = (self.config.gossip_interval * 5).min(Duration::from_secs(10));
            tokio::time::sleep(linger).await;
        }
        self.membership.shutdown();
        let stored = self.replica.store().close().await;
        if let Err(e) = &stored {
            tracing::warn!(error = %e, "closing storage");
        }
        let hints_closed = self.replica.hints().close().await;
        if let Err(e) = &hints_closed {
            tracing::warn!(error = %e, "closing hints");
        }
        // Everything this run minted is durable now (or the stop is unclean).
        if stored.is_ok()
            && hints_closed.is_ok()
            && let Err(e) = crate::replica::writer::mark_clean(&self.config.data_dir)
        {
            tracing::warn!(error = %e, "recording a clean shutdown");
        }
        let _ = std::fs::remove_file(self.config.data_dir.join(ENDPOINTS_FILE));
        tracing::info!(node = %self.config.node_id, "node stopped");
    }
}

/// Where a node publishes its bound addresses (for `ringkv local` and tests).
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// The persisted ceiling of the hybrid logical clock (LWW mode).
const HLC_FILE: &str = "hlc_ceiling";

fn write_endpoints(config: &Config, addrs: &BoundAddrs) {
    let body = serde_json::json!({
        "node_id": config.node_id,
        "http": addrs.http.to_string(),
        "grpc": addrs.grpc.to_string(),
        "internode": addrs.internode.to_string(),
        "gossip": addrs.gossip.to_string(),
        "pid": std::process::id(),
    });
    let tmp = config.data_dir.join(format!("{ENDPOINTS_FILE}.tmp"));
    if std::fs::write(&tmp, body.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, config.data_dir.join(ENDPOINTS_FILE));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStart {
    Nothing,
    Join,
    Repair,
}

/// Where a first start's tokens came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenOrigin {
    /// No ring to join: this node starts one.
    FirstNode,
    /// The ring already knew this node id (its data directory was lost):
    /// it takes its old tokens back.
    Adopted,
    /// Placed against the ring this node is joining.
    Allocated,
}

/// First start: learn the ring from the seeds (if any answer in time), then
/// place tokens against it.
async fn choose_tokens(config: &Config, membership: &Membership) -> (Vec<u64>, TokenOrigin) {
    if !config.seeds.is_empty() {
        let wait =
            (config.gossip_interval * 5).clamp(Duration::from_secs(2), Duration::from_secs(10));
        if membership.wait_for_peer(wait).await {
            // More rounds so the states relayed by the seed arrive too.
            tokio::time::sleep(config.gossip_interval.min(Duration::from_secs(1)) * 2).await;
        } else {
            tracing::info!("no seed answered; choosing tokens as the first node");
        }
    }
    // A previous incarnation removed by RemoveNode (or being removed) is
    // not taken back: its ranges went (or go) to other nodes; join afresh.
    let removed = |old: &crate::membership::Member| {
        membership
            .removals()
            .get(&old.node_id)
            .is_some_and(|r| r.applies_to(old.generation, &old.tokens))
    };
    if let Some(old) = membership.previous_self()
        && !old.tokens.is_empty()
        && old.state != NodeState::Left
        && !removed(&old)
    {
        return (old.tokens.as_ref().clone(), TokenOrigin::Adopted);
    }
    let view = membership.view();
    let ring = Ring::new(
        view.members
            .iter()
            // Joining nodes count too, so nodes joining at once avoid
            // each other's tokens (as far as gossip has told them).
            .filter(|m| {
                m.node_id != config.node_id && m.state != NodeState::Left && !m.tokens.is_empty()
            })
            .map(|m| RingNode {
                id: m.node_id.clone(),
                zone: m.zone.clone(),
                tokens: m.tokens.as_ref().clone(),
            })
            .collect(),
    );
    let origin = if ring.is_empty() {
        TokenOrigin::FirstNode
    } else {
        TokenOrigin::Allocated
    };
    let tokens = allocate_tokens(
        &ring,
        &config.zone,
        config.vnodes,
        &mut SplitMix64::from_entropy(),
    );
    (tokens, origin)
}

/// Rebuilds the shared topology whenever the membership view changes.
async fn follow_membership(
    membership: Membership,
    topology: Arc<SharedTopology>,
    client: InternodeClient,
    n: usize,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = membership.subscribe();
    let mut seen: std::collections::HashMap<String, (bool, u64)> = Default::default();
    loop {
        let view = rx.borrow_and_update().clone();
        // A peer gossip hears from again, or that restarted, starts with a
        // clean circuit breaker: its old failures say nothing about it now.
        for m in &view.members {
            let now = (m.alive, m.generation);
            match seen.insert(m.node_id.clone(), now) {
                Some((was_alive, generation))
                    if m.alive && (!was_alive || generation != m.generation) =>
                {
                    client.forgive(&m.node_id);
                }
                _ => {}
            }
        }
        metrics.members_total.set(view.members.len() as i64);
        metrics
            .members_alive
            .set(view.members.iter().filter(|m| m.alive).count() as i64);
        topology.set(Topology::with_replication(view, n));
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down cleanly.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let node = RunningNode::start(config, NodeOptions::default()).await?;
    wait_for_signal().await;
    tracing::info!("signal received, shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The least time a client gRPC call may take before the server cancels it.
const CLIENT_CALL_LIMIT: Duration = Duration::from_secs(30);
