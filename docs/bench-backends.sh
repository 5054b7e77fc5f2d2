#!/usr/bin/env bash
# The side-by-side benchmark of docs/BACKENDS.md: the same load generator against a receiver on
# sled and on NATS (one local nats-server -js, R1), then the worker's drain of a backlog.
#
#   cargo build --release -p stockhook-receiver -p stockhook-worker -p stockhook-tests \
#       --bin stockhook-receiver --bin stockhook-worker --bin stockhook-bench
#   docs/bench-backends.sh sled 20000
#   docs/bench-backends.sh nats 20000
#
# Everything listens on 127.0.0.1 only (NATS on port 14222); every run is bounded (10 s loads,
# N events); state goes under ${BENCH_DIR:-/tmp/stockhook-bench}/<backend> and is wiped first.
set -euo pipefail
backend=${1:?sled or nats}; events=${2:-20000}
R=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release
B=${BENCH_DIR:-/tmp/stockhook-bench}/$backend
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap cleanup EXIT
# shellcheck source=docs/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
start() {
  rm -rf "$B"; mkdir -p "$B"
  bench_config "$B/stockhook.toml" "$B/data" "127.0.0.1:0" \
    "$(printf 'backend = "%s"\nnats_url = "nats://127.0.0.1:14222"' "$backend")" 'log_level = "warn"'
  if [[ $backend == nats ]]; then
    "$NATS" -js -a 127.0.0.1 -p 14222 -sd "$B/nats" > "$B/nats.log" 2>&1 & pids+=($!)
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/14222) 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
  fi
  "$R/stockhook-receiver" --config "$B/stockhook.toml" serve > "$B/receiver.out" 2> "$B/receiver.err" & rpid=$!; pids+=($rpid)
  for _ in $(seq 200); do grep -q '^ready addr=' "$B/receiver.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^ready addr=//p' "$B/receiver.out")
}
start
echo "== $backend: receiver at $addr"
echo "-- load: 32 connections, 10 s, products/update ~1.5 KiB, signed"
"$R/stockhook-bench" --mode load -c 32 -d 10s --url "http://$addr/webhooks/bench" --pid "$rpid"
echo "-- load: 4 connections, 10 s"
"$R/stockhook-bench" --mode load -c 4 -d 10s --url "http://$addr/webhooks/bench"
cleanup
start
echo "-- backlog: $events inventory_levels/update events, then one worker drains them"
"$R/stockhook-bench" --mode backlog --events "$events" --url "http://$addr/webhooks/bench" \
  --worker-bin "$R/stockhook-worker" --config "$B/stockhook.toml" --topic inventory_levels/update
