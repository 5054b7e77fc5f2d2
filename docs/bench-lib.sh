# What the benchmark scripts of docs/ share (sourced, not run): the config they serve and the
# helpers that start and stop what they measure.

# bench_config FILE DATA_DIR LISTEN [QUEUE_KEYS] [TOP_KEYS]: a config with one shopify-hmac source
# `bench` (secret `bench-secret`, what stockhook-bench signs with) and JSON logs. QUEUE_KEYS and
# TOP_KEYS are TOML lines for `[queue]` and the top level.
bench_config() {
  cat > "$1" <<EOT
data_dir = "$2"
log_format = "json"
${5:-}
[receiver]
listen = "$3"
[queue]
${4:-}
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
}

# wait_up PORT: until something on localhost:PORT answers /healthz (60 s at the most).
wait_up() { for _ in $(seq 1 600); do curl -sf "localhost:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
# stop PID: SIGTERM and wait for it.
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
