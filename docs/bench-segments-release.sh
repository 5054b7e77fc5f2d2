#!/usr/bin/env bash
# Issue 12's targets for the segment log (queue format 3), on release binaries: bare hyper and
# the receiver side by side in each round (server on core 0, load on core 1), so the figures to
# read are the ratios of one round. Prints one markdown table per measure; raw JSON lines go to
# $OUT/raw.jsonl.
#
#   docs/bench-segments-release.sh [B]      B = release binaries (default target/release):
#                                            stockhook-receiver, stockhook-worker,
#                                            stockhook-bench, bare-hyper
#
# Env: PORT and BPORT (18280, 18290: the receiver's and bare hyper's), ROUNDS (3), SECS (10, per
# load run), NB (20000, events for write_bytes), ND (50000, backlog events), NC (20000, requests
# under callgrind), NS (10000, requests under strace), OUT (/tmp/sh-seg-bench);
# ONLY=load|bytes|backlog|callgrind|strace|mem|ceiling runs that part alone (callgrind, strace,
# mem and ceiling run only when asked: they need valgrind / strace / gcc, and minutes).
# ONLY=mem: the receiver's memory after a FIXED number of requests (NM, 500000, at c=128, bodies
# 1,536 B), for every build given (`... B1 B2`), alternated over ROUNDS: a figure the machine's
# load barely moves, unlike a fixed-time run whose event count follows the rate.
set -euo pipefail
B=$(realpath "${1:-target/release}")
BUILDS=("${@:-target/release}")
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
NB=${NB:-20000}
ND=${ND:-50000}
OUT=${OUT:-/tmp/sh-seg-bench}
PORT=${PORT:-18280}
BPORT=${BPORT:-18290}
mkdir -p "$OUT"
: > "$OUT/raw.jsonl"
# shellcheck source=docs/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
bench_config "$OUT/stockhook.toml" "$OUT/data" "127.0.0.1:$PORT"
URL="http://127.0.0.1:$PORT/webhooks/bench"
j() { jq -r "$1" "$2"; }

