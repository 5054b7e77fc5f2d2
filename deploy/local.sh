#!/usr/bin/env bash
# Runs stockhook locally for a developer, in one command: deploy/local.sh
#
#   * builds the two binaries (cargo profile `local`: release, opt-level 2, no debug info) when
#     they are missing or older than the sources;
#   * on first run writes a dev config, data/dev/stockhook.toml (data/ is gitignored), with a
#     freshly generated secret for the Shopify source "dev-shop" and an unsigned "simple" source;
#   * starts stockhook-receiver, waits for its "ready addr=" line, starts stockhook-worker;
#   * prints how to send a signed test webhook and where the alert emails land (data/dev/mail/);
#   * Ctrl-C stops both with SIGTERM and waits for them to exit.
#
# Environment: PORT (default 8080) is the loopback port the receiver listens on;
# READY_TIMEOUT (default 60) is how many seconds to wait for the receiver's ready line;
# CARGO_TARGET_DIR (default target) is where cargo puts the build.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

port=${PORT:-8080}
ready_timeout=${READY_TIMEOUT:-60}
dev_dir=data/dev
config=$dev_dir/stockhook.toml
target_dir=${CARGO_TARGET_DIR:-target}
receiver=$target_dir/local/stockhook-receiver
worker=$target_dir/local/stockhook-worker
receiver_log=$dev_dir/receiver.log
worker_log=$dev_dir/worker.log

case $port in
    '' | *[!0-9]*) echo "local.sh: PORT must be a number, got '$port'" >&2; exit 2 ;;
esac

log() { printf 'local.sh: %s\n' "$*" >&2; }

# --- build ---------------------------------------------------------------------------------------
# Stale = a binary is missing, or any source, manifest or the lock file is newer than it.
needs_build() {
    local bin
    for bin in "$receiver" "$worker"; do
        [[ -x $bin ]] || return 0
        if [[ -n $(find Cargo.toml Cargo.lock {shared,receiver,worker}/Cargo.toml \
            {shared,receiver,worker}/src -type f -newer "$bin" -print -quit 2>/dev/null) ]]; then
            return 0
        fi
    done
    return 1
}

if needs_build; then
    log "building the binaries (cargo build --profile local; the first build takes minutes)"
    cargo build --profile local -p stockhook-receiver -p stockhook-worker
    # Cargo leaves an up-to-date binary's mtime alone; touch so the next run sees it as fresh.
    touch "$receiver" "$worker"
fi

# --- dev config ----------------------------------------------------------------------------------
random_hex() {
    if [[ -r /dev/urandom ]] && command -v od >/dev/null; then
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
    elif command -v openssl >/dev/null; then
        openssl rand -hex 32
    else
        python3 -c 'import secrets; print(secrets.token_hex(32), end="")'
    fi
}

