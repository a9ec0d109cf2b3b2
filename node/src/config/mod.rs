//! The node's one configuration struct, filled (in increasing precedence) from
//! defaults, an optional YAML file, `RINGKV_*` environment variables and flags,
//! then validated. The field names are a contract with the operator
//! (docs/node-config.md): keep them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that could not be read or is invalid. Always names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid `{field}` = {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(
    field: &'static str,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.into(),
        reason: reason.into(),
    }
}

/// How concurrent writes are reconciled, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictMode {
    /// Dotted version vectors; concurrent writes become siblings.
    Causal,
    /// Last write wins on a hybrid logical clock; loses one of two concurrent writes.
    Lww,
}

impl ConflictMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictMode::Causal => "causal",
            ConflictMode::Lww => "lww",
        }
    }
}

/// When a read asks more replicas than its R (Cassandra's
/// `speculative_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeculativeRetry {
    /// After four times the recent mean remote read latency (at least 2 ms):
    /// a replica much slower than usual is worked around at once.
    Adaptive,
    /// After a fixed delay.
    After(Duration),
    /// Only when a replica fails.
    Never,
}

/// Engine WAL sync policy as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Always,
    Periodic(Duration),
    Never,
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub zone: String,
    pub data_dir: PathBuf,
    /// Gossip seeds (`host:port`, UDP).
    pub seeds: Vec<String>,
    pub listen_gossip: SocketAddr,
    pub listen_internode: SocketAddr,
    pub listen_grpc: SocketAddr,
    pub listen_http: SocketAddr,
    pub advertise_host: String,
    pub n: u32,
    pub w: u32,
    pub r: u32,
    pub vnodes: u32,
    pub conflict_mode: ConflictMode,
    /// LWW records whose hybrid clock is further ahead of this node's are refused.
    pub max_clock_skew: Duration,
    pub max_value_bytes: usize,
    pub request_timeout: Duration,
    /// When a read asks replicas beyond the first R.
    pub speculative_retry: SpeculativeRetry,
    /// Reads ask the substitutes holding hints when home replicas are down.
    pub sloppy_reads: bool,
    pub tombstone_grace: Duration,
    pub max_hint_window: Duration,
    /// `None` = off (the operator schedules repair).
    pub repair_interval: Option<Duration>,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// Hints handed off per second (0 = unlimited).
    pub hint_delivery_rate: u64,
    /// Record bytes per second that repair and range streaming may move (0 = unlimited).
    pub repair_rate: u64,
    /// Async worker threads (0 = one per core the process may use).
    pub worker_threads: usize,
    pub sync: SyncMode,
    /// `disabled` | `enabled` | `required` (see `security::tls`).
    pub tls_mode: crate::security::TlsMode,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Bearer tokens with roles; unset = no authentication.
    pub auth_tokens_file: Option<PathBuf>,
    /// File holding the cluster's gossip secret (one key per line; the
    /// first signs, all verify). Unset: gossip is not authenticated.
    pub gossip_secret_file: Option<PathBuf>,
}

/// Every field's name, in the order of docs/node-config.md.
pub const FIELDS: &[&str] = &[
    "node_id",
    "zone",
    "data_dir",
    "seeds",
    "listen_gossip",
    "listen_internode",
    "listen_grpc",
    "listen_http",
    "advertise_host",
    "n",
    "w",
    "r",
    "vnodes",
    "conflict_mode",
    "max_clock_skew",
    "max_value_bytes",
    "request_timeout",
    "speculative_retry",
    "sloppy_reads",
    "tombstone_grace",
    "max_hint_window",
    "repair_interval",
    "gossip_interval",
    "phi_threshold",
    "hint_delivery_rate",
    "repair_rate",
    "worker_threads",
    "sync",
    "tls_mode",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "auth_tokens_file",
    "gossip_secret_file",
];