# $1 = where the receiver's log goes (a file, as in PERFORMANCE.md, or /dev/null).
start_rx() {
  rm -rf "$OUT/data"
  taskset -c 0 env ${PRELOAD:+LD_PRELOAD=$PRELOAD} "$B/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$1" &
  RX=$!
  wait_up $PORT
}
load() { # target url c pid -> json file
  taskset -c 1 "$B/stockhook-bench" ${1:+--target $1} --url "$2" -c "$3" -d "${SECS}s" --pid "$4" --json > "$OUT/load.json"
  cat "$OUT/load.json" >> "$OUT/raw.jsonl"
}
bare() { # c
  taskset -c 0 "$B/bare-hyper" "127.0.0.1:$BPORT" >/dev/null & local p=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null -X POST "localhost:$BPORT/" 2>/dev/null && break; sleep 0.05; done
  load bare "http://127.0.0.1:$BPORT/webhooks/bench" "$1" $p
  stop $p
}
row() { # label file
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(j '.rps|floor' "$2")" "$(j '.latency.p50_ms' "$2")" \
    "$(j '.latency.p99_ms' "$2")" "$(j '.rss.vm_hwm_mib' "$2")" \
    "$(j '.server_cpu|"\(.us_per_request*10|floor/10) (\(.user_us_per_request*10|floor/10) + \(.sys_us_per_request*10|floor/10))"' "$2")"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $( [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = load ] && echo 128 1 ); do
  echo
  echo "### c=$c, ${SECS} s each, bodies 1,536 B"
  echo
  echo "| round: run | req/s | p50 ms | p99 ms | VmHWM MiB | server CPU µs/req (user + system) |"
  echo "|---|---|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    bare "$c"; cp "$OUT/load.json" "$OUT/bare.json"
    start_rx "$OUT/rx.log"; load "" "$URL" "$c" $RX; stop $RX
    row "$r: bare hyper" "$OUT/bare.json"
    row "$r: receiver" "$OUT/load.json"
    echo "| $r: receiver ÷ bare | **$(echo "$(j .rps "$OUT/load.json") / $(j .rps "$OUT/bare.json")" | bc -l | xargs printf '%.2f')×** | | | | |"
  done
done

# ONLY=ceiling (by hand, never by default): what durability costs the append path. A third run
# per round has fdatasync and fsync made no-ops by an LD_PRELOAD shim built here with gcc (an
# experiment: such a receiver answers 200 before the disk has the event), so the round shows
# bare hyper, the receiver, and the receiver's ceiling if its syncs were free.
if [ "${ONLY:-}" = ceiling ]; then
  printf 'int fdatasync(int fd) { (void)fd; return 0; }\nint fsync(int fd) { (void)fd; return 0; }\n' > "$OUT/nosync.c"
  gcc -shared -fPIC -O2 -o "$OUT/nosync.so" "$OUT/nosync.c"
  echo
  echo "### c=128, ${SECS} s each: the receiver with its syncs made no-ops (experiment)"
  echo
  echo "| round: run | req/s | p50 ms | p99 ms | VmHWM MiB | server CPU µs/req (user + system) |"
  echo "|---|---|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    bare 128; cp "$OUT/load.json" "$OUT/bare.json"
    start_rx "$OUT/rx.log"; load "" "$URL" 128 $RX; stop $RX; cp "$OUT/load.json" "$OUT/rx.json"
    PRELOAD="$OUT/nosync.so" start_rx "$OUT/rx.log"; load "" "$URL" 128 $RX; stop $RX
    row "$r: bare hyper" "$OUT/bare.json"
    row "$r: receiver" "$OUT/rx.json"
    row "$r: receiver, no-op syncs" "$OUT/load.json"
    echo "| $r: receiver ÷ bare, no-op syncs ÷ bare | **$(echo "$(j .rps "$OUT/rx.json") / $(j .rps "$OUT/bare.json")" | bc -l | xargs printf '%.2f')×**, **$(echo "$(j .rps "$OUT/load.json") / $(j .rps "$OUT/bare.json")" | bc -l | xargs printf '%.2f')×** | | | | |"
  done
fi

if [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = bytes ]; then
echo
echo "### Bytes written per event ($NB events at c=128, no worker)"
echo
echo "| receiver log to | write_bytes / event | ÷ body | segment bytes / event | VmHWM MiB |"
echo "|---|---|---|---|---|"
for dest in "$OUT/rx.log" /dev/null; do
  start_rx "$dest"
  w0=$(awk '/^write_bytes/{print $2}' /proc/$RX/io)
  taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests "$NB" --pid $RX --json > "$OUT/bytes.json"
  # sled's flusher runs every 200 ms: its writes count too.
  sleep 1
  w1=$(awk '/^write_bytes/{print $2}' /proc/$RX/io)
  hwm=$(awk '/^VmHWM/{printf "%.1f", $2/1024}' /proc/$RX/status)
  stop $RX
  seg=$(cat "$OUT"/data/queue/segments/*.seg | wc -c)
  body=$(j .body_bytes "$OUT/bytes.json")
  per=$(( (w1 - w0) / NB ))
  printf '| %s | %s B | %.2f× | %s B | %s |\n' "$dest" "$per" "$(echo "$per / $body" | bc -l)" "$(( seg / NB ))" "$hwm"
done
fi

if [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = backlog ]; then
echo
echo "### Worker backlog drain ($ND products/update of 1,536 B)"
echo
echo "| round | drain events/s | worker VmHWM MiB | append req/s (c=64) |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  start_rx "$OUT/rx.log"
  taskset -c 1 "$B/stockhook-bench" --mode backlog --url "$URL" --events "$ND" -c 64 \
    --topic products/update --worker-bin "$B/stockhook-worker" --config "$OUT/stockhook.toml" \
    --worker-cpus 1 --json > "$OUT/backlog.json"
  stop $RX
  cat "$OUT/backlog.json" >> "$OUT/raw.jsonl"
  printf '| %s | %s | %s | %s |\n' "$r" "$(j '.drain_events_per_s|floor' "$OUT/backlog.json")" \
    "$(j .worker_vm_hwm_mib "$OUT/backlog.json")" "$(j '.append_rps|floor' "$OUT/backlog.json")"
done
fi
if [ "${ONLY:-}" = mem ]; then
NM=${NM:-500000}
echo
echo "### Receiver memory after $NM requests at c=128 (bodies 1,536 B, no worker: every event pending)"
echo
echo "| round: build | answered 200 | VmHWM MiB | VmRSS MiB | RssAnon MiB | HWM − idle KiB / event |"
echo "|---|---|---|---|---|---|"
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
for r in $(seq 1 "$ROUNDS"); do
  for b in "${BUILDS[@]}"; do
    B=$(realpath "$b")
    start_rx "$OUT/rx.log"
    idle=$(kib VmHWM $RX)
    taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests "$NM" --json > "$OUT/mem.json"
    hwm=$(kib VmHWM $RX); rss=$(kib VmRSS $RX); anon=$(kib RssAnon $RX)
    stop $RX
    ok=$(j '.status["200"] // 0' "$OUT/mem.json")
    printf '| %s: %s | %s | %.1f | %.1f | %.1f | %.3f |\n' "$r" "$b" "$ok" "$(echo "$hwm/1024" | bc -l)" \
      "$(echo "$rss/1024" | bc -l)" "$(echo "$anon/1024" | bc -l)" "$(echo "($hwm - $idle) / ${ok:-1}" | bc -l)"
  done
done
fi
if [ "${ONLY:-}" = callgrind ]; then
NC=${NC:-20000}
echo
echo "### Receiver instructions per request (callgrind, $NC requests at c=128 after 2,000 to warm up)"
echo
# User-space instructions of every receiver thread, counted only while the measured requests run
# (startup, warm-up and shutdown excluded): a figure the machine's load does not move. valgrind
# does not emulate SHA-NI, so HMAC-SHA256 runs sha2's software path here (about 5× its native cost).
rm -rf "$OUT/data"
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.out" \
  "$B/stockhook-receiver" --config "$OUT/stockhook.toml" serve >/dev/null 2>"$OUT/rx.log" &
RX=$!
wait_up $PORT
taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests 2000 --json > /dev/null
callgrind_control -i on $RX >/dev/null 2>&1 || true  # its exit status is not reliable; a count of 0 shows a failure
taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests "$NC" --json > "$OUT/cg-load.json"
callgrind_control -i off $RX >/dev/null 2>&1 || true
stop $RX
ok=$(j '.status["200"] // 0' "$OUT/cg-load.json")
ir=$(callgrind_annotate "$OUT/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "| requests answered 200 | instructions | **instructions / request** |"
echo "|---|---|---|"
printf '| %s | %s | **%s** |\n' "$ok" "$ir" "$(( ir / (ok > 0 ? ok : 1) ))"
echo
echo "Top inclusive costs: callgrind_annotate --inclusive=yes $OUT/cg.out | head -60"
fi
if [ "${ONLY:-}" = strace ]; then
NS=${NS:-10000}
echo
echo "### Receiver system calls per request (strace -c -f, $NS requests at c=128 after 2,000 to warm up)"
echo
# Every receiver thread's system calls, counted only while the measured requests run. strace
# slows the receiver down, which makes group commits larger: read the per-request figures of
# the calls a request makes itself (read, write, futex, epoll), not of the group commit's.
start_rx "$OUT/rx.log"
taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests 2000 --json > /dev/null
strace -c -f -p "$RX" -o "$OUT/strace.txt" 2>/dev/null & ST=$!
# Measure once strace is attached (the receiver then names its tracer), not after a guess.
for _ in $(seq 1 200); do grep -q 'TracerPid:[[:space:]]*[1-9]' "/proc/$RX/status" && break; sleep 0.05; done
taskset -c 1 "$B/stockhook-bench" --url "$URL" -c 128 --requests "$NS" --json > "$OUT/st-load.json"
kill -INT $ST; wait $ST 2>/dev/null || true
stop $RX
ok=$(j '.status["200"] // 0' "$OUT/st-load.json")
echo "| syscall | calls | calls / request |"
echo "|---|---|---|"
# Columns: % time, seconds, usecs/call, calls, [errors,] syscall.
awk -v ok="$ok" '$1 ~ /^[0-9.]+$/ && $NF != "total" { printf "| %s | %s | %.3f |\n", $NF, $4, $4 / ok }
  $NF == "total" { printf "| **total** | %s | **%.2f** |\n", $4, $4 / ok }' "$OUT/strace.txt"
echo
echo "requests answered 200: $ok"
fi
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
