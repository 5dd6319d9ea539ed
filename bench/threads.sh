#!/usr/bin/env bash
# Where the processor time goes with 64 clients, on an empty queue and at depth, side by
# side: two qmds of the same binary, one empty and one filled with N messages of 1 KiB
# (examples/bench_deep.rs fill), and 64 closed-loop clients (examples/bench_peers.rs) run
# SECS on each in turn, ROUNDS times. For each run it prints
#   * pairs/s;
#   * qmd's processor time per pair, by thread (session threads `tokio-rt-worker`, the
#     writer `qm-writer`, the applier `qm-applier`, the rest), from utime + stime of
#     /proc/PID/task/*/stat before and after the run;
#   * the client process's processor time per pair (sampled inside the run);
#   * how busy the machine was (/proc/stat: busy, idle, waiting for I/O);
#   * the journal's syncs per second, their mean length and the jobs each one served on
#     average (two per pair), from qmd's /metrics (qm_journal_sync_seconds);
#   * bytes read from and written to the disk per pair (sectors of DISK in /proc/diskstats,
#     so anything else using the disk meanwhile counts too).
# A thread's figure that stays flat while the rate changes is time that does not follow
# the work; a machine left idle while the rate drops is waiting, not computing.
#
# Run:   bench/threads.sh [N [SECS [ROUNDS]]]     (defaults 1000000, 8, 2)
#        QMD=/tmp/old/target/release/qmd bench/threads.sh   another qmd binary
#        DISK=sda bench/threads.sh     the disk to count (default vda)
# Needs about 2.5 KiB of /tmp per message; not part of CI.
set -euo pipefail

n=${1:-1000000} secs=${2:-8} rounds=${3:-2}
disk=${DISK:-vda}
for v in "$n" "$secs" "$rounds"; do
    if ! [[ $v =~ ^[1-9][0-9]*$ ]]; then
        echo "threads.sh: '$v' is not a positive whole number (usage: bench/threads.sh [N [SECS [ROUNDS]]])" >&2
        exit 2
    fi
done
if ((secs < 3)); then
    echo "threads.sh: SECS must be 3 or more (the client is sampled inside the run)" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin \
    --example bench_peers --example bench_deep)
qmd=${QMD:-$release/qmd}
peers=$release/examples/bench_peers
hz=$(getconf CLK_TCK)

dir=$(mktemp -d /tmp/qm-threads.XXXXXX)
declare -A pid_of port_of
cleanup() {
    for p in "${pid_of[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$dir"
}
trap cleanup EXIT

pages=$((2 * n + 100000))
for side in empty deep; do
    mkdir "$dir/$side"
    device=$dir/$side/QUE
    port_of[$side]=$("$peers" free-port)
    "$qmd" "$device" -l 1 -g "$dir/$side/qmd.log" -w "${port_of[$side]}" 4 qm >"$dir/$side/out" 2>&1 &
    pid_of[$side]=$!
    for _ in $(seq 200); do [ -S "$device.sock" ] && break; sleep 0.05; done
    "$release/qmadmin" --no-start "$device" -c "crdl $device 0 $((pages + 100)); \
        qspc BENCH 40000 $pages 4 256 256 $((n + 200000)) '' n 16; qopen BENCH; \
        qcreate Q fifo none 0 0 100% 0% ''" >/dev/null
done
echo "filling the deep qmd with $n messages..."
"$release/examples/bench_deep" fill "$dir/deep/QUE.sock" "$n" | tail -n 1
sync
sleep 3

# Processor ticks of each thread group of process $1: "group ticks" lines.
threads() {
    local t name
    for t in /proc/"$1"/task/*; do
        name=$(cut -c1-10 "$t/comm")
        case $name in
            tokio-rt-w*) name=sessions ;;
            qm-writer*) name=writer ;;
            qm-applier) name=applier ;;
            *) name=other ;;
        esac
        echo "$name $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat")"
    done | awk '{ a[$1] += $2 } END { for (k in a) print k, a[k] }' | sort
}
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# busy idle iowait, in ticks of the whole machine.
machine() { head -n 1 /proc/stat | awk '{ print $2 + $3 + $4 + $7 + $8, $5, $6 }'; }
# Sectors read and written by the disk.
sectors() { awk -v d="$disk" '$3 == d { print $6, $10 }' /proc/diskstats; }
# Journal syncs and their total seconds, from qmd's metrics.
syncs() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk '/^qm_journal_sync_seconds_count/ { c = $2 } /^qm_journal_sync_seconds_sum/ { s = $2 } END { print c + 0, s + 0 }'
}

printf '%s queued, 64 clients, %s s a run; times in us of processor time per pair\n' "$n" "$secs"
printf '%-6s %8s %9s %7s %8s %6s %7s %7s %5s %5s %5s %8s %7s %6s %7s %7s\n' side pairs/s sessions writer applier other client total busy idle iow syncs/s sync_us jobs read_B write_B
for round in $(seq "$rounds"); do
    # The order alternates (empty first in odd rounds), as in bench/deep.sh: whoever goes
    # first can be favoured.
    order="empty deep"
    ((round % 2)) || order="deep empty"
    for side in $order; do
        sleep 1
        pid=${pid_of[$side]}
        threads "$pid" >"$dir/t0"
        read -r b0 i0 w0 < <(machine)
        read -r c0 s0 < <(syncs "${port_of[$side]}")
        read -r r0 x0 < <(sectors)
        "$peers" qm "$dir/$side/QUE.sock" 64 "$secs" >"$dir/peers.out" 2>/dev/null &
        client=$!
        sleep 0.5
        k0=$(ticks "$client")
        sleep $((secs - 2))
        k1=$(ticks "$client")
        wait "$client"
        threads "$pid" >"$dir/t1"
        read -r b1 i1 w1 < <(machine)
        read -r c1 s1 < <(syncs "${port_of[$side]}")
        read -r r1 x1 < <(sectors)
        rate=$(tail -n 1 "$dir/peers.out" | grep -o '[0-9]*$')
        join "$dir/t0" "$dir/t1" | awk -v side="$side" -v rate="$rate" -v secs="$secs" -v hz="$hz" \
            -v client=$((k1 - k0)) -v window=$((secs - 2)) \
            -v busy=$((b1 - b0)) -v idle=$((i1 - i0)) -v iow=$((w1 - w0)) \
            -v rd=$(((r1 - r0) * 512)) -v wr=$(((x1 - x0) * 512)) -v syncs=$((c1 - c0)) -v sync_s="$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" '
            function per_pair(t, s) { return t / hz * 1e6 / (rate * s) }
            { d[$1] = $3 - $2; total += $3 - $2 }
            END {
                all = busy + idle + iow
                c = per_pair(client, window)
                printf "%-6s %8d %9.1f %7.1f %8.1f %6.1f %7.1f %7.1f %4d%% %4d%% %4d%% %8.0f %7.0f %6.1f %7.0f %7.0f\n",
                    side, rate, per_pair(d["sessions"], secs), per_pair(d["writer"], secs),
                    per_pair(d["applier"], secs), per_pair(d["other"], secs), c,
                    per_pair(total, secs) + c, 100 * busy / all, 100 * idle / all, 100 * iow / all,
                    syncs / secs, syncs ? 1e6 * sync_s / syncs : 0, syncs ? 2 * rate * secs / syncs : 0,
                    rd / (rate * secs), wr / (rate * secs)
            }'
    done
done
