#!/usr/bin/env bash
# Short cargo-fuzz (libFuzzer) runs of every fuzz target: the node's causal
# context, stored record, internode message and gossip datagram decoders and
# the engine's SSTable, WAL and manifest readers.
# Usage: .ci/fuzz-smoke.sh [seconds per target, default 60]
#        .ci/fuzz-smoke.sh build   (only install cargo-fuzz and build)
#
# cargo-fuzz passes unstable compiler flags (coverage instrumentation). A
# fresh CI machine has only the stable toolchain and cannot fetch nightly,
# so the stable compiler runs with RUSTC_BOOTSTRAP=1, here and on CI alike.
# No sanitizer: the decoders are safe Rust (the crates' only unsafe blocks,
# gethostname and the memtable's slice cast, are not on these paths), so
# ASan would double the build and check nothing more; debug assertions and
# overflow checks are on (cargo-fuzz's default), which is what catches the
# wrapped counters and bad lengths the issue was about.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0

if ! command -v cargo-fuzz >/dev/null; then
  echo "== installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked --quiet; then
    echo "SKIPPED fuzz runs: cargo-fuzz could not be installed from crates.io"
    exit 0
  fi
fi

# One target dir for both crates: the engine's targets reuse the node's
# instrumented dependencies (one build of about 5 minutes on 2 cores).
tdir="$PWD/target/fuzz"
fuzz() { # dir, cargo-fuzz arguments...
  local dir="$1"; shift
  (cd "$dir" && nice -n 10 cargo fuzz "$1" -s none --target-dir "$tdir" "${@:2}")
}

for dir in node engine; do
  echo "== building the $dir fuzz targets"
  fuzz "$dir" build
done
if [ "$secs" = build ]; then exit 0; fi

run() { # dir target
  echo "== fuzz $1/$2 for ${secs}s"
  mkdir -p "$1/fuzz/corpus/$2"
  local log rc=0
  log="$(mktemp)"
  fuzz "$1" run "$2" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz target $1/$2 failed (exit $rc); the crashing input is under $1/fuzz/artifacts/$2"
    exit 1
  fi
  rm -f "$log"
}

for t in context stored_record internode gossip_datagram; do run node "$t"; done
for t in sstable wal manifest; do run engine "$t"; done
echo "== fuzz runs passed: 7 targets, ${secs}s each"
