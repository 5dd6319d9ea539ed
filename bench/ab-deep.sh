#!/usr/bin/env bash
# Two qmd binaries at the same depth, at the same moment: each gets a device of its own,
# filled with N messages of 1 KiB (examples/bench_deep.rs fill), then 64 closed-loop
# clients (examples/bench_peers.rs) run on one and then the other, ROUNDS times, the order
# swapped every round. Each run prints pairs/s, the bytes written to the disk per pair
# (sectors written to DISK in /proc/diskstats around the run, so anything else writing
# meanwhile counts too) and qmd's processor time per pair (utime + stime of the process).
#
# Run:   bench/ab-deep.sh OLD_QMD NEW_QMD [N [ROUNDS [SECS]]]   (defaults 1000000, 4, 5)
#        DISK=sda bench/ab-deep.sh ...    the disk to count (default vda)
# The two devices need about 2 x 2.5 KiB per message on /tmp. Not part of CI.
set -euo pipefail

old=$1 new=$2 n=${3:-1000000} rounds=${4:-4} secs=${5:-5}
disk=${DISK:-vda}
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --bin qmadmin --example bench_peers --example bench_deep)

dir=$(mktemp -d /tmp/qm-abdeep.XXXXXX)
declare -A pid_of
cleanup() {
    for p in "${pid_of[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$dir"
}
trap cleanup EXIT

pages=$((2 * n + 100000))
for side in old new; do
    bin=${!side}
    mkdir "$dir/$side"
    "$bin" "$dir/$side/QUE" -l 1 -g "$dir/$side/qmd.log" >"$dir/$side/out" 2>&1 &
    pid_of[$side]=$!
    for _ in $(seq 200); do [ -S "$dir/$side/QUE.sock" ] && break; sleep 0.05; done
    "$release/qmadmin" --no-start "$dir/$side/QUE" -c "crdl $dir/$side/QUE 0 $((pages + 100)); \
        qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) '' n 16; qopen BENCH; \
        qcreate Q fifo none 0 0 100% 0% ''" >/dev/null
    "$release/examples/bench_deep" fill "$dir/$side/QUE.sock" "$n" >/dev/null
done
sync
sleep 2

sectors() { awk -v d="$disk" '$3 == d { print $10 }' /proc/diskstats; }

# One run of the clients against side $1; prints its three figures.
run() {
    local pid=${pid_of[$1]} c0 s0 pairs s1 c1
    c0=$(ticks "$pid")
    s0=$(sectors)
    pairs=$("$release/examples/bench_peers" qm "$dir/$1/QUE.sock" 64 "$secs" 2>/dev/null | tail -1)
    s1=$(sectors)
    c1=$(ticks "$pid")
    awk -v side="$1" -v p="$pairs" -v t="$secs" -v s=$((s1 - s0)) -v c=$((c1 - c0)) \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
            printf "%s %6.0f pairs/s %5.0f B/pair %5.1f us/pair   ", side, p, s * 512 / (p * t),
                c * 1e6 / hz / (p * t) }'
}

echo "$n queued, 64 clients, $secs s a run"
for r in $(seq "$rounds"); do
    if ((r % 2)); then run old; run new; else run new; run old; fi
    echo
done