mkdir -p "$dev_dir"
chmod 700 "$dev_dir"
if [[ ! -f $config ]]; then
    secret=$(random_hex)
    if [[ ${#secret} -ne 64 ]]; then
        log "could not generate a random secret (need od + /dev/urandom, openssl or python3)"
        exit 1
    fi
    (
        umask 077
        cat >"$config" <<EOF
# Written by deploy/local.sh for local development; delete it to get a fresh one (new secret).
# Not for production: see deploy/stockhook.toml.example.
data_dir = "./data/dev"
log_level = "info"
log_format = "text"

[receiver]
# local.sh rewrites this line from \$PORT on every run.
listen = "127.0.0.1:$port"

[alerts]
recipients = ["seller@example.com"]

[email]
from = "stockhook-dev@localhost"
# No smtp_url: every alert email is written as an .eml file under data/dev/mail/.

# Signed like Shopify (X-Shopify-Hmac-Sha256). The secret is random, generated for this checkout.
[[sources]]
name = "dev-shop"
platform = "shopify"
scheme = "shopify-hmac"
secrets = ["$secret"]

# Unsigned, for quick curl tests. Loopback only.
[[sources]]
name = "simple"
platform = "simple"
scheme = "none"
insecure = true
EOF
    )
    log "wrote $config (Shopify source dev-shop with a new random secret, unsigned source simple)"
else
    # Keep the secret, follow $PORT. Written via a temp file: no sed -i (GNU/BSD differ).
    tmp=$(mktemp "$dev_dir/stockhook.toml.XXXXXX")
    awk -v listen="listen = \"127.0.0.1:$port\"" \
        '/^listen = / { print listen; next } { print }' "$config" >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$config"
fi

# --- run -----------------------------------------------------------------------------------------
receiver_pid=
worker_pid=
stopping=

# shellcheck disable=SC2317  # called by the traps below
stop() {
    [[ -n $stopping ]] && return
    stopping=1
    local pid
    for pid in $worker_pid $receiver_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Worker first (it is a client of the receiver's queue socket), then the receiver.
    for pid in $worker_pid $receiver_pid; do
        wait "$pid" 2>/dev/null || true
    done
    log "stopped"
}

# shellcheck disable=SC2317  # called by the trap below
on_signal() {
    echo >&2
    log "stopping (SIGTERM to worker and receiver)"
    stop
    exit 130
}
trap on_signal INT TERM
trap stop EXIT

: >"$receiver_log"
: >"$worker_log"

"$receiver" --config "$config" serve >>"$receiver_log" 2>&1 &
receiver_pid=$!

# Wait for "ready addr=<ip:port>", the receiver's promise that it is listening: poll its log
# until a deadline, and give up early if it exits (config error, port in use).
addr=
deadline=$((SECONDS + ready_timeout))
while :; do
    line=$(grep -m1 '^ready addr=' "$receiver_log" || true)
    if [[ -n $line ]]; then
        addr=${line#ready addr=}
        break
    fi
    if ! kill -0 "$receiver_pid" 2>/dev/null; then
        log "stockhook-receiver exited before it was ready; its log ($receiver_log):"
        cat "$receiver_log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "stockhook-receiver not ready after ${ready_timeout}s; its log ($receiver_log):"
        cat "$receiver_log" >&2
        exit 1
    fi
    sleep 0.1
done

"$worker" --config "$config" run >>"$worker_log" 2>&1 &
worker_pid=$!

cat <<EOF

stockhook is running: receiver on http://$addr (pid $receiver_pid), worker (pid $worker_pid).
Logs: $receiver_log, $worker_log    (tail -f $dev_dir/*.log)

Send a signed Shopify test webhook (one variant at 2 units, below the low-stock threshold 5):

  $receiver --config $config sign --source dev-shop --file deploy/samples/low-stock.json --topic products/update

It prints a curl command with the signature headers: run that curl line. Or, unsigned:

  curl -sS http://$addr/webhooks/simple -H 'Content-Type: application/json' \\
       -d '{"ASIN": "B000DEV001", "product_name": "Dev widget", "quantity": 1}'

Alert emails land as .eml files in $dev_dir/mail/ (ls -t $dev_dir/mail/ | head).
Operator CLI: $worker --config $config failed list
              $worker --config $config stats

Ctrl-C stops both.
EOF

# Wait until Ctrl-C, or until one of the two exits on its own (then stop the other).
if ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 3))); then
    # They are this shell's only background jobs, so "the next job to end" is one of them.
    set +e
    wait -n
    status=$?
    set -e
else
    # bash < 4.3 (macOS /bin/bash) has no wait -n: poll; `wait` on a background sleep keeps
    # Ctrl-C immediate.
    while kill -0 "$receiver_pid" 2>/dev/null && kill -0 "$worker_pid" 2>/dev/null; do
        sleep 1 &
        wait $! || true
    done
    status=1
fi
if kill -0 "$receiver_pid" 2>/dev/null; then
    log "stockhook-worker exited (status $status); see $worker_log"
else
    log "stockhook-receiver exited (status $status); see $receiver_log"
fi
stop
exit 1
