#!/usr/bin/env bash
# qexport and qimport of N messages of 1 KiB: issue 12's export and import rates, and the
# round trip checked at that size (order, msgids and every property).
#
# The release `qmd` runs in processes of its own on two fresh devices in a temporary
# directory:
#   1. N messages of 1 KiB are queued on the first, 1,000 per transaction by 8 clients
#      (examples/bench_deep.rs fill);
#   2. `qexport` of its queue space to a file, timed;
#   3. `sync`, then `qimport` of that file into an empty queue space on the second device,
#      timed;
#   4. `qexport` of the second device, and the two streams compared record by record, the
#      header (which names the device and the time) excepted: the same queues and the same
#      messages, in the same order, with the same msgids, properties and bodies;
#   5. `qimport` of the file again, timed: it adds nothing.
#
# Run:   bench/export.sh [N]          (default 1000000)
#        QMD=/tmp/old-target/release/qmd bench/export.sh   measures another qmd binary
# Needs about 5 KiB of disk per message under $TMPDIR (default /tmp). Not part of CI.
set -euo pipefail

n=${1:-1000000}
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "export.sh: N '$n' is not a positive whole number (usage: bench/export.sh [N])" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
qmd=${QMD:-$release/qmd}
base=${TMPDIR:-/tmp}
echo "building (release)..."
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin --example bench_deep)
run=$(mktemp -d "$base/qm-export.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -s TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$run"
}
trap cleanup EXIT

# Starts qmd on device $1 and makes queue space BENCH on it, with queue Q when $2 is set.
device() {
    "$qmd" "$1" -l 1 -g "$1.log" >"$1.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do [ -S "$1.sock" ] && break; sleep 0.05; done
    local pages=$((2 * n + 100000)) queue=""
    [ -n "$2" ] && queue="; qcr Q fifo none 0 0 100% 0% \"\""
    "$release/qmadmin" --no-start "$1" -c "crdl $1 0 $((pages + 100)); \
        qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) \"\" n 16; qopen BENCH$queue" >/dev/null
}
timed() {
    local t=$EPOCHREALTIME
    "$@" >/dev/null
    awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}
rate() { awk -v n="$n" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }

device "$run/A" q
device "$run/B" ""
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, N = $n, in $run"
"$release/examples/bench_deep" fill "$run/A.sock" "$n" | tail -n 1
s=$(timed "$release/qmadmin" --no-start "$run/A" -c "qopen BENCH; qexport $run/a.qmx")
echo "qexport: $n messages in $s s: $(rate "$s") messages/s ($(du -m "$run/a.qmx" | cut -f1) MiB)"
# What the fill and the export left in the page cache goes to disk first, so that the
# import is not timed against their write-out.
sync
s=$(timed "$release/qmadmin" --no-start "$run/B" -c "qopen BENCH; qimport $run/a.qmx")
echo "qimport: $n messages in $s s: $(rate "$s") messages/s"
"$release/qmadmin" --no-start "$run/B" -c "qopen BENCH; qexport $run/b.qmx" >/dev/null
python3 - "$run/a.qmx" "$run/b.qmx" <<'PY'
import struct, sys
def records(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"QMEXPORT"
        while True:
            head = f.read(5)
            if not head:
                return
            kind, length = head[0:1], struct.unpack(">I", head[1:5])[0]
            payload = f.read(length)
            f.read(4)
            yield kind, payload
a, b = records(sys.argv[1]), records(sys.argv[2])
n = 0
for (ka, pa), (kb, pb) in zip(a, b):
    if ka == b"H":
        continue
    assert (ka, pa) == (kb, pb), f"record {n} differs: {ka} {pa[:200]} / {kb} {pb[:200]}"
    n += 1
assert next(a, None) is None and next(b, None) is None, "one stream is longer"
print(f"round trip: the second export matches the first, record for record ({n:,} records after the header)")
PY
s=$(timed "$release/qmadmin" --no-start "$run/B" -c "qopen BENCH; qimport $run/a.qmx")
held=$("$release/qmadmin" --no-start "$run/B" -c "qopen BENCH; qinfo Q" | awk -F'|' '$1 ~ /^ *Q *$/ {gsub(/ /, "", $2); print $2}')
echo "qimport again: $s s ($(rate "$s") messages/s checked), $held messages on Q afterwards"
