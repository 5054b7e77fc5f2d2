#!/usr/bin/env bash
# Section 8b's sled run as a script (issue 16): alert emails' latency at 2,000 alert-raising
# events/s, idle and then while two loops load dashboard pages. Receiver on core 0, worker and
# bench on core 1, all at nice -10; prefill 5,000 items; 15 s a phase.
#
#   docs/bench-e2e-browse.sh B DIR      B = release binaries (stockhook-receiver, stockhook-worker,
#                                       stockhook-bench); DIR = a fresh directory for config, data, logs
#
# RATE: events/s (2000). NATS=1: the same on the NATS backend (queue and state on JetStream): a nats-server is started
# on port 14222 with its store under DIR.
# PERF=1: also records the worker natively with perf (cpu-clock, dwarf call graphs) for
# PERF_SECS (12) from the first dashboard request on, into DIR.perf (section 16).
# BENCH_CPU: the core the bench runs on (1, with the worker, as in section 8b; 0 puts it with the
# receiver, so core 1 is the worker's alone). IDLE_AFTER=1: a third phase, idle again after
# browsing (tells browsing's cost from a drift over the run).
# ALTERNATE=N: after the first idle phase, N rounds of (browsing, idle), and a last line giving
# each browsing phase's p99 beside the idle phases on both sides of it (section 21). SECS: seconds
# a phase (15).
# MIX=one-in-ten: one event in ten alerts (the backlog's mix, `stockhook-bench --mix`), latency
# measured on those; default all-low, every event alerts (section 22).
# BROWSE_RATE=<pages/s>: the loops load that many pages a second in all, on a schedule (default:
# back to back, as fast as the dashboard answers; section 23).
# Diagnostics (section 23): BROWSE_PATHS="/a /b?x=1": the pages the loops load instead of the
# default set; BROWSE_IDLE=1: the loops run in the idle class; BROWSE_BURN=<MiB>: no pages,
# the loops burn core 1's leftover CPU in the idle class over that much memory.
# THREADS=1: also samples every thread's CPU time (worker and bench) once a second into
# DIR/threads.txt (`time pid tid name utime stime`, in clock ticks).
set -u
B=$(realpath "$1"); D=$2
rm -rf "$D" "$D.perf"; mkdir -p "$D"
cat > "$D/stockhook.toml" <<TOML
data_dir = "$D/data"
log_format = "json"
[receiver]
listen = "127.0.0.1:18180"
[alerts]
recipients = ["ops@example.com"]
[email]
from = "stockhook@example.com"   # no smtp_url: alerts become .eml files in data/mail/
[[sources]]
name = "bench"
platform = "shopify"
scheme = "shopify-hmac"
secrets = ["bench-secret"]
[dashboard]
listen = "127.0.0.1:18181"
[[dashboard.users]]
name = "ops"
role = "admin"
token = "bench-dashboard-token-0123456789"
TOML
if [ "${NATS:-}" = 1 ]; then
  printf '[queue]\nbackend = "nats"\nnats_url = "nats://127.0.0.1:14222"\n' >> "$D/stockhook.toml"
  NS=$(command -v nats-server || echo /usr/sbin/nats-server)
  "$NS" -js -a 127.0.0.1 -p 14222 -sd "$D/nats-store" >/dev/null 2>"$D/nats.log" & N=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null && break; sleep 0.1; done
fi
nice -n -10 taskset -c 0 "$B/stockhook-receiver" --config "$D/stockhook.toml" serve 2>"$D/receiver.log" & R=$!
nice -n -10 taskset -c 1 "$B/stockhook-worker" --config "$D/stockhook.toml" run >/dev/null 2>"$D/worker.log" & W=$!
for _ in $(seq 1 100); do curl -sf localhost:18180/healthz >/dev/null && break; sleep 0.1; done
if [ "${PERF:-}" = 1 ]; then
  (
    for _ in $(seq 1 900); do grep -q '"dashboard request"' "$D/worker.log" 2>/dev/null && break; sleep 0.1; done
    perf record -e cpu-clock -F 299 --call-graph dwarf,32768 -p $W -o "$D.perf" -- sleep "${PERF_SECS:-12}" >/dev/null 2>&1
  ) &
fi
BROWSE=()
for p in ${BROWSE_PATHS:-}; do BROWSE+=(--browse-path "$p"); done
[ "${BROWSE_IDLE:-}" = 1 ] && BROWSE+=(--browse-idle-class)
[ -n "${BROWSE_BURN:-}" ] && BROWSE+=(--browse-burn-mib "$BROWSE_BURN")
[ -n "${BROWSE_RATE:-}" ] && BROWSE+=(--browse-rate "$BROWSE_RATE")
BENCH_DASHBOARD_TOKEN=bench-dashboard-token-0123456789 nice -n -10 taskset -c "${BENCH_CPU:-1}" "$B/stockhook-bench" --mode e2e $([ "${IDLE_AFTER:-}" = 1 ] && echo --idle-after) --alternate "${ALTERNATE:-0}" --mix "${MIX:-all-low}" \
    --url http://127.0.0.1:18180/webhooks/bench --data-dir "$D/data" --rate "${RATE:-2000}" -d "${SECS:-15}s" -c 16 \
    --prefill 5000 --browse-url http://127.0.0.1:18181 --browse-connections 2 "${BROWSE[@]}" & BE=$!
if [ "${THREADS:-}" = 1 ]; then
  taskset -c 0 python3 "$(dirname "$0")/thread-cpu.py" "$D/threads.txt" $W $BE &
fi
wait $BE
kill -TERM $R $W; wait $R $W 2>/dev/null
[ -n "${N:-}" ] && kill -TERM "$N" && wait "$N" 2>/dev/null
wait