/// Command-line flags (each also read from `RINGKV_<FIELD>`). Everything is
/// optional here: unset flags fall back to the YAML file, then to defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// YAML configuration file.
    #[arg(long, env = "RINGKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Stable node identity (default: host name).
    #[arg(long, env = "RINGKV_NODE_ID")]
    pub node_id: Option<String>,
    /// Failure domain (default: `default`).
    #[arg(long, env = "RINGKV_ZONE")]
    pub zone: Option<String>,
    /// Data directory (default: ./ringkv-data/<node_id>).
    #[arg(long, env = "RINGKV_DATA_DIR")]
    pub data_dir: Option<String>,
    /// Comma-separated gossip seeds, host:port.
    #[arg(long, env = "RINGKV_SEEDS")]
    pub seeds: Option<String>,
    #[arg(long, env = "RINGKV_LISTEN_GOSSIP")]
    pub listen_gossip: Option<String>,
    #[arg(long, env = "RINGKV_LISTEN_INTERNODE")]
    pub listen_internode: Option<String>,
    #[arg(long, env = "RINGKV_LISTEN_GRPC")]
    pub listen_grpc: Option<String>,
    #[arg(long, env = "RINGKV_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    #[arg(long, env = "RINGKV_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Replication factor.
    #[arg(long = "n", env = "RINGKV_N")]
    pub n: Option<String>,
    /// Default write quorum.
    #[arg(long = "w", env = "RINGKV_W")]
    pub w: Option<String>,
    /// Default read quorum.
    #[arg(long = "r", env = "RINGKV_R")]
    pub r: Option<String>,
    #[arg(long, env = "RINGKV_VNODES")]
    pub vnodes: Option<String>,
    /// `causal` or `lww`.
    #[arg(long, env = "RINGKV_CONFLICT_MODE")]
    pub conflict_mode: Option<String>,
    /// LWW: refuse records whose clock is further ahead than this.
    #[arg(long, env = "RINGKV_MAX_CLOCK_SKEW")]
    pub max_clock_skew: Option<String>,
    #[arg(long, env = "RINGKV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<String>,
    #[arg(long, env = "RINGKV_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// `adaptive`, a duration, or `never`.
    #[arg(long, env = "RINGKV_SPECULATIVE_RETRY")]
    pub speculative_retry: Option<String>,
    /// `true` or `false`.
    #[arg(long, env = "RINGKV_SLOPPY_READS")]
    pub sloppy_reads: Option<String>,
    #[arg(long, env = "RINGKV_TOMBSTONE_GRACE")]
    pub tombstone_grace: Option<String>,
    #[arg(long, env = "RINGKV_MAX_HINT_WINDOW")]
    pub max_hint_window: Option<String>,
    #[arg(long, env = "RINGKV_REPAIR_INTERVAL")]
    pub repair_interval: Option<String>,
    #[arg(long, env = "RINGKV_GOSSIP_INTERVAL")]
    pub gossip_interval: Option<String>,
    #[arg(long, env = "RINGKV_PHI_THRESHOLD")]
    pub phi_threshold: Option<String>,
    /// Hints handed off per second (0 = unlimited).
    #[arg(long, env = "RINGKV_HINT_DELIVERY_RATE")]
    pub hint_delivery_rate: Option<String>,
    /// Bytes per second repair and range streaming may move (0 = unlimited).
    #[arg(long, env = "RINGKV_REPAIR_RATE")]
    pub repair_rate: Option<String>,
    /// Async worker threads (0 = one per core the process may use).
    #[arg(long, env = "RINGKV_WORKER_THREADS")]
    pub worker_threads: Option<String>,
    /// `always`, `periodic:<duration>` or `never`.
    #[arg(long, env = "RINGKV_SYNC")]
    pub sync: Option<String>,
    /// `disabled` (default), `enabled` (TLS; mutual TLS on internode and
    /// Admin) or `required` (client certificates on every API).
    #[arg(long, env = "RINGKV_TLS_MODE")]
    pub tls_mode: Option<String>,
    /// PEM certificate chain of this node.
    #[arg(long, env = "RINGKV_TLS_CERT")]
    pub tls_cert: Option<String>,
    #[arg(long, env = "RINGKV_TLS_KEY")]
    pub tls_key: Option<String>,
    /// PEM CA bundle: verifies peers and client certificates.
    #[arg(long, env = "RINGKV_TLS_CA")]
    pub tls_ca: Option<String>,
    /// File of `<role> <token>` lines (read | readwrite | admin).
    #[arg(long, env = "RINGKV_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<String>,
    /// File with the cluster's gossip secret (one key per line).
    #[arg(long, env = "RINGKV_GOSSIP_SECRET_FILE")]
    pub gossip_secret_file: Option<String>,
}

