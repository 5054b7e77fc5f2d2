#!/usr/bin/env bash
# The worker's backlog drain of 1,536 B `products/update` events (issue 12), measured two ways on
# release binaries (PERFORMANCE.md section 5):
#
# * callgrind instructions per drained event (load-independent): the worker drains N1 and then
#   N2 events under `valgrind --tool=callgrind`; (Ir(N2) - Ir(N1)) / (N2 - N1) leaves start-up
#   and shutdown out. The receiver runs natively on core 0.
# * natively: drain events/s (from the worker's start) and the worker's VmHWM, ROUNDS times.
#
#   docs/bench-worker-drain.sh [B]      B = release binaries (default target/release):
#                                        stockhook-receiver, stockhook-worker, stockhook-bench
#
# Env: N1 (2000), N2 (10000), ND (50000, native events), ROUNDS (1), OUT (/tmp/sh-drain-bench);
# ONLY=callgrind|native runs that part alone. Callgrind files stay in $OUT (cg.N1, cg.N2) for
# `callgrind_annotate`.
set -euo pipefail
B=$(realpath "${1:-target/release}")
N1=${N1:-2000}
N2=${N2:-10000}
ND=${ND:-50000}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-/tmp/sh-drain-bench}
PORT=18380
mkdir -p "$OUT"
# shellcheck source=docs/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
bench_config "$OUT/stockhook.toml" "$OUT/data" "127.0.0.1:$PORT"
URL="http://127.0.0.1:$PORT/webhooks/bench"
start_rx() {
  rm -rf "$OUT/data"
  taskset -c 0 "$B/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" &
  RX=$!
  wait_up $PORT
}
# $1 events, $2 worker binary (or wrapper) -> $OUT/backlog.json
drain() {
  start_rx
  taskset -c 1 "$B/stockhook-bench" --mode backlog --url "$URL" --events "$1" -c 64 \
    --topic products/update --worker-bin "$2" --config "$OUT/stockhook.toml" \
    --worker-cpus 1 --backlog-timeout 1800s --json > "$OUT/backlog.json"
  stop $RX
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = callgrind ]; then
  ir() { # events -> total instructions of the worker (every thread)
    cat > "$OUT/worker-cg" <<EOT
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1" "$B/stockhook-worker" "\$@"
EOT
    chmod +x "$OUT/worker-cg"
    rm -f "$OUT/cg.$1"
    drain "$1" "$OUT/worker-cg"
    awk '/^(summary|totals):/{print $2; exit}' "$OUT/cg.$1"
  }
  i1=$(ir "$N1")
  i2=$(ir "$N2")
  echo
  echo "| callgrind | Ir |"
  echo "|---|---|"
  echo "| worker, $N1 events | $i1 |"
  echo "| worker, $N2 events | $i2 |"
  echo "| **per drained event** | **$(( (i2 - i1) / (N2 - N1) ))** |"
fi
if [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = native ]; then
  echo
  echo "| round ($ND events) | drain events/s | worker VmHWM MiB | load average after |"
  echo "|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    drain "$ND" "$B/stockhook-worker"
    printf '| %s | %s | %s | %s |\n' "$r" "$(jq -r '.drain_events_per_s|floor' "$OUT/backlog.json")" \
      "$(jq -r '.worker_vm_hwm_mib*10|floor/10' "$OUT/backlog.json")" "$(cut -d' ' -f1-3 /proc/loadavg)"
  done
fi
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
