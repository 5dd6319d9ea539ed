#!/usr/bin/env bash
# qm side by side with Redis and PostgreSQL on this machine, in one run.
#
# The same workload for all three: closed-loop clients (1, 8 and 64), each on its own
# connection, enqueueing a 1 KiB body and dequeueing one, over and over; every enqueue and
# every dequeue is durable before it is acknowledged. The figure is pairs per second.
#   qm          the release `qmd` in a process of its own, clients on its control socket
#   Redis       redis-server with appendonly yes, appendfsync always; LPUSH + RPOP
#   PostgreSQL  postgres with its defaults (fsync, synchronous_commit on); a queue table,
#               INSERT + DELETE ... FOR UPDATE SKIP LOCKED, each its own transaction
# Redis and PostgreSQL listen on a free port of 127.0.0.1. The clients are
# examples/bench_peers.rs, in another process; the disk's own limit (p50 of a 1 KiB write +
# fdatasync to a preallocated file, one pair per two of them) is examples/disk_limit.rs,
# measured in the same directory, and so is examples/socket_floor.rs: a server that does
# nothing but one durable write per request, the most one client can get through a socket
# here (skipped where direct writes are refused, on tmpfs for one). Each server gets a private data directory under one
# temporary directory in /tmp, is stopped by its pid when its turn ends (or when the script
# exits), and the directory is removed. A server that is not installed is skipped.
#
# Needs, on Debian:   apt-get install redis-server postgresql
# Run:                bench/peers.sh [SECS]     (SECS per point, default 3)
# As root, PostgreSQL runs as the `postgres` user the package creates (it refuses root).
# Not part of CI: figures belong in BENCHMARKS.md, not in tests.
set -euo pipefail

secs=${1:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
client_counts=(1 8 64)

echo "building (release)..."
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin \
    --example bench_peers --example disk_limit --example socket_floor)
peers=$release/examples/bench_peers

run=$(mktemp -d /tmp/qm-peers.XXXXXX)
declare -A stop_signal=() # pid -> signal that stops that server cleanly
declare -A rate=()        # server:clients -> pairs/s

# Stops the server with pid $1 and waits for it to end.
stop() {
    kill -s "${stop_signal[$1]}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    unset "stop_signal[$1]"
}

cleanup() {
    for pid in "${!stop_signal[@]}"; do stop "$pid"; done
    rm -rf "$run"
}
trap cleanup EXIT