impl Args {
    fn get(&self, field: &str) -> Option<&String> {
        match field {
            "node_id" => self.node_id.as_ref(),
            "zone" => self.zone.as_ref(),
            "data_dir" => self.data_dir.as_ref(),
            "seeds" => self.seeds.as_ref(),
            "listen_gossip" => self.listen_gossip.as_ref(),
            "listen_internode" => self.listen_internode.as_ref(),
            "listen_grpc" => self.listen_grpc.as_ref(),
            "listen_http" => self.listen_http.as_ref(),
            "advertise_host" => self.advertise_host.as_ref(),
            "n" => self.n.as_ref(),
            "w" => self.w.as_ref(),
            "r" => self.r.as_ref(),
            "vnodes" => self.vnodes.as_ref(),
            "conflict_mode" => self.conflict_mode.as_ref(),
            "max_clock_skew" => self.max_clock_skew.as_ref(),
            "max_value_bytes" => self.max_value_bytes.as_ref(),
            "request_timeout" => self.request_timeout.as_ref(),
            "speculative_retry" => self.speculative_retry.as_ref(),
            "sloppy_reads" => self.sloppy_reads.as_ref(),
            "tombstone_grace" => self.tombstone_grace.as_ref(),
            "max_hint_window" => self.max_hint_window.as_ref(),
            "repair_interval" => self.repair_interval.as_ref(),
            "gossip_interval" => self.gossip_interval.as_ref(),
            "phi_threshold" => self.phi_threshold.as_ref(),
            "hint_delivery_rate" => self.hint_delivery_rate.as_ref(),
            "repair_rate" => self.repair_rate.as_ref(),
            "worker_threads" => self.worker_threads.as_ref(),
            "sync" => self.sync.as_ref(),
            "tls_mode" => self.tls_mode.as_ref(),
            "tls_cert" => self.tls_cert.as_ref(),
            "tls_key" => self.tls_key.as_ref(),
            "tls_ca" => self.tls_ca.as_ref(),
            "auth_tokens_file" => self.auth_tokens_file.as_ref(),
            "gossip_secret_file" => self.gossip_secret_file.as_ref(),
            _ => None,
        }
    }

    /// Reads the YAML file if any, merges and validates.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(p) => read_yaml(p)?,
            None => BTreeMap::new(),
        };
        let mut raw = BTreeMap::new();
        for f in FIELDS {
            if let Some(v) = self.get(f).cloned().or_else(|| file.get(*f).cloned()) {
                raw.insert(f.to_string(), v);
            }
        }
        Config::from_raw(&raw)
    }
}

/// Reads a YAML mapping of field → scalar (or a list, for `seeds`) into strings.
fn read_yaml(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    let map = match value {
        serde_yaml::Value::Null => return Ok(out),
        serde_yaml::Value::Mapping(m) => m,
        _ => return Err(err("expected a mapping of field: value".into())),
    };
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| err("keys must be strings".into()))?
            .to_string();
        if !FIELDS.contains(&key.as_str()) {
            return Err(err(format!(
                "unknown field `{key}` (known: {})",
                FIELDS.join(", ")
            )));
        }
        let s = match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Sequence(items) => {
                let mut parts = Vec::new();
                for it in items {
                    match it {
                        serde_yaml::Value::String(s) => parts.push(s),
                        other => parts.push(
                            serde_yaml::to_string(&other)
                                .unwrap_or_default()
                                .trim()
                                .to_string(),
                        ),
                    }
                }
                parts.join(",")
            }
            _ => return Err(err(format!("field `{key}` must be a scalar"))),
        };
        out.insert(key, s);
    }
    Ok(out)
}

