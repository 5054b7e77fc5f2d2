#!/usr/bin/env bash
# Issue 12: the sled queue's append path, formats side by side, with measures that do not depend
# on the machine's load (callgrind instructions per request / per drained event, write_bytes per
# event, VmHWM after N events) and, labelled as such, req/s and p99 taken under whatever load the
# machine has. Prints one markdown table; the raw JSON lines go to $OUT/raw.jsonl.
#
#   docs/bench-queue-formats.sh [B] [B2]
#
#   B   release binaries of this tree (default target/release): stockhook-receiver,
#       stockhook-worker, stockhook-bench, bare-hyper. Format 1 is this binary with
#       `[queue] sled_segments = false`, format 3 (segments) with the default.
#   B2  optional: release binaries of branch `queue` (format 2, commit fa8beaf and after), built
#       from `git archive queue`; its rows are left out when B2 is not given.
#
# Env: SKIP_BARE=1 leaves out the bare-hyper row; ONLY_F3=1 measures format 3 only. N (events for callgrind, default 2000), NB (events for bytes/RSS, default 20000),
#      ND (backlog events, default 20000), SECS (load duration, default 10).
# Server on core 0, load generator on core 1 (taskset), as in docs/PERFORMANCE.md.
set -euo pipefail
B=$(realpath "${1:-target/release}")
B2=${2:+$(realpath "$2")}
N=${N:-2000}
NB=${NB:-20000}
ND=${ND:-20000}
SECS=${SECS:-10}
OUT=${OUT:-/tmp/sh-qbench}
PORT=18180
BPORT=18190
mkdir -p "$OUT"
: > "$OUT/raw.jsonl"

# shellcheck source=docs/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
config() { # $1 = sled_segments value or "" (format 2 binary: no such key)
  bench_config "$OUT/stockhook.toml" "$OUT/data" "127.0.0.1:$PORT" "$( [ -n "$1" ] && echo "sled_segments = $1" )"
}
url() { echo "http://127.0.0.1:$PORT/webhooks/bench"; }

