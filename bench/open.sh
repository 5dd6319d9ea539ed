#!/usr/bin/env bash
# How long a new client waits to open a queue space while a deep queue is under load:
# for each qmd binary given, a fresh device in /tmp filled with N messages of 1 KiB
# (examples/bench_deep.rs fill), then 64 closed-loop clients (examples/bench_peers.rs) for
# 12 s, and meanwhile 40 new clients one after another, each timing its first request
# naming the queue space (examples/bench_deep.rs open: a `begin` on it, then `abort`).
# Prints the 64 clients' pairs/s and the opens' times.
#
# Run:   bench/open.sh QMD [QMD...]   with N=1000000 by default (N=300000 bench/open.sh ...)
# Needs about 2.5 KiB of /tmp per message, one device at a time. Not part of CI.
set -euo pipefail

n=${N:-1000000}
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --bin qmadmin --example bench_peers --example bench_deep)

dir='' pid=''
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; sleep 0.5; fi
    if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

# Fills a device for qmd binary $1, then times the opens under load.
one() {
    dir=$(mktemp -d /tmp/qm-open.XXXXXX)
    "$1" "$dir/QUE" -l 1 -g "$dir/qmd.log" >"$dir/qmd.out" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -S "$dir/QUE.sock" ] && break; sleep 0.05; done
    local pages=$((2 * n + 100000))
    "$release/qmadmin" --no-start "$dir/QUE" -c "crdl $dir/QUE 0 $((pages + 100)); \
      qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) \"\" n 16; qopen BENCH; \
      qcr Q fifo none 0 0 100% 0% \"\"" >/dev/null
    "$release/examples/bench_deep" fill "$dir/QUE.sock" "$n" >/dev/null
    sync
    sleep 2
    "$release/examples/bench_peers" qm "$dir/QUE.sock" 64 12 2>/dev/null | tail -n 1 >"$dir/rate" &
    local load=$!
    sleep 2
    local times=()
    for _ in $(seq 40); do
        times+=("$("$release/examples/bench_deep" open "$dir/QUE.sock")")
        sleep 0.2
    done
    wait "$load"
    printf '%s\n' "${times[@]}" | sort -n | awk -v bin="$1" -v rate="$(cat "$dir/rate")" \
        '{ t[NR] = $1 } END { printf "%s: 64 clients %s pairs/s; 40 opens: min %s median %s p90 %s max %s s\n",
            bin, rate, t[1], t[int(NR / 2)], t[int(NR * 0.9)], t[NR] }'
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=''
    rm -rf "$dir"
    dir=''
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $n queued"
for bin in "$@"; do one "$bin"; done
