#!/usr/bin/env bash
# Installs stockhook as two systemd services. Idempotent: running it again (an upgrade) replaces
# the binaries, units and docs, and never touches an existing config, credentials or data.
#
#   sudo deploy/install.sh                      build (cargo build --release) and install
#   sudo deploy/install.sh --bin-dir DIR        install DIR/stockhook-receiver and DIR/stockhook-worker
#   deploy/install.sh --dry-run                 print what would be done, change nothing
#   deploy/install.sh --root DIR --bin-dir D    install under DIR instead of / (tests, packaging):
#                                               no useradd, no chown, no systemctl
#
# DESTDIR=DIR in the environment is the same as --root DIR.
#
# What it installs (paths under the root):
#   /usr/local/bin/stockhook-receiver, /usr/local/bin/stockhook-worker          0755
#   /etc/systemd/system/stockhook-receiver.service, stockhook-worker.service    0644
#   /etc/stockhook/stockhook.toml           from deploy/stockhook.toml.example, only if absent
#                                           (root:stockhook 0640: it may hold secrets by value)
#   /etc/stockhook/stockhook.toml.example   always refreshed, to compare with after upgrades
#   /etc/stockhook/credentials/             root 0700: secrets for LoadCredential=
#   /etc/stockhook/secrets.env              only if absent, root 0600: EnvironmentFile=
#   /usr/local/share/doc/stockhook/README.md
# and the system user and group "stockhook" (home /var/lib/stockhook, no login shell).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$src")

bin_dir=
root=${DESTDIR:-}
dry_run=

