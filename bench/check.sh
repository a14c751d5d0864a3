#!/usr/bin/env bash
# `conndoc check` over N refused loopback ports against `nmap -sT -T5` over the same ports,
# side by side in one run (issue 6). Everything runs inside a network namespace this script
# creates and deletes on exit: the machine's own loopback is not touched.
#
#   sudo bench/check.sh                 # N=10000 ports 20000-29999, concurrency 64
#   sudo N=1000 bench/check.sh
# Environment: CONNDOC (binary, default $CARGO_TARGET_DIR/release/conndoc or
# target/release/conndoc), N, FIRST (first port), CONCURRENCY, RUNS (each tool runs RUNS
# times, alternating; the median is reported), KEEP=1 (keep the work directory).
set -euo pipefail

N=${N:-10000}
FIRST=${FIRST:-20000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONNDOC=${CONNDOC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conndoc}

[ "$(id -u)" = 0 ] || { echo "bench/check.sh: run as root (it creates a network namespace)" >&2; exit 2; }
[ -x "$CONNDOC" ] || { echo "bench/check.sh: no conndoc binary at $CONNDOC (cargo build --release -p conndoc)" >&2; exit 2; }
for t in ip nmap bc; do command -v "$t" >/dev/null || { echo "bench/check.sh: $t is required" >&2; exit 2; }; done
[ "$N" -ge 1 ] && [ $((FIRST + N - 1)) -le 65535 ] || { echo "bench/check.sh: ports $FIRST+$N out of range" >&2; exit 2; }

NS=cdcheck$$
WORK=$(mktemp -d /tmp/conndoc-check-bench.XXXXXX)
cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up
NSX=(ip netns exec "$NS")

LAST=$((FIRST + N - 1))
{
    echo "history = \"$WORK/unused.db\""
    for p in $(seq "$FIRST" "$LAST"); do printf '[[target]]\nname = "p%d"\nurl = "tcp://127.0.0.1:%d"\ntimeout = "2s"\n' "$p" "$p"; done
} > "$WORK/check.toml"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
: > "$WORK/c.times"; : > "$WORK/n.times"
status=0
for r in $(seq "$RUNS"); do
    s=$(now)
    "${NSX[@]}" "$CONNDOC" check --config "$WORK/check.toml" --concurrency "$CONCURRENCY" --no-progress \
        > "$WORK/check.out" 2> "$WORK/check.err" || status=$?
    e=$(now); echo "$e - $s" | bc -l >> "$WORK/c.times"
    s=$(now)
    "${NSX[@]}" nmap -sT -T5 -n -Pn -p "$FIRST-$LAST" 127.0.0.1 > "$WORK/nmap.out"
    e=$(now); echo "$e - $s" | bc -l >> "$WORK/n.times"
done
c_secs=$(median < "$WORK/c.times")
n_secs=$(median < "$WORK/n.times")
c_rate=$(echo "$N / $c_secs" | bc -l)
n_rate=$(echo "$N / $n_secs" | bc -l)
c_nolistener=$(grep -c ' no-listener ' "$WORK/check.out" || true)
c_causes=$(awk 'NR>1 && ($2=="up" || $2=="down") {print $3}' "$WORK/check.out" | sort | uniq -c | sort -rn | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
n_closed=$(grep -oE '[0-9]+ (closed|filtered) (tcp )?ports' "$WORK/nmap.out" | head -1 || true)

printf '== %s, load average %s (before the runs: %s)\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(cut -d' ' -f1-3 /proc/loadavg)" "$LOAD0"
printf '== %d refused loopback ports (%d-%d) in namespace %s, median of %d runs each\n' "$N" "$FIRST" "$LAST" "$NS" "$RUNS"
printf 'conndoc check (concurrency %d): %.3fs = %8.0f ports/s, exit %d, causes: %s (%d no-listener rows)\n' \
    "$CONCURRENCY" "$c_secs" "$c_rate" "$status" "$c_causes" "$c_nolistener"
printf 'nmap -sT -T5:                    %.3fs = %8.0f ports/s (%s)\n' "$n_secs" "$n_rate" "$n_closed"
printf 'runs (s): conndoc %s; nmap %s\n' "$(tr '\n' ' ' < "$WORK/c.times")" "$(tr '\n' ' ' < "$WORK/n.times")"
printf 'check rate / nmap rate: %.2f\n' "$(echo "$c_rate / $n_rate" | bc -l)"
