#!/usr/bin/env bash
# How long `qdestroy -f` of a large queue (or another command, PURGE) holds the other
# writers of its device.
#
# The release `qmd` runs in a process of its own on a fresh device in a temporary directory:
#   1. queues Q and Q2 of BENCH are filled side by side with N messages of 1 KiB each,
#      1,000 per transaction by 8 clients each (examples/bench_deep.rs fill), so that their
#      records and bodies lie interleaved;
#   2. 64 closed-loop clients make durable enqueue+dequeue pairs on a third queue, Q3, for
#      20 s (examples/bench_peers.rs, BENCH_TIMELINE=1: the longest pair of each half second
#      over 100 ms);
#   3. 4 s into it, `qdestroy -f -y Q2` (or the qmadmin commands in PURGE, run after
#      `qopen BENCH`): its time, then the clients' rate and longest pair.
#
# Run:   bench/purge.sh [N]          (default 500000)
#        QMD=/tmp/old/target/release/qmd bench/purge.sh   measures another qmd binary
#        PURGE="qset Q2; qdeletemsg -y" bench/purge.sh   deletes Q2's messages instead
# Needs about 3 KiB of disk per message under $TMPDIR (default /tmp). Not part of CI.
set -euo pipefail

n=${1:-500000}
purge=${PURGE:-qdestroy -f -y Q2}
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "purge.sh: N '$n' is not a positive whole number (usage: bench/purge.sh [N])" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
echo "building (release)..."
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin \
    --example bench_peers --example bench_deep)
qmd=${QMD:-$release/qmd}
run=$(mktemp -d "${TMPDIR:-/tmp}/qm-purge.XXXXXX")
device=$run/QUE
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -s TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$run"
}
trap cleanup EXIT

"$qmd" "$device" -l 3 -g "$run/qmd.log" >"$run/qmd.out" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$device.sock" ] && break; sleep 0.05; done
admin() { "$release/qmadmin" --no-start -c "$1" "$device"; }
pages=$((4 * n + 100000))
admin "crdl $device 0 $((pages + 100)); qspc BENCH 40000 $pages 6 256 256 $((2 * n + 200000)) \"\" n 16; \
    qopen BENCH; qcr Q fifo none 0 0 100% 0% \"\"; qcr Q2 fifo none 0 0 100% 0% \"\"; \
    qcr Q3 fifo none 0 0 100% 0% \"\"" >/dev/null
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, N = $n, in $run"
BENCH_QUEUE=Q "$release/examples/bench_deep" fill "$device.sock" "$n" | tail -n 1 &
fill=$!
BENCH_QUEUE=Q2 "$release/examples/bench_deep" fill "$device.sock" "$n" | tail -n 1
wait "$fill"
BENCH_TIMELINE=1 BENCH_QUEUE=Q3 "$release/examples/bench_peers" qm "$device.sock" 64 20 \
    >"$run/load.out" 2>"$run/load.err" &
load=$!
sleep 4
start=$(date +%s.%N)
echo "'$purge' at $(date -u +%T.%N | cut -c1-12)"
admin "qopen BENCH; $purge" | tail -n 1
echo "'$purge' of $n messages took $(echo "$(date +%s.%N) - $start" | bc) s"
wait "$load"
echo "64 clients on Q3: $(tail -n 1 "$run/load.out") pairs/s, $(grep 'longest pair' "$run/load.err")"
echo "their half seconds with a pair over 100 ms (from the start of their run; '$purge'"
echo "began at 4 s):"
grep -v 'longest pair' "$run/load.err" | sed 's/^/  /'
echo "what the daemon logged meanwhile:"
grep -i "copied forward" "$run/qmd.log" | sed 's/^/  /' || true
