#!/usr/bin/env bash
# Installs a stockhook .deb into a scratch root with dpkg (maintainer scripts run, chrootless,
# with DPKG_ROOT set), checks what it put where with which mode, then starts the installed
# receiver and worker from there on loopback and stops them with SIGTERM.
#
#   deploy/deb/check.sh target/debian/stockhook_0.1.0-1_amd64.deb
#
# Needs dpkg and root (dpkg --root writes its database into the scratch root; nothing outside
# it is touched: no user is created, no unit is enabled).
set -euo pipefail

deb=${1:?usage: check.sh PATH.deb}
root=$(mktemp -d /tmp/stockhook-deb-root.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$root"' EXIT
fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }
mode() { stat -c '%a' "$root$1"; }

mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
echo "== dpkg --root $root -i $deb"
dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null -i "$deb"

echo "== files"
for f in /usr/bin/stockhook-receiver /usr/bin/stockhook-worker; do
    [[ $(mode "$f") == 755 ]] || fail "$f mode $(mode "$f")"
done
for f in /lib/systemd/system/stockhook-receiver.service /lib/systemd/system/stockhook-worker.service; do
    [[ $(mode "$f") == 644 ]] || fail "$f mode"
    grep -q '^ExecStart=/usr/bin/' "$root$f" || fail "$f does not start /usr/bin/..."
    grep -q '^ExecReload=' "$root$f" || fail "$f has no ExecReload="
    ! grep -q '/usr/local/' "$root$f" || fail "$f names /usr/local"
done
[[ $(mode /etc/stockhook/stockhook.toml) == 640 ]] || fail "stockhook.toml mode $(mode /etc/stockhook/stockhook.toml)"
[[ $(mode /etc/stockhook/credentials) == 700 ]] || fail "credentials/ mode"
[[ $(mode /etc/stockhook/secrets.env) == 600 ]] || fail "secrets.env mode $(mode /etc/stockhook/secrets.env)"
for f in /usr/share/doc/stockhook/README.md /usr/share/doc/stockhook/copyright \
    /usr/share/bash-completion/completions/stockhook-worker \
    /usr/share/zsh/vendor-completions/_stockhook-receiver \
    /usr/share/fish/vendor_completions.d/stockhook-worker.fish \
    /usr/share/man/man1/stockhook-worker.1.gz /usr/share/man/man1/stockhook-worker-failed-list.1.gz; do
    [[ -f $root$f ]] || fail "$f missing"
done
dpkg --root="$root" -s stockhook | grep -E '^(Package|Version|Status|Depends):'
grep -qx '/etc/stockhook/stockhook.toml' "$root/var/lib/dpkg/info/stockhook.conffiles" ||
    fail "stockhook.toml is not a conffile"
"$root/usr/bin/stockhook-worker" --version
"$root/usr/bin/stockhook-receiver" --version

echo "== start the installed binaries"
data=$root/var/lib/stockhook
cfg=$root/etc/stockhook/check.toml
cat > "$cfg" <<TOML
data_dir = "$data"
[receiver]
listen = "127.0.0.1:0"
[alerts]
recipients = ["ops@example.com"]
[[sources]]
name = "shop"
platform = "shopify"
scheme = "shopify-hmac"
secrets = ["check-secret"]
TOML
"$root/usr/bin/stockhook-receiver" --config "$cfg" serve > "$root/receiver.out" 2> "$root/receiver.err" &
rx=$!
for _ in $(seq 1 300); do grep -q '^ready addr=' "$root/receiver.out" && break; sleep 0.1; done
addr=$(sed -n 's/^ready addr=//p' "$root/receiver.out")
[[ -n $addr ]] || { cat "$root/receiver.err"; fail "the receiver printed no ready line"; }
curl -fsS "http://$addr/healthz"; echo
"$root/usr/bin/stockhook-worker" --config "$cfg" run > "$root/worker.out" 2> "$root/worker.err" &
wk=$!
for _ in $(seq 1 300); do grep -q '^ready state=' "$root/worker.out" && break; sleep 0.1; done
grep '^ready state=' "$root/worker.out" || { cat "$root/worker.err"; fail "the worker printed no ready line"; }
"$root/usr/bin/stockhook-worker" --config "$cfg" stats | head -3
kill -TERM "$wk"; wait "$wk" || fail "worker exit status $?"
kill -TERM "$rx"; wait "$rx" || fail "receiver exit status $?"
rm -f "$cfg"
echo "== removed and purged"
dpkg --root="$root" --force-script-chrootless --log=/dev/null --purge stockhook
[[ ! -e $root/usr/bin/stockhook-receiver && ! -e $root/etc/stockhook/credentials ]] || fail "purge left files"
echo "check.sh: OK"
