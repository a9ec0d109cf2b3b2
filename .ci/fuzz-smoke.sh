#!/usr/bin/env bash
# Short cargo-fuzz runs of every fuzz target (engine and node decoders).
# Usage: .ci/fuzz-smoke.sh [seconds per target, default 60]
# Needs a nightly toolchain and cargo-fuzz (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

run() { # dir target
  echo "== fuzz $1/$2 for ${secs}s"
  mkdir -p "$1/fuzz/corpus/$2"
  local log rc=0
  log="$(mktemp)"
  (cd "$1" && nice -n 19 cargo +nightly fuzz run "$2" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz target $1/$2 failed (exit $rc); the crashing input is under $1/fuzz/artifacts/$2"
    exit 1
  fi
  rm -f "$log"
}

for t in sstable wal manifest; do run engine "$t"; done
for t in context stored_record internode gossip_datagram; do run node "$t"; done
echo "== fuzz smoke runs passed"
