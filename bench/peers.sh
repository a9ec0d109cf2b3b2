#!/usr/bin/env bash
# The peer benchmark in one command: ringkv (3 nodes) vs etcd (3 members) vs
# Redis (1 node), one system at a time on loopback, same load generator.
#
#   bench/peers.sh [peer-bench flags]      e.g. --quick, --systems ringkv,etcd
#
# Installs what is missing (Debian packages etcd-server, redis-server, and
# protobuf-compiler to build the etcd client; sudo when not root), builds
# ringkv-node and peer-bench in release, runs the suite (< 15 min on 2 cores)
# and writes bench/results/peers.{md,json} and peers-sweep.svg.
# `bench/peers.sh --help` lists the flags.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "peers.sh: missing ${missing[*]} and no apt-get here; install them by hand" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "peers.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

cargo build --release -p ringkv-node --bin ringkv-node
cargo build --release -p ringkv-bench --features peer-servers --bin peer-bench
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/peer-bench" --node-bin "$target/release/ringkv-node" "$@"