fn parse_duration(field: &'static str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim()).map_err(|e| {
        invalid(
            field,
            v,
            format!("not a duration ({e}); use e.g. 500ms, 2s, 3h, 10d"),
        )
    })
}

fn parse_num<T: std::str::FromStr>(field: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim()
        .parse::<T>()
        .map_err(|e| invalid(field, v, e.to_string()))
}

fn parse_addr(field: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = v.trim().parse::<SocketAddr>() {
        return Ok(a);
    }
    v.trim()
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| invalid(field, v, "expected host:port"))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end])
            && valid_name(s)
        {
            return s.to_string();
        }
    }
    "node".to_string()
}

/// First non-loopback address the host name resolves to, else 127.0.0.1.
fn default_advertise_host(listen: &SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.ip().to_string();
    }
    let host = default_node_id();
    if let Ok(addrs) = (host.as_str(), 0).to_socket_addrs() {
        for a in addrs {
            if a.is_ipv4() && !a.ip().is_loopback() {
                return a.ip().to_string();
            }
        }
    }
    IpAddr::V4(Ipv4Addr::LOCALHOST).to_string()
}

impl Config {
    /// A configuration with every default, for a node called `node_id` keeping
    /// its data in `data_dir`. Tests and `ringkv local` start from this.
    pub fn with_defaults(node_id: &str, data_dir: impl Into<PathBuf>) -> Config {
        let any = |p: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p);
        Config {
            node_id: node_id.to_string(),
            zone: "default".into(),
            data_dir: data_dir.into(),
            seeds: Vec::new(),
            listen_gossip: any(7000),
            listen_internode: any(7001),
            listen_grpc: any(7070),
            listen_http: any(8080),
            advertise_host: "127.0.0.1".into(),
            n: 3,
            w: 2,
            r: 2,
            vnodes: 128,
            conflict_mode: ConflictMode::Causal,
            max_clock_skew: crate::replica::DEFAULT_MAX_CLOCK_SKEW,
            max_value_bytes: 1 << 20,
            request_timeout: Duration::from_secs(2),
            speculative_retry: SpeculativeRetry::Adaptive,
            sloppy_reads: true,
            tombstone_grace: Duration::from_secs(10 * 86400),
            max_hint_window: Duration::from_secs(3 * 3600),
            repair_interval: None,
            gossip_interval: Duration::from_secs(1),
            phi_threshold: 8.0,
            hint_delivery_rate: 10_000,
            repair_rate: 64 << 20,
            worker_threads: 0,
            sync: SyncMode::Always,
            tls_mode: crate::security::TlsMode::Disabled,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            auth_tokens_file: None,
            gossip_secret_file: None,
        }
    }

    /// A loopback configuration on ephemeral ports (for tests).
    pub fn loopback(node_id: &str, data_dir: impl Into<PathBuf>) -> Config {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Config {
            listen_gossip: lo,
            listen_internode: lo,
            listen_grpc: lo,
            listen_http: lo,
            gossip_interval: Duration::from_millis(200),
            ..Config::with_defaults(node_id, data_dir)
        }
    }

    /// Builds a configuration from field → string values (already merged).
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let get = |f: &str| {
            raw.get(f)
                .map(|s| s.as_str())
                .filter(|s| !s.trim().is_empty())
        };
        let node_id = get("node_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(default_node_id);
        let data_dir = get("data_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./ringkv-data").join(&node_id));
        let mut c = Config::with_defaults(&node_id, data_dir);
        if let Some(v) = get("zone") {
            c.zone = v.trim().to_string();
        }
        if let Some(v) = get("seeds") {
            c.seeds = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = get("listen_gossip") {
            c.listen_gossip = parse_addr("listen_gossip", v)?;
        }
        if let Some(v) = get("listen_internode") {
            c.listen_internode = parse_addr("listen_internode", v)?;
        }
        if let Some(v) = get("listen_grpc") {
            c.listen_grpc = parse_addr("listen_grpc", v)?;
        }
        if let Some(v) = get("listen_http") {
            c.listen_http = parse_addr("listen_http", v)?;
        }
        c.advertise_host = match get("advertise_host") {
            Some(v) => v.trim().to_string(),
            None => default_advertise_host(&c.listen_internode),
        };
        if let Some(v) = get("n") {
            c.n = parse_num("n", v)?;
        }
        if let Some(v) = get("w") {
            c.w = parse_num("w", v)?;
        }
        if let Some(v) = get("r") {
            c.r = parse_num("r", v)?;
        }
        if let Some(v) = get("vnodes") {
            c.vnodes = parse_num("vnodes", v)?;
        }
        if let Some(v) = get("conflict_mode") {
            c.conflict_mode = match v.trim() {
                "causal" => ConflictMode::Causal,
                "lww" => ConflictMode::Lww,
                _ => return Err(invalid("conflict_mode", v, "expected `causal` or `lww`")),
            };
        }
        if let Some(v) = get("max_clock_skew") {
            c.max_clock_skew = parse_duration("max_clock_skew", v)?;
        }
        if let Some(v) = get("max_value_bytes") {
            c.max_value_bytes = parse_num("max_value_bytes", v)?;
        }
        if let Some(v) = get("request_timeout") {
            c.request_timeout = parse_duration("request_timeout", v)?;
        }
        if let Some(v) = get("speculative_retry") {
            c.speculative_retry = match v.trim() {
                "adaptive" => SpeculativeRetry::Adaptive,
                "never" => SpeculativeRetry::Never,
                d => SpeculativeRetry::After(parse_duration("speculative_retry", d).map_err(
                    |_| {
                        invalid(
                            "speculative_retry",
                            v,
                            "expected `adaptive`, `never` or a duration",
                        )
                    },
                )?),
            };
        }
        if let Some(v) = get("sloppy_reads") {
            c.sloppy_reads = match v.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("sloppy_reads", v, "expected `true` or `false`")),
            };
        }
        if let Some(v) = get("tombstone_grace") {
            c.tombstone_grace = parse_duration("tombstone_grace", v)?;
        }
        if let Some(v) = get("max_hint_window") {
            c.max_hint_window = parse_duration("max_hint_window", v)?;
        }
        if let Some(v) = get("repair_interval") {
            c.repair_interval = if v.trim() == "off" {
                None
            } else {
                Some(parse_duration("repair_interval", v)?)
            };
        }
        if let Some(v) = get("gossip_interval") {
            c.gossip_interval = parse_duration("gossip_interval", v)?;
        }
        if let Some(v) = get("phi_threshold") {
            c.phi_threshold = parse_num("phi_threshold", v)?;
        }
        if let Some(v) = get("hint_delivery_rate") {
            c.hint_delivery_rate = parse_num("hint_delivery_rate", v)?;
        }
        if let Some(v) = get("repair_rate") {
            c.repair_rate = parse_num("repair_rate", v)?;
        }
        if let Some(v) = get("worker_threads") {
            c.worker_threads = parse_num("worker_threads", v)?;
        }
        if let Some(v) = get("sync") {
            let t = v.trim();
            c.sync = match t {
                "always" => SyncMode::Always,
                "never" => SyncMode::Never,
                _ => match t.strip_prefix("periodic:") {
                    Some(d) => SyncMode::Periodic(parse_duration("sync", d)?),
                    None => {
                        return Err(invalid(
                            "sync",
                            v,
                            "expected `always`, `periodic:<duration>` or `never`",
                        ));
                    }
                },
            };
        }
        if let Some(v) = get("tls_mode") {
            c.tls_mode = crate::security::TlsMode::parse(v).ok_or_else(|| {
                invalid(
                    "tls_mode",
                    v,
                    "expected `disabled`, `enabled` or `required`",
                )
            })?;
        }
        c.tls_cert = get("tls_cert").map(|v| PathBuf::from(v.trim()));
        c.tls_key = get("tls_key").map(|v| PathBuf::from(v.trim()));
        c.tls_ca = get("tls_ca").map(|v| PathBuf::from(v.trim()));
        c.auth_tokens_file = get("auth_tokens_file").map(|v| PathBuf::from(v.trim()));
        c.gossip_secret_file = get("gossip_secret_file").map(|v| PathBuf::from(v.trim()));
        c.validate()?;
        Ok(c)
    }

    /// Checks every cross-field rule; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.node_id) {
            return Err(invalid(
                "node_id",
                &self.node_id,
                "use 1-253 characters of [A-Za-z0-9._-]",
            ));
        }
        if !valid_name(&self.zone) {
            return Err(invalid(
                "zone",
                &self.zone,
                "use 1-253 characters of [A-Za-z0-9._-]",
            ));
        }
        if !(1..=16).contains(&self.n) {
            return Err(invalid("n", self.n.to_string(), "must be between 1 and 16"));
        }
        if self.w < 1 || self.w > self.n {
            return Err(invalid(
                "w",
                self.w.to_string(),
                format!("must be between 1 and n ({})", self.n),
            ));
        }
        if self.r < 1 || self.r > self.n {
            return Err(invalid(
                "r",
                self.r.to_string(),
                format!("must be between 1 and n ({})", self.n),
            ));
        }
        if !(1..=4096).contains(&self.vnodes) {
            return Err(invalid(
                "vnodes",
                self.vnodes.to_string(),
                "must be between 1 and 4096",
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return Err(invalid(
                "max_value_bytes",
                self.max_value_bytes.to_string(),
                "must be between 1 and 67108864 (64 MiB)",
            ));
        }
        // A restart moves an LWW node's clock up to MARGIN_MS ahead
        // (`version::Hlc`); peers must not refuse it for that.
        let min_skew = Duration::from_millis(2 * crate::version::HLC_MARGIN_MS);
        if self.max_clock_skew < min_skew {
            return Err(invalid(
                "max_clock_skew",
                humantime::format_duration(self.max_clock_skew).to_string(),
                format!("must be at least {}", humantime::format_duration(min_skew)),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "0s", "must be positive"));
        }
        if self.gossip_interval.is_zero() {
            return Err(invalid("gossip_interval", "0s", "must be positive"));
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return Err(invalid(
                "phi_threshold",
                self.phi_threshold.to_string(),
                "must be a positive number",
            ));
        }
        if self.advertise_host.trim().is_empty() {
            return Err(invalid("advertise_host", "", "must not be empty"));
        }
        for s in &self.seeds {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid("seeds", s, "each seed must be host:port"));
            }
        }
        // TLS on needs all three files; files without TLS on would be a
        // silent plaintext deployment the operator did not mean.
        let files = [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_ca", &self.tls_ca),
        ];
        match self.tls_mode {
            crate::security::TlsMode::Disabled => {
                if let Some((field, Some(p))) = files.iter().find(|(_, v)| v.is_some()) {
                    return Err(invalid(
                        field,
                        p.display().to_string(),
                        "set tls_mode to `enabled` or `required` to use it (tls_mode is `disabled`)",
                    ));
                }
            }
            mode => {
                if let Some((field, _)) = files.iter().find(|(_, v)| v.is_none()) {
                    return Err(invalid(
                        field,
                        "",
                        format!(
                            "tls_mode `{}` needs tls_cert, tls_key and tls_ca",
                            mode.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
