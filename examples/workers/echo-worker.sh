#!/bin/sh
# An echo worker in plain sh: qmd starts it once (`mode = "worker"`) and sends it every
# message of its queue over the worker protocol (docs/worker-protocol.md); it answers each
# with the request's body. Edit `handle` to make it do something useful.
#
#   [service.ECHO]
#   command = "sh examples/workers/echo-worker.sh"
#   mode = "worker"
#
# Frames are binary, so it reads exact byte counts with `head -c` (which never reads past
# what it is asked for) and turns bytes into numbers with `od`. Each request costs a few
# processes: fine for an example, use a real language for speed.
set -eu

# The request and reply pass through files in a private directory, removed when the worker
# ends: at end of input, or on HUP, INT or TERM sent to its process group (as a terminal's
# Ctrl-C is; sent to the shell alone, it waits for the `head` it is in). A worker killed
# outright (qmd does so when a request overruns its deadline) leaves it behind in $TMPDIR.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Reads a 4-byte big-endian number from standard input; fails at end of input.
read_u32() {
    set -- $(head -c 4 | od -An -tu1)
    [ $# -eq 4 ] || return 1
    echo $(( ($1 << 24) | ($2 << 16) | ($3 << 8) | $4 ))
}

# Writes a number as 4 big-endian bytes.
write_u32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' \
        $(( ($1 >> 24) & 255 )) $(( ($1 >> 16) & 255 )) $(( ($1 >> 8) & 255 )) $(( $1 & 255 )))"
}

# The request is in "$work/header" (80 bytes) and "$work/body"; writes the reply's body to
# standard output and may set `status` (0 success, 1 failure).
handle() {
    cat "$work/body"
}

printf 'QMW1'
while length=$(read_u32); do
    head -c 80 > "$work/header"
    head -c $(( length - 80 )) > "$work/body"
    status=0
    handle > "$work/reply"
    write_u32 $(( $(wc -c < "$work/reply") + 9 ))
    # Status byte, then the user return code: 8 bytes, big-endian (0 here).
    printf "$(printf '\\%03o' "$status")\000\000\000\000\000\000\000\000"
    cat "$work/reply"
done
