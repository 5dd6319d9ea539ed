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
# here, once with both sides sleeping in recv and once with both on Tokio, as qmd and the
# clients are (skipped where direct writes are refused, on tmpfs for one). Each server gets
# a private data directory under one temporary directory in /tmp, is stopped by its pid
# when its turns end (or when the script exits), and the directory is removed. A server
# that is not installed is skipped.
#
# The disk's speed drifts from one minute to the next here, so qm and Redis, whose ratios
# are issue 11's targets, take turns: ROUNDS rounds (default 3) at each client count, qm
# first in odd rounds and Redis first in even ones, and at one client the disk's limit
# measured just before the round. Each ratio is the median of the rounds' ratios, and the
# table's rates are medians too. PostgreSQL runs after them, once per count.
#
# Needs, on Debian:   apt-get install redis-server postgresql
# Run:                bench/peers.sh [SECS]     (SECS per point, default 3)
#                     ROUNDS=5 bench/peers.sh 5
# As root, PostgreSQL runs as the `postgres` user the package creates (it refuses root).
# Not part of CI: figures belong in BENCHMARKS.md, not in tests.
set -euo pipefail

secs=${1:-3}
rounds=${ROUNDS:-3}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
    echo "peers.sh: ROUNDS must be a positive whole number, not '$rounds'" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
release=${CARGO_TARGET_DIR:-$repo/target}/release
client_counts=(1 8 64)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"

echo "building (release)..."
(cd "$repo" && cargo build --quiet --release --bin qmd --bin qmadmin \
    --example bench_peers --example disk_limit --example socket_floor)
peers=$release/examples/bench_peers

run=$(mktemp -d /tmp/qm-peers.XXXXXX)
declare -A stop_signal=() # pid -> signal that stops that server cleanly
declare -A rate=()        # server:clients -> pairs/s (the median of its rounds)
declare -A said=()        # server:clients:round -> pairs/s, or "failed"
declare -A target=()      # server -> where its clients reach it
declare -A pid_of=()      # server -> its pid

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

# Runs $2 clients of server $1 (qm, redis or postgres) for one point; prints pairs/s.
measure() {
    local got
    if got=$("$peers" "$1" "${target[$1]}" "$2" "$secs" 2>>"$run/clients.log"); then
        echo "$got"
    else
        echo "$1 with $2 clients failed:" >&2
        tail -n 5 "$run/clients.log" >&2
        echo failed
    fi
}

start_qm() {
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
    target[qm]=$device.sock pid_of[qm]=$pid
}

start_redis() {
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
    target[redis]=$port pid_of[redis]=$pid
}

start_postgres() {
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
    target[postgres]=$port pid_of[postgres]=$pid
}

# A ratio with two decimals, or a dash when there is none.
two() {
    case $1 in
    [0-9]*) printf '%.2f' "$1" ;;
    *) printf '–' ;;
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
    "$secs s per point, $rounds rounds, in $run ($(df -T "$run" | awk 'NR == 2 {print $2}'))"
start_qm
start_redis
turns=()
for server in qm redis; do
    if [ -n "${target[$server]:-}" ]; then turns+=("$server"); fi
done
declare -A over_redis=() # clients -> the rounds' qm / Redis
limits=() over_limit=()  # at one client, each round's disk limit and qm / that limit
for n in "${client_counts[@]}"; do
    for r in $(seq "$rounds"); do
        line="$n client$([ "$n" = 1 ] || echo s), round $r:"
        lim=
        if [ "$n" = 1 ]; then
            lim=$("$release/examples/disk_limit" "$run" 1 |
                sed -n 's/.*overwrites): \([0-9]*\) pairs.*/\1/p')
            limits+=("$lim")
            line+=" disk limit $(grouped "$lim"),"
        fi
        # Who goes first alternates, and each turn starts a second after the last one
        # ended, so that neither server runs in what the other left behind (qmd's idle
        # checkpoint, Redis's rewrite of its append-only file).
        order=("${turns[@]}")
        if ((r % 2 == 0 && ${#turns[@]} == 2)); then order=("${turns[1]}" "${turns[0]}"); fi
        for server in "${order[@]}"; do
            sleep 1
            said[$server:$n:$r]=$(measure "$server" "$n")
            line+=" $server $(grouped "${said[$server:$n:$r]}")"
        done
        qm=${said[qm:$n:$r]:-} redis=${said[redis:$n:$r]:-}
        over_redis[$n]+=" $(ratio "$qm" "$redis")"
        if [ -n "$lim" ]; then over_limit+=("$(ratio "$qm" "$lim")"); fi
        echo "$line"
    done
    for server in "${turns[@]}"; do
        all=()
        for r in $(seq "$rounds"); do all+=("${said[$server:$n:$r]}"); done
        rate[$server:$n]=$(median "${all[@]}")
        [ -n "${rate[$server:$n]}" ] || rate[$server:$n]=failed
    done
done
for server in "${turns[@]}"; do stop "${pid_of[$server]}"; done
start_postgres
if [ -n "${target[postgres]:-}" ]; then
    for n in "${client_counts[@]}"; do rate[postgres:$n]=$(measure postgres "$n"); done
    stop "${pid_of[postgres]}"
fi
# Last, so that its files' writes do not weigh on the servers' runs.
# Twice: both sides sleeping in recv, and both on Tokio as qmd and bench_peers are.
declare -A floor
for wait in block tokio; do
    said=$("$release/examples/socket_floor" "$run" "$secs" "$wait" direct 2>/dev/null || true)
    floor[$wait]=$(sed -n "s/.*floor ($wait, direct) \([0-9]*\) pairs.*/\1/p" <<<"$said")
    [ -n "${floor[$wait]}" ] && echo "socket floor: $said"
done
echo "servers: ${versions[*]}"
echo
echo "Rates: the median of the rounds (PostgreSQL: one run). qm / Redis: the median of the"
echo "rounds' ratios."
echo
echo "| clients | qm | Redis AOF always | PostgreSQL SKIP LOCKED | qm / Redis | qm / PostgreSQL |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${client_counts[@]}"; do
    qm=${rate[qm:$n]:-–} redis=${rate[redis:$n]:-–} postgres=${rate[postgres:$n]:-–}
    # shellcheck disable=SC2086 # the rounds' ratios, one word each
    echo "| $n | $(grouped "$qm") | $(grouped "$redis") | $(grouped "$postgres") |" \
        "$(two "$(median ${over_redis[$n]:-})") | $(ratio "$qm" "$postgres") |"
done
echo
echo "qm / Redis in each round: 1 client${over_redis[1]:-}; 64 clients${over_redis[64]:-}"
echo "qm with 1 client: $(two "$(median "${over_limit[@]}")") of the disk's single-client" \
    "limit (the median of the rounds' ratios: ${over_limit[*]}; the limits:" \
    "$(for l in "${limits[@]}"; do printf '%s ' "$(grouped "$l")"; done)pairs/s)"
for wait in block tokio; do
    [ -n "${floor[$wait]}" ] || continue
    echo "qm with 1 client: $(ratio "${rate[qm:1]:-–}" "${floor[$wait]}") of the socket floor" \
        "with $wait waits ($(grouped "${floor[$wait]}") pairs/s, measured after the servers)"
done
