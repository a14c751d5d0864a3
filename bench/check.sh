#!/usr/bin/env bash
# `conndoc check` over N refused loopback ports against `nmap -sT -T5` over the same ports,
# side by side in one run (issues 6, 16): wall time (as a rate) and CPU time (user + system
# of the whole process tree), on all cores and pinned to one (`taskset -c 0`, both tools).
# Everything runs inside a network namespace this script creates and deletes on exit: the
# machine's own loopback is not touched.
#
#   sudo bench/check.sh                 # N=10000 ports 20000-29999, concurrency 64
#   sudo N=1000 RUNS=9 bench/check.sh
#   sudo ADDRS=1000 bench/check.sh      # the N ports spread over 1,000 loopback addresses
# Environment: CONNDOC (binary, default $CARGO_TARGET_DIR/release/conndoc or
# target/release/conndoc), N, FIRST (first port), CONCURRENCY, RUNS (each tool runs RUNS
# times per mode, alternating; medians are reported), MODES (default "all pinned"),
# ADDRS (spread the targets over 127.0.A.B, ADDRS addresses; conndoc only, nmap scans one
# address per run), KEEP=1 (keep the work directory).
set -euo pipefail

N=${N:-10000}
FIRST=${FIRST:-20000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-5}
MODES=${MODES:-all pinned}
ADDRS=${ADDRS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONNDOC=${CONNDOC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conndoc}

[ "$(id -u)" = 0 ] || { echo "bench/check.sh: run as root (it creates a network namespace)" >&2; exit 2; }
[ -x "$CONNDOC" ] || { echo "bench/check.sh: no conndoc binary at $CONNDOC (cargo build --release -p conndoc)" >&2; exit 2; }
for t in ip nmap taskset awk; do command -v "$t" >/dev/null || { echo "bench/check.sh: $t is required" >&2; exit 2; }; done
[ "$N" -ge 1 ] && [ $((FIRST + N - 1)) -le 65535 ] || { echo "bench/check.sh: ports $FIRST+$N out of range" >&2; exit 2; }
[ "$ADDRS" -ge 1 ] && [ "$ADDRS" -le 60000 ] || { echo "bench/check.sh: ADDRS from 1 to 60000" >&2; exit 2; }

NS=cdcheck$$
WORK=$(mktemp -d /tmp/conndoc-check-bench.XXXXXX)
cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up

LAST=$((FIRST + N - 1))
# Target k: 127.0.A.B with A.B the (k mod ADDRS)-th address from 127.0.0.1 (B = 1-250).
awk -v first="$FIRST" -v n="$N" -v addrs="$ADDRS" -v db="$WORK/unused.db" 'BEGIN {
    printf "history = \"%s\"\n", db
    for (k = 0; k < n; k++) {
        a = k % addrs; p = first + k
        printf "[[target]]\nname = \"p%d\"\nurl = \"tcp://127.0.%d.%d:%d\"\ntimeout = \"2s\"\n", p, int(a / 250), a % 250 + 1, p
    }
}' > "$WORK/check.toml"

# One run of a command inside the namespace: prints "wall user+sys" in seconds (bash's
# `time` counts the CPU of every process and thread the command ran).
timed() {
    local out=$1; shift
    local t
    t=$( { TIMEFORMAT='%R %U %S'; time ip netns exec "$NS" "$@" > "$out" 2> "$out.err"; } 2>&1 ) || true
    awk '{ printf "%s %.4f\n", $1, $2 + $3 }' <<< "$t"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v c="$1" '{print $c}' "$2" | median; }

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $N refused ports ($FIRST-$LAST) on $ADDRS loopback address(es), namespace $NS, $RUNS alternating runs per tool and mode"
for mode in $MODES; do
    case $mode in
        all) PIN=() ;;
        pinned) PIN=(taskset -c 0) ;;
        *) echo "bench/check.sh: MODES: all or pinned" >&2; exit 2 ;;
    esac
    : > "$WORK/c.$mode"; : > "$WORK/n.$mode"
    for _ in $(seq "$RUNS"); do
        timed "$WORK/check.out" "${PIN[@]}" "$CONNDOC" check --config "$WORK/check.toml" --concurrency "$CONCURRENCY" --no-progress >> "$WORK/c.$mode"
        # nmap scans one address: the first target's.
        timed "$WORK/nmap.out" "${PIN[@]}" nmap -sT -T5 -n -Pn -p "$FIRST-$LAST" 127.0.0.1 >> "$WORK/n.$mode"
    done
    cw=$(col 1 "$WORK/c.$mode"); cc=$(col 2 "$WORK/c.$mode")
    nw=$(col 1 "$WORK/n.$mode"); nc=$(col 2 "$WORK/n.$mode")
    rows=$(awk 'NR>1 && ($2=="up" || $2=="down")' "$WORK/check.out" | wc -l)
    causes=$(awk 'NR>1 && ($2=="up" || $2=="down") {print $3}' "$WORK/check.out" | sort | uniq -c | sort -rn | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
    closed=$(grep -oE '[0-9]+ (closed|filtered) (tcp )?ports' "$WORK/nmap.out" | head -1 || true)
    echo "-- mode $mode${PIN:+ (${PIN[*]} for both)}, load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '   conndoc check: wall %.3fs = %6.0f ports/s, cpu %.3fs; %d rows, causes: %s\n' "$cw" "$(echo "$N $cw" | awk '{print $1/$2}')" "$cc" "$rows" "$causes"
    printf '   nmap -sT -T5:  wall %.3fs = %6.0f ports/s, cpu %.3fs; %s\n' "$nw" "$(echo "$N $nw" | awk '{print $1/$2}')" "$nc" "$closed"
    printf '   runs (wall cpu): conndoc %s| nmap %s\n' "$(tr '\n' ' ' < "$WORK/c.$mode" | sed 's/ \([0-9.]*\) / \1, /g')" "$(tr '\n' ' ' < "$WORK/n.$mode" | sed 's/ \([0-9.]*\) / \1, /g')"
    printf '   RATIO %s: rate conndoc/nmap %.2f (goal >= 1.5), cpu conndoc/nmap %.2f (goal <= 1)\n' "$mode" \
        "$(echo "$nw $cw" | awk '{print $1/$2}')" "$(echo "$cc $nc" | awk '{print $1/$2}')"
done
