#!/usr/bin/env bash
# Finding the namespace that owns an address among N lab-made namespaces (issue 10 target:
# <= 20 ms for 500), side by side with what a person runs instead: `ip -n NS -br addr` over
# every namespace until one has it, in one run, as a ratio, with the load average and the
# core count. Needs root; makes namespaces cdnfPID-NNN (no links, an address on each one's
# own loopback, nothing leaves them; the machine's namespace is only read) and deletes them
# on exit.
#
#   sudo bench/nsfind.sh          # N=500, RUNS=5
# Environment: N, RUNS, NOBUILD=1 (use target/release/examples/nsfind as built).
set -euo pipefail
N=${N:-500}
RUNS=${RUNS:-5}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/nsfind.sh: run as root (it creates network namespaces)" >&2; exit 2; }
[ "${NOBUILD:-0}" = 1 ] || cargo build --release -q -p conndoc-host --example nsfind
BIN=${CARGO_TARGET_DIR:-target}/release/examples/nsfind
[ -x "$BIN" ] || { echo "bench/nsfind.sh: $BIN is not built" >&2; exit 2; }
P=cdnf$$-
W=$(mktemp -d /tmp/conndoc-nsfind-bench.XXXXXX)
cleanup() { for i in $(seq 1 "$N"); do ip netns del "$P$i" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT INT TERM
for i in $(seq 1 "$N"); do
  ip netns add "$P$i"
  ip -n "$P$i" addr add "10.250.$((i / 250)).$((i % 250 + 1))/32" dev lo
done
# The last namespace made holds the address searched for (the worst case for the loop).
last="10.250.$((N / 250)).$((N % 250 + 1))"
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg); $N namespaces, $RUNS runs each, alternating"
ms() { echo $(( (${2/./} - ${1/./}) / 1000 )).$(( (${2/./} - ${1/./}) % 1000 / 100 )); }
loop() { for i in $(seq 1 "$N"); do ip -n "$P$i" -br addr | grep -q "$last/" && { echo "$P$i"; return; }; done; }
# Wall time depends on what else runs (2 worker threads compete with the machine's load);
# user+sys CPU of the whole process is printed beside it (bash `time`).
: > "$W/c"; : > "$W/l"
for _ in $(seq "$RUNS"); do
  t0=$EPOCHREALTIME; out=$($BIN "$last"); t1=$EPOCHREALTIME
  ms "$t0" "$t1" >> "$W/c"
  t0=$EPOCHREALTIME; found=$(loop); t1=$EPOCHREALTIME
  ms "$t0" "$t1" >> "$W/l"
done
echo "conndoc nsfind: $out"
echo "ip -n NS -br addr loop found: $found"
TIMEFORMAT='conndoc nsfind, one more run: wall %3R s, user %3U s, sys %3S s'
time $BIN "$last" >/dev/null
med() { sort -g "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(med "$W/c"); l=$(med "$W/l")
echo "conndoc nsfind (whole process):  median $c ms"
echo "ip -n NS -br addr loop:          median $l ms"
awk -v c="$c" -v l="$l" 'BEGIN { printf "RATIO nsfind / loop: %.4f (1/%.0f); goal nsfind <= 20 ms: %s\n", c / l, l / c, (c <= 20 ? "met" : "MISSED") }'
echo "== load average after $(cut -d' ' -f1-3 /proc/loadavg)"
