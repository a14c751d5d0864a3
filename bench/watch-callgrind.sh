#!/usr/bin/env bash
# Instructions per health check of `conndoc watch`, counted by callgrind: a figure that a
# loaded machine does not move (bench/watch.sh's CPU share does). The daemon holds N
# loopback targets on a 5 s schedule (bench/watch.sh's interval: the same number of
# targets per check for the work done per second, as there) inside a network namespace
# this script creates and deletes; after WARMUP seconds the counters are zeroed, after
# DURATION more they are dumped, and the instructions (Ir) of the window are divided by the
# checks made in it (`conndoc_probes_total`, read just before the zero and just after the
# dump). One /metrics scrape at each end, outside the window.
#
#   sudo bench/watch-callgrind.sh                       # N=1000 WARMUP=20 DURATION=30
#   sudo CONNDOC=/tmp/old/conndoc bench/watch-callgrind.sh   # the same for another build
# Needs valgrind (callgrind_control), python3, curl, iproute2. Prints one line:
#   instructions per check: I (Ir R over P checks, N targets, load, cores, binary B)
# No anchor tool runs here, so no ratio: instruction counts are compared build against build
# (CONNDOC=the other binary), and bench/watch.sh has the ratio to blackbox-exporter.
set -euo pipefail
N=${N:-1000}
WARMUP=${WARMUP:-20}
DURATION=${DURATION:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONNDOC=${CONNDOC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conndoc}
[ "$(id -u)" = 0 ] || { echo "bench/watch-callgrind.sh: run as root (it creates a network namespace)" >&2; exit 2; }
[ -x "$CONNDOC" ] || { echo "bench/watch-callgrind.sh: no conndoc binary at $CONNDOC" >&2; exit 2; }
for t in valgrind callgrind_control python3 curl ip; do
    command -v "$t" >/dev/null || { echo "bench/watch-callgrind.sh: $t is required" >&2; exit 2; }
done
NS=cdwcg$$
WORK=$(mktemp -d /tmp/conndoc-watch-cg.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
NSX=(ip netns exec "$NS" sh -c 'ulimit -n 65536 2>/dev/null; exec "$@"' sh)
FIRST=20000
LAST=$((FIRST + N - 1))
nmetric() { ip netns exec "$NS" curl -s "http://127.0.0.1:9464/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
"${NSX[@]}" python3 "$HERE/watch_server.py" "$FIRST" "$N" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/server.log" 2>/dev/null && break; sleep 0.2; done
{
    echo "listen = \"127.0.0.1:9464\""
    echo "history = \"$WORK/history.db\""
    echo "[defaults]"
    echo "interval = \"5s\""
    echo "timeout = \"2s\""
    for p in $(seq "$FIRST" "$LAST"); do printf '[[target]]\nname = "t%d"\nurl = "tcp://127.0.0.1:%d"\n' "$p" "$p"; done
} >"$WORK/watch.toml"
"${NSX[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$CONNDOC" watch --config "$WORK/watch.toml" 2>"$WORK/watch.log" &
VPID=$!
PIDS+=($VPID)
up=0
for _ in $(seq 240); do
    up=$(nmetric 'conndoc_targets{state="up"}' || true)
    [ "${up:-0}" = "$N" ] && break
    sleep 0.5
done
if [ "${up:-0}" != "$N" ]; then
    echo "bench/watch-callgrind.sh: only ${up:-0} of $N targets up; see $WORK/watch.log" >&2
    KEEP=1; exit 1
fi
sleep "$WARMUP"
p0=$(nmetric conndoc_probes_total)
callgrind_control -z "$VPID" >/dev/null
sleep "$DURATION"
callgrind_control -d "$VPID" >/dev/null
p1=$(nmetric conndoc_probes_total)
down=$(nmetric 'conndoc_targets{state="down"}')
[ "${down:-0}" = 0 ] || { echo "bench/watch-callgrind.sh: $down targets went down; invalid" >&2; KEEP=1; exit 1; }
# The dump made by -d is the newest numbered file.
dump=$(ls -t "$WORK"/cg.out.* | head -1)
ir=$(awk '/^summary:/ {print $2}' "$dump")
[ -n "$ir" ] || ir=$(awk '/^totals:/ {print $2}' "$dump")
checks=$((p1 - p0))
echo "instructions per check: $((ir / checks)) (Ir $ir over $checks checks, $N targets every 5 s, ${DURATION}s window, load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, binary $CONNDOC)"