# Waits until the command "$2"... succeeds, while the server with pid $1 lives (30 s at most).
wait_until() {
    local pid=$1
    shift
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Runs the clients of server $1 (qm, redis or postgres) reaching it at $2 at each count.
measure() {
    local n
    for n in "${client_counts[@]}"; do
        if ! rate[$1:$n]=$("$peers" "$1" "$2" "$n" "$secs" 2>>"$run/clients.log"); then
            rate[$1:$n]=failed
            echo "$1 with $n clients failed:" >&2
            tail -n 5 "$run/clients.log" >&2
        fi
    done
}

run_qm() {
    local dir=$run/qm
    local device=$dir/QUE
    mkdir -m 700 "$dir"
    "$release/qmd" "$device" -l 1 -g "$dir/qmd.log" >"$dir/qmd.out" &
    local pid=$!
    stop_signal[$pid]=TERM
    if ! wait_until "$pid" test -S "$device.sock"; then
        echo "qm: qmd did not start; its log:" >&2
        cat "$dir/qmd.log" >&2
        return
    fi
    "$release/qmadmin" --no-start -c "crdl $device 0 30000; \
        qspc BENCH 40000 20000 4 256 256 20000 \"\" n 16; qopen BENCH; \
        qcr Q fifo none 0 0 100% 0% \"\"" "$device" >"$dir/setup.log"
    versions+=("qm $("$release/qmd" --version | cut -d' ' -f2)")
    measure qm "$device.sock"
    stop "$pid"
}

run_redis() {
    if ! command -v redis-server >/dev/null; then
        echo "Redis: skipped, redis-server is not installed (apt-get install redis-server)"
        return
    fi
    local dir=$run/redis port
    port=$("$peers" free-port)
    mkdir -m 700 "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --logfile "$dir/redis.log" \
        --appendonly yes --appendfsync always --save "" --daemonize no &
    local pid=$!
    stop_signal[$pid]=TERM
    if ! wait_until "$pid" redis-cli -p "$port" ping; then
        echo "Redis: redis-server did not start; its log:" >&2
        cat "$dir/redis.log" >&2
        return
    fi
    versions+=("Redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')")
    measure redis "$port"
    stop "$pid"
}

run_postgres() {
    local bin
    bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] && command -v initdb >/dev/null; then
        bin=$(dirname "$(command -v initdb)")
    fi
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "PostgreSQL: skipped, its server is not installed (apt-get install postgresql)"
        return
    fi
    local dir=$run/postgres port
    local as_postgres=()
    port=$("$peers" free-port)
    mkdir -m 700 "$dir"
    if [ "$(id -u)" = 0 ]; then
        as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)
        chown postgres: "$dir"
        chmod 711 "$run"
    fi
    (cd "$dir" && "${as_postgres[@]}" "$bin/initdb" -D "$dir/data" -U bench -A trust \
        >"$dir/initdb.log" 2>&1) || {
        echo "PostgreSQL: initdb failed; its output:" >&2
        cat "$dir/initdb.log" >&2
        return
    }
    (cd "$dir" && exec "${as_postgres[@]}" "$bin/postgres" -D "$dir/data" -p "$port" \
        -k "$dir" -c listen_addresses=127.0.0.1 2>"$dir/postgres.log") &
    local pid=$!
    stop_signal[$pid]=INT # fast shutdown: roll back open transactions, then stop
    if ! wait_until "$pid" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        echo "PostgreSQL: postgres did not start; its log:" >&2
        cat "$dir/postgres.log" >&2
        return
    fi
    versions+=("PostgreSQL $("$bin/postgres" --version | awk '{print $3}')")
    measure postgres "$port"
    stop "$pid"
}

# 12345.6 -> 12,346; anything else unchanged.
grouped() {
    case $1 in
    [0-9]*) printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;;
    *) printf '%s' "$1" ;;
    esac
}

# qm's rate over another's, or a dash when either is missing.
ratio() {
    case "$1/$2" in
    [0-9]*/[0-9]*) awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' ;;
    *) printf '–' ;;
    esac
}

versions=()
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$secs s per point, in $run ($(df -T "$run" | awk 'NR == 2 {print $2}'))"
disk=$("$release/examples/disk_limit" "$run" 2)
echo "$disk"
limit=$(sed -n 's/.*overwrites): \([0-9]*\) pairs.*/\1/p' <<<"$disk")
run_qm
run_redis
run_postgres
# Last, so that its files' writes do not weigh on the servers' runs.
floor_said=$("$release/examples/socket_floor" "$run" "$secs" block direct 2>/dev/null || true)
floor=$(sed -n 's/.*floor (block, direct) \([0-9]*\) pairs.*/\1/p' <<<"$floor_said")
[ -n "$floor" ] && echo "socket floor: $floor_said"
echo "servers: ${versions[*]}"
echo
echo "| clients | qm | Redis AOF always | PostgreSQL SKIP LOCKED | qm / Redis | qm / PostgreSQL |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${client_counts[@]}"; do
    qm=${rate[qm:$n]:-–} redis=${rate[redis:$n]:-–} postgres=${rate[postgres:$n]:-–}
    echo "| $n | $(grouped "$qm") | $(grouped "$redis") | $(grouped "$postgres") |" \
        "$(ratio "$qm" "$redis") | $(ratio "$qm" "$postgres") |"
done
echo
echo "qm with 1 client: $(ratio "${rate[qm:1]:-–}" "$limit") of the disk's single-client limit" \
    "($(grouped "$limit") pairs/s)"
if [ -n "$floor" ]; then
    echo "qm with 1 client: $(ratio "${rate[qm:1]:-–}" "$floor") of the socket floor" \
        "($(grouped "$floor") pairs/s, measured after the servers)"
fi
