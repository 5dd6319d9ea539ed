#!/usr/bin/env bash
# What the first start of a new qmd costs on a device an older one filled: a fresh device
# in $TMPDIR (default /tmp) filled with N messages of 1 KiB by OLD_QMD (examples/bench_deep.rs fill), OLD_QMD
# stopped, the release qmd of this tree started on the same device, and then timed: the
# first `qopen; qinfo` (which builds the order tables again when their encoding changed,
# once) and a `qverify` of the queue space after it.
#
# Run:   bench/upgrade.sh OLD_QMD [N]     (default N 1000000)
# Needs about 2.5 KiB of $TMPDIR per message. Not part of CI.
set -euo pipefail

old=$1 n=${2:-1000000}
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin --example bench_deep)

dir=$(mktemp -d "${TMPDIR:-/tmp}/qm-upgrade.XXXXXX")
device=$dir/QUE
pid=''
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; sleep 0.5; fi
    rm -rf "$dir"
}
trap cleanup EXIT

start() {
    "$1" "$device" -l 3 -g "$dir/qmd.log" >>"$dir/qmd.out" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -S "$device.sock" ] && return; sleep 0.05; done
    echo "qmd did not start: $(cat "$dir/qmd.out")" >&2
    exit 1
}

stop() {
    kill "$pid"
    wait "$pid" || true
    pid=''
}

# Seconds the qmadmin command $1 takes, its last lines after.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$release/qmadmin" --no-start "$device" -c "$1" | tail -n 2
    t1=$(date +%s.%N)
    echo "$1: $(echo "$t1 - $t0" | bc) s"
}

start "$old"
pages=$((2 * n + 100000))
"$release/qmadmin" --no-start "$device" -c "crdl $device 0 $((pages + 100)); \
    qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) '' n 16; qopen BENCH; \
    qcreate Q fifo none 0 0 100% 0% ''" >/dev/null
"$release/examples/bench_deep" fill "$device.sock" "$n" | tail -n 1
stop
echo "filled by $old; now $release/qmd"
start "$release/qmd"
timed "qopen BENCH; qinfo Q"
grep -h "ordered its" "$dir/qmd.log" || echo "(the order tables were not built again)"
timed "qopen BENCH; qverify BENCH"
