#!/usr/bin/env bash
# Used for docs/PERFORMANCE.md section 7: `docs/bench-issue12.sh c128|c1|bytes|backlog` (release build first).
# Issue 12 measurements: per docs/PERFORMANCE.md, server on core 0, load on core 1.
set -u
B=/work/wt/queue/target/release
CFG=/tmp/sh-bench/stockhook.toml
cat > $CFG <<'EOT'
data_dir = "/tmp/sh-bench/data"
log_format = "json"
[receiver]
listen = "127.0.0.1:18080"
[alerts]
recipients = ["ops@example.com"]
[email]
from = "stockhook@example.com"
[[sources]]
name = "bench"
platform = "shopify"
scheme = "shopify-hmac"
secrets = ["bench-secret"]
EOT
wait_up() { for i in $(seq 1 100); do curl -sf localhost:$1/healthz >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
bare_round() { # c
  taskset -c 0 $B/bare-hyper 127.0.0.1:18090 & BARE=$!
  sleep 0.5
  taskset -c 1 $B/stockhook-bench --target bare --url http://127.0.0.1:18090/webhooks/bench -c $1 -d 10s --pid $BARE --json
  kill $BARE; wait $BARE 2>/dev/null
}
rx_round() { # c
  rm -rf /tmp/sh-bench/data
  taskset -c 0 $B/stockhook-receiver --config $CFG serve 2>/tmp/sh-bench/receiver.log & RP=$!
  wait_up 18080
  taskset -c 1 $B/stockhook-bench --url http://127.0.0.1:18080/webhooks/bench -c $1 -d 10s --pid $RP --json
  curl -s localhost:18080/metrics | grep -E '^stockhook_commit_batch_events_(sum|count)' | tr '\n' ' '; echo
  kill $RP; wait $RP 2>/dev/null
}
bytes_round() {
  rm -rf /tmp/sh-bench/data
  taskset -c 0 $B/stockhook-receiver --config $CFG serve 2>/tmp/sh-bench/receiver.log & RP=$!
  wait_up 18080
  W0=$(awk '/^write_bytes/{print $2}' /proc/$RP/io)
  taskset -c 1 $B/stockhook-bench --url http://127.0.0.1:18080/webhooks/bench -c 128 --requests 100000 --pid $RP --json > /tmp/sh-bench/bytes.json
  sleep 1  # let sled's 200 ms flusher settle: its writes count too
  W1=$(awk '/^write_bytes/{print $2}' /proc/$RP/io)
  echo "bytes: $(jq -c '{requests, rps, body_bytes, status}' /tmp/sh-bench/bytes.json) write_bytes=$((W1-W0)) per_event=$(( (W1-W0)/100000 ))"
  kill $RP; wait $RP 2>/dev/null
}
case "${1:-all}" in
  c128) for r in 1 2 3; do echo "== round $r"; bare_round 128; rx_round 128; done ;;
  c1) for r in 1 2 3; do echo "== round $r"; bare_round 1; rx_round 1; done ;;
  bytes) bytes_round ;;
  backlog)
    for r in 1 2 3; do
      rm -rf /tmp/sh-bench/data
      taskset -c 0 $B/stockhook-receiver --config $CFG serve 2>/tmp/sh-bench/receiver.log & RP=$!
      wait_up 18080
      taskset -c 1 $B/stockhook-bench --mode backlog --url http://127.0.0.1:18080/webhooks/bench \
        --events 100000 -c 64 --topic products/update \
        --worker-bin $B/stockhook-worker --config $CFG --worker-cpus 1 --json
      kill $RP; wait $RP 2>/dev/null
    done ;;
esac
