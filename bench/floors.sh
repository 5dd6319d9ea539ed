#!/usr/bin/env bash
# The socket floor four ways (examples/socket_floor.rs): a server with nothing in it but
# the durable write, and its client, each either sleeping in recv or waiting on Tokio,
# taken in turn for ROUNDS rounds, each against the disk's limit measured around it.
#
# Run:   bench/floors.sh [SECS [ROUNDS]]   (defaults 3, 3)
# Its files go under $TMPDIR (default /tmp), in a directory the example makes and removes.
# Not part of CI.
set -euo pipefail

secs=${1:-3} rounds=${2:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --example socket_floor)

for round in $(seq "$rounds"); do
    for wait in block tokio-client tokio-server tokio; do
        line=$("$release/examples/socket_floor" "${TMPDIR:-/tmp}" "$secs" "$wait" direct | tail -1)
        echo "round $round, $wait: $line"
    done
done
