#!/usr/bin/env bash
# System calls by kind, context switches and group commits per request, for one run of a FIXED
# number of requests (docs/PERFORMANCE.md section 20): counts the machine's load barely moves,
# unlike wall-clock figures. Server on core 0, stockhook-bench on core 1, 2,000 requests to warm up
# first. Appends one summary (three lines) to $OUT/summary.txt and prints it.
#
#   docs/bench-wakes.sh B C N OUT LABEL [VAR=value ...]
#     B      release binaries: stockhook-receiver, stockhook-bench, bare-hyper
#     LABEL  `bare` runs bare hyper; anything else the receiver, with the VAR=value given
#
# Env: PORT, BPORT (19480, 19490); NOPERF=1 leaves perf out (for wall-clock figures: the
# tracepoints cost the server time; the per-thread switches from /proc are still counted);
# RENICE=n sets the commit thread's nice value after the warm-up (an experiment).
# Needs perf with the syscalls:* tracepoints (`perf list | grep sys_enter_`), curl and jq.
set -euo pipefail
B=$(realpath "$1"); C=$2; N=$3; OUT=$4; LABEL=$5; shift 5
PORT=${PORT:-19480}; BPORT=${BPORT:-19490}
mkdir -p "$OUT"
# shellcheck source=docs/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
bench_config "$OUT/stockhook.toml" "$OUT/data" "127.0.0.1:$PORT"
SC="recvfrom writev write epoll_wait epoll_ctl futex pwrite64 fdatasync statfs"
EV="raw_syscalls:sys_enter,context-switches,task-clock,sched:sched_wakeup"
for s in $SC; do EV="$EV,syscalls:sys_enter_$s"; done
if [ "$LABEL" = bare ]; then
  taskset -c 0 "$B/bare-hyper" "127.0.0.1:$BPORT" >/dev/null & P=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null -X POST "localhost:$BPORT/" 2>/dev/null && break; sleep 0.05; done
  URL="http://127.0.0.1:$BPORT/webhooks/bench"; T=(--target bare)
else
  rm -rf "$OUT/data"
  env "$@" taskset -c 0 "$B/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx-$LABEL.log" & P=$!
  wait_up "$PORT"
  URL="http://127.0.0.1:$PORT/webhooks/bench"; T=()
fi
taskset -c 1 "$B/stockhook-bench" "${T[@]}" --url "$URL" -c "$C" --requests 2000 --json > /dev/null
if [ -n "${RENICE:-}" ]; then
  for t in /proc/$P/task/*; do [ "$(cat "$t/comm")" = queue-commit ] && renice -n "$RENICE" -p "$(basename "$t")" >/dev/null; done
fi
# Each thread's voluntary and involuntary context switches.
snap() { for t in /proc/$P/task/*; do printf '%s %s %s\n' "$(tr ' ' _ < "$t/comm")" "$(awk '/^voluntary_ctxt/{print $2}' "$t/status")" "$(awk '/^nonvoluntary_ctxt/{print $2}' "$t/status")"; done; }
groups() { [ "$LABEL" = bare ] && echo 0 || curl -s "localhost:$PORT/metrics" | awk '/^stockhook_commit_batch_events_count/{print $2}'; }
snap > "$OUT/sw0"; g0=$(groups)
PS=
if [ -z "${NOPERF:-}" ]; then
  perf stat -x, -e "$EV" -p "$P" -o "$OUT/ps-$LABEL.csv" & PS=$!
  sleep 0.3
else
  : > "$OUT/ps-$LABEL.csv"
fi
taskset -c 1 "$B/stockhook-bench" "${T[@]}" --url "$URL" -c "$C" --requests "$N" --pid "$P" --json > "$OUT/load-$LABEL.json"
if [ -n "$PS" ]; then kill -INT "$PS"; wait "$PS" 2>/dev/null || true; fi
snap > "$OUT/sw1"; g1=$(groups)
stop "$P"
j() { jq -r "$1" "$OUT/load-$LABEL.json"; }
{
printf '%s c=%s n=%s ok=%s rps=%.0f p50=%s p99=%s cpu/req=%s (u %s + s %s) groups=%s\n' "$LABEL" "$C" "$N" \
  "$(j '.status["200"] // 0')" "$(j .rps)" "$(j .latency.p50_ms)" "$(j .latency.p99_ms)" \
  "$(j .server_cpu.us_per_request)" "$(j .server_cpu.user_us_per_request)" "$(j .server_cpu.sys_us_per_request)" "$((g1 - g0))"
# Per request: every perf counter (task-clock in ms), then each busy thread's switches.
awk -F, -v n="$N" '$1 ~ /^[0-9.]+$/ {e=$3; sub("syscalls:sys_enter_","",e); printf "  %s=%.4f", e, $1/n} END {print ""}' "$OUT/ps-$LABEL.csv"
paste "$OUT/sw0" "$OUT/sw1" | awk -v n="$N" '{v[$1]+=$5-$2; i[$1]+=$6-$3} END {for (k in v) if (v[k]+i[k] > n/1000) printf "  %s vol=%.4f invol=%.4f", k, v[k]/n, i[k]/n; print ""}'
} | tee -a "$OUT/summary.txt"
