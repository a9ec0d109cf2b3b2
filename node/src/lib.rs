//! ringkv-node: a Dynamo-style storage node.
//!
//! Dependency arrows point one way:
//! `api → {coordinator, repair} → {replica, ring, version, membership, transport} → engine`.

pub mod api;
pub mod backup;
pub mod config;
pub mod coordinator;
mod durable;
pub mod fuzzing;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod repair;
pub mod replica;
pub mod ring;
pub mod security;
pub mod telemetry;
pub mod transport;
pub mod version;

pub use config::{Args, Config, ConflictMode};
/// The allocator the node binaries use (`#[global_allocator]`).
pub use mimalloc::MiMalloc as Allocator;
pub use node::{BoundAddrs, ENDPOINTS_FILE, NodeError, NodeOptions, RunningNode, run};
pub use transport::{Fault, FaultInjector};

/// Logs to stderr (`RUST_LOG` filters, default `info`), and exports spans
/// over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`telemetry`]).
pub fn init_tracing() -> telemetry::Telemetry {
    telemetry::init()
}

/// Resolves `args` and runs the node to completion on a new runtime: the
/// body of both `ringkv-node` and `ringkv node`.
pub fn main_with_args(args: Args) -> std::process::ExitCode {
    let telemetry = init_tracing();
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv-node: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringkv-node: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    // The batch exporter flushes on the runtime.
    rt.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })
        .ok();
    code
}
