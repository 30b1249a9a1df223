#!/bin/sh
# The mpbond demo: builds a lab with two emulated lines, measures them, carries one download
# over both through a converter and a gateway (which need nftables) with a live chart while the
# fast line fails and comes back, and removes the lab.
# Run it as root, or as a user who may use sudo (the binary is built as you, run as root).
set -eu
cd "$(dirname "$0")/.."
. scripts/deps.sh
need_rust
need_packages iproute2:ip nftables:nft
cargo build --release --locked --quiet
if [ "$(id -u)" = 0 ]; then
    exec ./target/release/mpbond demo "$@"
elif command -v sudo >/dev/null 2>&1; then
    exec sudo ./target/release/mpbond demo "$@"
else
    echo "error: the demo builds network namespaces: run it as root (or install sudo)" >&2
    exit 1
fi
