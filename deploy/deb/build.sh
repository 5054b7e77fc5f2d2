#!/usr/bin/env bash
# Builds the stockhook .deb: both binaries (`--profile dist`), the units, the example config,
# completions and man pages, and the maintainer scripts in this directory.
#
#   deploy/deb/build.sh                 build the binaries, then target/debian/stockhook_<v>_<arch>.deb
#   deploy/deb/build.sh --no-build      package binaries already built with --profile dist
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). The units in deploy/ name
# /usr/local/bin (install.sh's layout); the package installs to /usr/bin, so the units and the
# doc paths are rewritten here, into target/stockhook-deb/, which receiver/Cargo.toml's
# [package.metadata.deb] assets point at. One source of truth for the units: deploy/*.service.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
out=$repo/target/stockhook-deb
build=1
[[ ${1:-} == --no-build ]] && build=

if [[ -n $build ]]; then
    cargo build --profile dist --locked -p stockhook-receiver -p stockhook-worker
fi
bins=$target/dist
for b in stockhook-receiver stockhook-worker; do
    [[ -x $bins/$b ]] || { echo "build.sh: $bins/$b is missing: cargo build --profile dist first" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out/units" "$out/completions/bash" "$out/completions/zsh" "$out/completions/fish" "$out/man"
for u in stockhook-receiver.service stockhook-worker.service; do
    sed -e 's#/usr/local/bin/#/usr/bin/#g' \
        -e 's#file:///usr/local/share/doc/stockhook/README.md#file:///usr/share/doc/stockhook/README.md#' \
        -e 's#^\# Installed by deploy/install.sh; see deploy/README.md.#\# Installed by the stockhook package; see /usr/share/doc/stockhook/README.md.#' \
        "deploy/$u" > "$out/units/$u"
    grep -q '/usr/local/' "$out/units/$u" && { echo "build.sh: $u still names /usr/local" >&2; exit 1; }
done
for b in stockhook-receiver stockhook-worker; do
    "$bins/$b" completions bash > "$out/completions/bash/$b"
    "$bins/$b" completions zsh > "$out/completions/zsh/_$b"
    "$bins/$b" completions fish > "$out/completions/fish/$b.fish"
    "$bins/$b" man --dir "$out/man"
done
gzip -9n "$out"/man/*.1

cargo deb --no-build --profile dist -p stockhook-receiver --output "$repo/target/debian/"
