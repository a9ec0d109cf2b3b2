//! Benchmark harnesses.
//!
//! - `engine-bench` runs the same workloads on ringkv-engine and (with
//!   `--features peers`) fjall and RocksDB, each in its own child process,
//!   and prints ops/s with the ratio ringkv/peer.
//! - `peer-bench` (with `--features peer-servers`; `bench/peers.sh` runs it)
//!   starts a 3-node ringkv, a 3-member etcd and a Redis one at a time on
//!   loopback and drives each with the same closed-loop load generator
//!   ([`load`]), one [`drivers`] per system.

pub mod cpu;
pub mod drivers;
pub mod engines;
pub mod error;
pub mod load;
pub mod matrix;
#[cfg(feature = "peer-servers")]
pub mod plot;
pub mod report;
pub mod servers;
pub mod systems;
pub mod workload;
pub mod zipf;

pub use error::{BenchError, OpError};
