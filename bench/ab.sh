#!/usr/bin/env bash
# Two qmd binaries, same moment, same client: alternates runs of examples/bench_peers
# against each (who goes first alternating by round), on a fresh device in /tmp every
# time, and prints pairs/s side by side.
#
# Run:   bench/ab.sh OLD_QMD NEW_QMD [CLIENTS [ROUNDS [SECS]]]   (defaults 1, 3, 4)
# Build an older qmd with: git worktree add /tmp/old COMMIT &&
#   (cd /tmp/old && cargo build --release --bin qmd)   -> /tmp/old/target/release/qmd
# Not part of CI.
set -euo pipefail

old=$1 new=$2 clients=${3:-1} rounds=${4:-3} secs=${5:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --bin qmadmin --example bench_peers)

# Runs the closed loop against qmd binary $1; prints pairs/s.
one() {
    local dir pid
    dir=$(mktemp -d /tmp/qm-ab.XXXXXX)
    "$1" "$dir/QUE" -l 1 -g "$dir/qmd.log" >"$dir/qmd.out" &
    pid=$!
    for _ in $(seq 100); do [ -S "$dir/QUE.sock" ] && break; sleep 0.05; done
    "$release/qmadmin" --no-start "$dir/QUE" -c "crdl $dir/QUE 0 200000; \
        qspc BENCH 40001 50000 4 64 64 100000 '' n 16; qopen BENCH; \
        qcreate Q fifo none 0 0 100% 0% ''" >/dev/null
    "$release/examples/bench_peers" qm "$dir/QUE.sock" "$clients" "$secs" | tail -1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

# Whoever runs first in a round can be favoured (the disk's state, a checkpoint left by
# the run before), so the order alternates: old first in odd rounds, new first in even.
echo "clients $clients, $secs s per run"
for round in $(seq "$rounds"); do
    if ((round % 2)); then
        first=old a=$(one "$old") b=$(one "$new")
    else
        first=new b=$(one "$new") a=$(one "$old")
    fi
    printf 'round %d (%s first): old %s  new %s\n' "$round" "$first" "$a" "$b"
done