while (($#)); do
    case $1 in
        --bin-dir) [[ $# -ge 2 ]] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
        --bin-dir=*) bin_dir=${1#*=}; shift ;;
        --root | --destdir) [[ $# -ge 2 ]] || die "$1 needs a directory"; root=$2; shift 2 ;;
        --root=* | --destdir=*) root=${1#*=}; shift ;;
        -n | --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# An absolute root without a trailing slash; "" means the real system.
if [[ -n $root ]]; then
    [[ $root == / ]] && root=
fi
if [[ -n $root ]]; then
    if [[ -z $dry_run ]]; then
        mkdir -p "$root"
    fi
    [[ -d $root || -n $dry_run ]] || die "cannot create root $root"
    [[ $root == /* ]] || root=$PWD/$root
    root=${root%/}
fi
if [[ -n $bin_dir ]]; then
    [[ -d $bin_dir ]] || die "--bin-dir $bin_dir is not a directory"
    bin_dir=$(cd "$bin_dir" && pwd)
fi

system=                # non-empty: installing onto this machine for real
[[ -z $root ]] && system=1
if [[ -n $system && -z $dry_run && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 ...), or pass --root DIR to install into a directory, or --dry-run"
fi
# chown/chgrp only when we are root and the target is this system (its stockhook group exists).
owners=
[[ $EUID -eq 0 && -n $system ]] && owners=1

# --- helpers: every change goes through run(), which --dry-run turns into a print ---------------
run() {
    if [[ -n $dry_run ]]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

say() { printf '%s\n' "$*"; }

# install_file MODE SRC DEST [GROUP]: copy, replacing DEST atomically (install(1) unlinks first,
# so a running binary is not overwritten in place).
install_file() {
    local mode=$1 from=$2 to=$3 group=${4:-root}
    local args=(-m "$mode")
    [[ -n $owners ]] && args+=(-o root -g "$group")
    run install "${args[@]}" "$from" "$to"
}

# install_dir MODE DIR: create if missing, and (re)set its mode (and owner when root).
install_dir() {
    local mode=$1 dir=$2
    local args=(-d -m "$mode")
    [[ -n $owners ]] && args+=(-o root -g root)
    run install "${args[@]}" "$dir"
}

# --- 1. binaries ----------------------------------------------------------------------------------
if [[ -z $bin_dir ]]; then
    command -v cargo >/dev/null || die "cargo not found: build first as your user (cargo build --release) and pass --bin-dir $repo/target/release"
    say "building release binaries in $repo"
    run cargo build --release --locked --manifest-path "$repo/Cargo.toml" \
        -p stockhook-receiver -p stockhook-worker
    bin_dir=$repo/target/release
fi
for b in stockhook-receiver stockhook-worker; do
    if [[ ! -x $bin_dir/$b && -z $dry_run ]]; then
        die "$bin_dir/$b is missing or not executable"
    fi
done

install_dir 0755 "$root/usr/local/bin"
for b in stockhook-receiver stockhook-worker; do
    install_file 0755 "$bin_dir/$b" "$root/usr/local/bin/$b"
done

# --- 2. user and group ---------------------------------------------------------------------------
if [[ -n $system ]]; then
    if getent group stockhook >/dev/null; then
        say "group stockhook exists"
    else
        run groupadd --system stockhook
    fi
    if getent passwd stockhook >/dev/null; then
        say "user stockhook exists"
    else
        nologin=/usr/sbin/nologin
        [[ -x $nologin ]] || nologin=/sbin/nologin
        run useradd --system --gid stockhook --home-dir /var/lib/stockhook --no-create-home \
            --shell "$nologin" --comment "stockhook webhook pipeline" stockhook
    fi
else
    say "skipping user/group creation (--root $root)"
fi

# --- 3. systemd units ----------------------------------------------------------------------------
install_dir 0755 "$root/etc/systemd/system"
for u in stockhook-receiver.service stockhook-worker.service; do
    install_file 0644 "$src/$u" "$root/etc/systemd/system/$u"
done

# --- 4. configuration, credentials, docs ---------------------------------------------------------
install_dir 0755 "$root/etc/stockhook"
install_file 0644 "$src/stockhook.toml.example" "$root/etc/stockhook/stockhook.toml.example"
config_group=root
[[ -n $owners ]] && config_group=stockhook
if [[ -e $root/etc/stockhook/stockhook.toml ]]; then
    say "keeping existing $root/etc/stockhook/stockhook.toml (compare with stockhook.toml.example next to it)"
else
    # With --dry-run on a fresh system the group does not exist yet: install would fail, run() only prints.
    install_file 0640 "$src/stockhook.toml.example" "$root/etc/stockhook/stockhook.toml" "$config_group"
fi

install_dir 0700 "$root/etc/stockhook/credentials"

if [[ -e $root/etc/stockhook/secrets.env ]]; then
    say "keeping existing $root/etc/stockhook/secrets.env"
else
    secrets_template=$(mktemp)
    trap 'rm -f "$secrets_template"' EXIT
    cat >"$secrets_template" <<'EOF'
# Environment for stockhook-receiver and stockhook-worker (EnvironmentFile= in both units).
# Read by systemd as root: keep this file root-only (0600). One VAR=value per line, no quotes
# needed. For the config keys that only take an environment variable:
#
# SMTP_URL=smtps://alerts%40example.com:app-password@smtp.example.com:465   (email.smtp_url_env)
# EBAY_VERIFICATION_TOKEN=...     (verification_token_env)
# EBAY_CLIENT_SECRET=PRD-...      (client_secret_env)
# EBAY_CERT_ID=PRD-...            (cert_id_env)
EOF
    install_file 0600 "$secrets_template" "$root/etc/stockhook/secrets.env"
fi

install_dir 0755 "$root/usr/local/share/doc/stockhook"
install_file 0644 "$src/README.md" "$root/usr/local/share/doc/stockhook/README.md"

# --- 5. systemd ----------------------------------------------------------------------------------
if [[ -n $system ]]; then
    if [[ -d /run/systemd/system ]]; then
        run systemctl daemon-reload
    else
        say "systemd is not running here: skipping systemctl daemon-reload"
    fi
else
    say "skipping systemctl daemon-reload (--root $root)"
fi

# --- next steps ----------------------------------------------------------------------------------
cat <<EOF

stockhook ${dry_run:+would be }installed${root:+ under $root}${dry_run:+ (dry run: nothing was changed)}. Next:

  1. Edit /etc/stockhook/stockhook.toml: keep only the [[sources]] you use, set
     [alerts] recipients and [email] (smtp_url_env, or no SMTP: emails go to
     /var/lib/stockhook/mail/). Check it:
       sudo systemd-run --pipe --wait --quiet -p User=stockhook \\
         -p LoadCredential=stockhook:/etc/stockhook/credentials \\
         -p EnvironmentFile=-/etc/stockhook/secrets.env \\
         /usr/local/bin/stockhook-receiver --config /etc/stockhook/stockhook.toml check-config
  2. Put each secret in its own file (one secret per line, two while rotating):
       sudo install -m 0600 /dev/null /etc/stockhook/credentials/shopify-secret
       sudoedit /etc/stockhook/credentials/shopify-secret
     and reference it as secrets_file = "\${CREDENTIALS_DIRECTORY}/stockhook_shopify-secret".
     Variables (SMTP_URL, eBay tokens) go in /etc/stockhook/secrets.env.
  3. Start, and start at boot:
       sudo systemctl enable --now stockhook-receiver stockhook-worker
       journalctl -u stockhook-receiver -u stockhook-worker -f

See /usr/local/share/doc/stockhook/README.md (upgrades, secret rotation, replays, backups).
EOF
