//! A ringkv node, exactly as `ringkv-node` runs it. The e2e tests need a node
//! binary built by their own package (`CARGO_BIN_EXE_ringkv-e2e-node`), so
//! `cargo test -p ringkv-e2e` works without building other packages first.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ringkv-e2e-node",
    about = "A ringkv storage node (e2e test build)"
)]
struct Cli {
    #[command(flatten)]
    args: ringkv_node::Args,
}

fn main() -> std::process::ExitCode {
    ringkv_node::main_with_args(Cli::parse().args)
}