# Receiver under callgrind: instructions per accepted request (total Ir over N requests, startup
# included, so N must be large against it).
rx_callgrind() { # bin-dir
  rm -rf "$OUT/data"
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.rx.out" \
    "$1/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/cg.rx.log" & local p=$!
  wait_up $PORT
  taskset -c 1 "$B/stockhook-bench" --url "$(url)" -c 8 --requests "$N" --json >/dev/null
  stop $p
  local ir; ir=$(awk '/^summary:/{print $2}' "$OUT/cg.rx.out")
  echo $(( ir / N ))
}
bare_callgrind() {
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.bare.out" \
    "$B/bare-hyper" "127.0.0.1:$BPORT" >/dev/null 2>"$OUT/cg.bare.log" & local p=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null -X POST "localhost:$BPORT/" 2>/dev/null && break; sleep 0.1; done
  taskset -c 1 "$B/stockhook-bench" --target bare --url "http://127.0.0.1:$BPORT/webhooks/bench" -c 8 --requests "$N" --json >/dev/null
  stop $p
  echo $(( $(awk '/^summary:/{print $2}' "$OUT/cg.bare.out") / N ))
}
# write_bytes per event and VmHWM after NB events at c=128 (1.5 KiB bodies).
rx_bytes() { # bin-dir -> "per_event body_bytes hwm_mib rps p99"
  rm -rf "$OUT/data"
  taskset -c 0 "$1/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" & local p=$!
  wait_up $PORT
  local w0; w0=$(awk '/^write_bytes/{print $2}' /proc/$p/io)
  taskset -c 1 "$B/stockhook-bench" --url "$(url)" -c 128 --requests "$NB" --pid $p --json > "$OUT/bytes.json"
  # Let sled's 200 ms flusher run: its writes count too.
  sleep 1
  local w1; w1=$(awk '/^write_bytes/{print $2}' /proc/$p/io)
  local hwm; hwm=$(awk '/^VmHWM/{printf "%.1f", $2/1024}' /proc/$p/status)
  stop $p
  cat "$OUT/bytes.json" >> "$OUT/raw.jsonl"
  echo "$(( (w1 - w0) / NB )) $(jq -r '.body_bytes' "$OUT/bytes.json") $hwm $(jq -r '.rps|floor' "$OUT/bytes.json") $(jq -r '.latency.p99_ms' "$OUT/bytes.json")"
}
rx_load() { # bin-dir c -> "rps p99"
  rm -rf "$OUT/data"
  taskset -c 0 "$1/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" & local p=$!
  wait_up $PORT
  taskset -c 1 "$B/stockhook-bench" --url "$(url)" -c "$2" -d "${SECS}s" --pid $p --json > "$OUT/load.json"
  stop $p
  cat "$OUT/load.json" >> "$OUT/raw.jsonl"
  echo "$(jq -r '.rps|floor' "$OUT/load.json") $(jq -r '.latency.p99_ms' "$OUT/load.json")"
}
bare_load() { # c -> "rps p99"
  taskset -c 0 "$B/bare-hyper" "127.0.0.1:$BPORT" >/dev/null & local p=$!
  sleep 0.5
  taskset -c 1 "$B/stockhook-bench" --target bare --url "http://127.0.0.1:$BPORT/webhooks/bench" -c "$1" -d "${SECS}s" --pid $p --json > "$OUT/bare.json"
  stop $p
  cat "$OUT/bare.json" >> "$OUT/raw.jsonl"
  echo "$(jq -r '.rps|floor' "$OUT/bare.json") $(jq -r '.latency.p99_ms' "$OUT/bare.json")"
}
# Backlog drain: ND events appended with the worker stopped, then the worker drains them.
# Also the worker under callgrind over a backlog of N: instructions per drained event.
backlog() { # bin-dir -> "events_per_s worker_hwm_mib"
  rm -rf "$OUT/data"
  taskset -c 0 "$1/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" & local p=$!
  wait_up $PORT
  taskset -c 1 "$B/stockhook-bench" --mode backlog --url "$(url)" --events "$ND" -c 64 \
    --topic products/update --worker-bin "$1/stockhook-worker" --config "$OUT/stockhook.toml" \
    --worker-cpus 1 --json > "$OUT/backlog.json"
  stop $p
  cat "$OUT/backlog.json" >> "$OUT/raw.jsonl"
  echo "$(jq -r '.drain_events_per_s|floor' "$OUT/backlog.json") $(jq -r '.worker_vm_hwm_mib' "$OUT/backlog.json")"
}
worker_callgrind() { # bin-dir -> instructions per drained event
  rm -rf "$OUT/data"
  cat > "$OUT/worker-cg.sh" <<EOT
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.worker.out "$1/stockhook-worker" "\$@" 2>>$OUT/cg.worker.log
EOT
  chmod +x "$OUT/worker-cg.sh"
  taskset -c 0 "$1/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" & local p=$!
  wait_up $PORT
  "$B/stockhook-bench" --mode backlog --url "$(url)" --events "$N" -c 16 --topic products/update \
    --worker-bin "$OUT/worker-cg.sh" --config "$OUT/stockhook.toml" --backlog-timeout 900s --json > /dev/null
  stop $p
  # The bench SIGTERMs the wrapper's valgrind; give it time to write its profile.
  for _ in $(seq 1 300); do [ -s "$OUT/cg.worker.out" ] && grep -q '^summary:' "$OUT/cg.worker.out" && break; sleep 0.2; done
  echo $(( $(awk '/^summary:/{print $2}' "$OUT/cg.worker.out") / N ))
  rm -f "$OUT/cg.worker.out"
}

row() { # name bin-dir sled_segments
  config "$3"
  local cg bytes c128 c1 bl wcg
  cg=$(rx_callgrind "$2")
  read -r per body hwm brps bp99 <<<"$(rx_bytes "$2")"
  read -r r128 p128 <<<"$(rx_load "$2" 128)"
  read -r r1 p1 <<<"$(rx_load "$2" 1)"
  read -r drain whwm <<<"$(backlog "$2")"
  wcg=$(worker_callgrind "$2")
  printf '| %s | %s | %s (%.2fx body) | %s | %s / %s | %s / %s | %s | %s | %s |\n' \
    "$1" "$cg" "$per" "$(echo "$per / $body" | bc -l)" "$hwm" "$r128" "$p128" "$r1" "$p1" "$drain" "$whwm" "$wcg"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "${SKIP_BARE:-}" ]; then
  bcg=$(bare_callgrind)
  read -r br128 bp128 <<<"$(bare_load 128)"
  read -r br1 bp1 <<<"$(bare_load 1)"
fi
echo
echo "| variant | receiver Ir/request | write_bytes/event ($NB events, c=128) | receiver VmHWM MiB after $NB | c=128 req/s / p99 ms (under load) | c=1 req/s / p99 ms (under load) | drain events/s ($ND, under load) | worker VmHWM MiB | worker Ir/drained event |"
echo "|---|---|---|---|---|---|---|---|---|"
[ -z "${SKIP_BARE:-}" ] && printf '| bare hyper | %s | - | - | %s / %s | %s / %s | - | - | - |\n' "$bcg" "$br128" "$bp128" "$br1" "$bp1"
[ -z "${ONLY_F3:-}" ] && row "format 1 (sled, main)" "$B" false
[ -n "$B2" ] && [ -z "${ONLY_F3:-}" ] && row "format 2 (sled chunks, branch queue)" "$B2" ""
row "format 3 (segments + sled)" "$B" true
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
