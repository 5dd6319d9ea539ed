# Helpers the benchmark scripts share; sourced, not run.

# 12345.6 -> 12,346; anything that is not a number is printed as it is ("failed", say).
grouped() {
    case $1 in
    [0-9]*) printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;;
    *) printf '%s' "$1" ;;
    esac
}

# The median of the numbers given (anything else is left out); nothing when none is.
median() {
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# Processor ticks (utime + stime) process $1 has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
