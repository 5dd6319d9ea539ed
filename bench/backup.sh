#!/usr/bin/env bash
# qbackup and qrestore of a device holding N messages of 1 KiB, with and without load:
# issue 12's figures, measured in one run.
#
# The release `qmd` runs in a process of its own on a fresh device in a temporary directory:
#   1. N messages of 1 KiB are queued, 1,000 per transaction by 8 clients
#      (examples/bench_deep.rs fill);
#   2. `qbackup` of the quiet device: its time, MB/s of the copies, and the longest time
#      writers were held (from its JSON report);
#   3. 64 closed-loop clients making durable enqueue+dequeue pairs of 1 KiB for 10 s alone
#      (examples/bench_peers.rs): their rate and the longest any of them waited for a pair;
#   4. `qbackup` again while the same clients run for 30 s, with their rate and longest
#      wait over the run (the backup's copy and the catching up after it included);
#   5. `qrestore` of the first backup to a new device, timed.
#
# Run:   bench/backup.sh [N]          (default 1000000)
#        BENCH_TIMELINE=1 bench/backup.sh   also shows when, during the run under load,
#                                           the clients waited longest
#        QMD=/tmp/old/target/release/qmd bench/backup.sh   measures another qmd binary
# Needs about 6 KiB of disk per message under $TMPDIR (default /tmp): the device, two
# backups and a restored copy. Not part of CI: figures belong in BENCHMARKS.md.
set -euo pipefail

n=${1:-1000000}
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "backup.sh: N '$n' is not a positive whole number (usage: bench/backup.sh [N])" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
base=${TMPDIR:-/tmp}
need=$((n * 6144 + (1 << 30)))
avail=$(df -B1 --output=avail "$base" | tail -n 1 | tr -d ' ')
if ((avail < need)); then
    echo "backup.sh: refusing to start: $n messages need about $((need >> 30)) GiB under" \
        "$base, which has $((avail >> 30)) GiB free" >&2
    exit 1
fi

echo "building (release)..."
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin \
    --example bench_peers --example bench_deep)
qmd=${QMD:-$release/qmd}
run=$(mktemp -d "$base/qm-backup.XXXXXX")
device=$run/QUE
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -s TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$run"
}
trap cleanup EXIT

"$qmd" "$device" -l 1 -g "$run/qmd.log" >"$run/qmd.out" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$device.sock" ] && break; sleep 0.05; done
admin() { "$release/qmadmin" --no-start -c "$1" "$device"; }
pages=$((2 * n + 100000))
admin "crdl $device 0 $((pages + 100)); qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) \"\" n 16; \
    qopen BENCH; qcr Q fifo none 0 0 100% 0% \"\"" >/dev/null
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, N = $n, in $run"
"$release/examples/bench_deep" fill "$device.sock" "$n" | tail -n 1

# Prints the figures of one qbackup from its JSON report.
report() {
    python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.find("{"):])
size = sum(f["bytes"] + sum(s["bytes"] for s in f.get("segments", [])) for f in r["manifest"]["files"])
secs = r["millis"] / 1000
msgs = sum(q["messages"] for q in r["manifest"]["qspaces"])
print(f"  {msgs:,} messages, {size / 1e6:,.0f} MB of copies in {secs:.1f} s: {size / 1e6 / secs:,.0f} MB/s;"
      f" writers held at most {r['manifest']['longest_pause_us'] / 1000:.2f} ms for the snapshot;"
      f" the longest pause of a writer during the backup {r['manifest'].get('longest_writer_pause_us', 0) / 1000:.1f} ms")
PY
}

echo "qbackup of the quiet device:"
admin "qbackup -y --json $run/quiet" >"$run/quiet.json"
report "$run/quiet.json"

echo "64 clients alone for 10 s (closed loops of 1 KiB pairs on the same queue):"
"$release/examples/bench_peers" qm "$device.sock" 64 10 >"$run/alone.txt" 2>&1
echo "  $(tail -n 1 "$run/alone.txt") pairs/s; $(grep 'longest pair' "$run/alone.txt")"

echo "qbackup under 64 clients (the same loops):"
clients_start=$EPOCHREALTIME
"$release/examples/bench_peers" qm "$device.sock" 64 30 >"$run/load.txt" 2>&1 &
load=$!
sleep 3
since_clients() { awk -v a="$clients_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
backup_start=$(since_clients)
admin "qbackup -y --json $run/loaded" >"$run/loaded.json"
backup_end=$(since_clients)
report "$run/loaded.json"
wait "$load"
echo "  the clients' rate over their 30 s, the backup's included: $(tail -n 1 "$run/load.txt") pairs/s;" \
    "$(grep 'longest pair' "$run/load.txt") (the longest any client waited)"
# BENCH_TIMELINE=1: when the clients waited longest, against the backup's start and end.
if [ -n "${BENCH_TIMELINE:-}" ]; then
    echo "  the backup ran from ${backup_start} s to ${backup_end} s of the clients' run; their longest pair so far:"
    grep 'a pair took' "$run/load.txt" | sed 's/^/    /'
fi

mkdir "$run/restored"
t=$EPOCHREALTIME
admin "qrestore $run/quiet $run/restored/QUE" >/dev/null
echo "qrestore of the first backup: $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s (copy, new identity, check)"
