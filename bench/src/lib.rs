//! Benchmark harnesses. `engine-bench` runs the same workloads on
//! ringkv-engine and (with `--features peers`) fjall and RocksDB, each in its
//! own child process, and prints ops/s with the ratio ringkv/peer.

pub mod engines;
pub mod workload;
