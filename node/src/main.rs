//! `ringkv-node`: runs one ringkv storage node (see docs/node-config.md).

use clap::Parser;

#[global_allocator]
static GLOBAL: ringkv_node::Allocator = ringkv_node::Allocator;

#[derive(Parser)]
#[command(name = "ringkv-node", version, about = "A ringkv storage node")]
struct Cli {
    #[command(flatten)]
    args: ringkv_node::Args,
}

fn main() -> std::process::ExitCode {
    ringkv_node::main_with_args(Cli::parse().args)
}
