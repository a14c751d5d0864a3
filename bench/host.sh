#!/usr/bin/env bash
# Host inspection and `conndoc listeners` with a large socket table and a large fd table,
# side by side with the `ss` a person types, in one run (issues 3, 16).
#
#   sudo bench/host.sh [SOCKETS] [RUNS]      (default 50000 sockets, 15 runs each)
#
# Builds a lab network namespace (nothing changes outside it) and fills it:
# - its TCP table with SOCKETS sockets (SOCKETS/2 held client connections + their accepted
#   server ends, over ports 7000-7002) and a quiet listener on 6379;
# - FDPROCS processes (default 50) holding FDS open files each (default 2,000: 100,000 fds
#   in all), so that listener→process lookups meet a large fd table made by the lab, not
#   whatever else the machine runs.
# Then times whole processes inside the namespace, alternating (bench/alternate.py: every
# command once per round, RUNS rounds after 2 warm-up rounds), and prints medians, ratios,
# the load average and the core count.
# A second part makes the table TIME_WAIT-heavy: a server on port 7005 that closes every
# connection first, TW (default 2,000) short connections to it one after another (so each
# leaves a TIME_WAIT socket on the server's side, local port 7005), then the server stops.
# 7005 is then a refused port whose own sockets the shipped `diagnose` must walk (the
# namespace holds ≥ 1,000 TIME_WAIT sockets: time-wait-pileup is possible). Port 7006 gets
# the same TW sockets from a server that keeps running (reachable, with the time-wait-pileup
# warning: where the walk's count is the finding). Each is timed beside
# `ss -tan state all sport = :P` in one alternating run, well inside the sockets' 60 s.
# Environment: CARGO_TARGET_DIR, NOBUILD=1 (use the binaries already built), FDPROCS, FDS,
# SLOW=0 (leave out `ss -tlnp` and the listener→process rows: they take seconds per run),
# TW (TIME_WAIT sockets made on port 7005; 0 leaves the second part out).
set -euo pipefail
N=${1:-50000}
RUNS=${2:-15}
FDPROCS=${FDPROCS:-50}
FDS=${FDS:-2000}
SLOW=${SLOW:-1}
TW=${TW:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "bench/host.sh: needs root (network namespaces)" >&2; exit 2; }

BIN=$CARGO_TARGET_DIR/release
if [ "${NOBUILD:-0}" != 1 ]; then
  cargo build --release -q -p conndoc --bin conndoc --bin conndoc-labtool --manifest-path "$ROOT/Cargo.toml"
  cargo build --release -q -p conndoc-host --example inspect --manifest-path "$ROOT/Cargo.toml"
elif [ ! -x "$BIN/examples/inspect" ]; then
  # NOBUILD=1 uses what is built, but the example is a row of the table: build it alone
  # (the binaries' dependencies are built already) rather than leave the row out.
  cargo build --release -q -p conndoc-host --example inspect --manifest-path "$ROOT/Cargo.toml"
fi
for b in conndoc conndoc-labtool examples/inspect; do
  [ -x "$BIN/$b" ] || { echo "bench/host.sh: $BIN/$b is not built (run without NOBUILD=1)" >&2; exit 2; }
done
NS=cdbench$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Anything else still inside the namespace was started by this script.
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
# Client ports from 10000 up: the servers' ports (6379, 7000-7006) stay out of the range, so a
# held connection's local port never takes one of them before its server binds it.
in_ns sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

# A process may hold at most RLIMIT_NOFILE sockets (and raising the hard limit needs
# CAP_SYS_RESOURCE), so the connections are spread over PAIRS server/client pairs on ports
# 7000, 7001, …; port 7000 is the "busy" one.
PAIRS=3
PER=$(( (N / 2 + PAIRS - 1) / PAIRS ))
LIMIT=$(ulimit -Hn)
[ "$LIMIT" = unlimited ] || [ "$PER" -lt $((LIMIT - 50)) ] || { echo "bench/host.sh: $PER connections per process exceed the fd limit $LIMIT" >&2; exit 2; }
# `ip netns exec` and `bash -c exec` both replace themselves, so $! is the labtool's pid.
ip netns exec "$NS" bash -c "exec $BIN/conndoc-labtool serve 0.0.0.0 6379" 2>/dev/null &
PIDS+=($!)
for ((k = 0; k < PAIRS; k++)); do
  ip netns exec "$NS" bash -c "ulimit -n $((PER + 100)); exec $BIN/conndoc-labtool serve 127.0.0.1 $((7000 + k)) --backlog 4096" 2>/dev/null &
  PIDS+=($!)
done
for ((k = 0; k < FDPROCS; k++)); do
  ip netns exec "$NS" bash -c "ulimit -n $((FDS + 100)); exec $BIN/conndoc-labtool fds $FDS" 2>/dev/null &
  PIDS+=($!)
done
sleep 0.3
for ((k = 0; k < PAIRS; k++)); do
  ip netns exec "$NS" bash -c "ulimit -n $((PER + 100)); exec $BIN/conndoc-labtool hold 127.0.0.1 $((7000 + k)) $PER" 2>/dev/null &
  PIDS+=($!)
done
for _ in $(seq 1 600); do
  have=$(in_ns ss -Htan | wc -l)
  [ "$have" -ge "$N" ] && break
  sleep 0.2
done
fds=0
for p in "${PIDS[@]}"; do fds=$((fds + $(ls /proc/"$p"/fd 2>/dev/null | wc -l))); done
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), namespace $NS"
echo "== sockets in the namespace's table: $(in_ns ss -Htan | wc -l); open fds of the lab's $((${#PIDS[@]})) processes: $fds"
echo "== verdicts: 7000: $(in_ns "$BIN/conndoc" diagnose 127.0.0.1:7000 --no-color | head -1); 7003: $(in_ns "$BIN/conndoc" diagnose 127.0.0.1:7003 --no-color | head -1)"

D="$BIN/conndoc diagnose --no-color"
CMDS=(
  "ss -tan=ss -tan"
  "ss sport 7000=ss -tan state all sport = :7000"
  "ss sport 7003=ss -tan state all sport = :7003"
  "diagnose 7000 (healthy busy port)=$D 127.0.0.1:7000"
  "diagnose 7003 (refused; gate: no walk)=$D 127.0.0.1:7003"
  "ss -tln=ss -tln"
  "listeners=$BIN/conndoc listeners --no-color"
)
# The library's inspection alone (crates/host/examples/inspect), beside the shipped binary.
# Neither refused row walks the port's sockets here: with no TIME_WAIT in the namespace and
# quiet SYN counters the walk cannot change a finding (crates/host inspect.rs); the second
# part below is where they walk.
CMDS+=(
  "example inspect 7000=$BIN/examples/inspect 7000"
  "example inspect 7000 thorough (no walk)=env THOROUGH=1 $BIN/examples/inspect 7000"
)
if [ "$SLOW" = 1 ]; then
  CMDS+=(
    "ss -tlnp=ss -tlnp"
    "listeners --port 7000=$BIN/conndoc listeners --port 7000 --no-color"
    "listeners --port 6379=$BIN/conndoc listeners --port 6379 --no-color"
  )
fi
OUT=$(mktemp -d /tmp/conndoc-host-bench.XXXXXX)
trap 'cleanup; rm -rf "$OUT"' EXIT INT TERM
# Medians, ratios (GOAL marks the rows with a goal) and the load average of one alternating
# run: table.py RESULTS.json "NAME|BASE|GOAL" … (BASE and GOAL may be empty).
cat > "$OUT/table.py" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
print(f"== load average before {' '.join(d['load_before'])}, after {' '.join(d['load_after'])}; {d['nproc']} cores; median of {d['runs']} alternating runs")
print(f"{'command (whole process)':<48} {'median ms':>10} {'cpu ms':>8}  ratio")
for row in sys.argv[2:]:
    name, base, goal = row.split("|")
    if name not in r or (base and base not in r):
        continue
    x = r[name]
    ratio = f"{x['median_ms'] / r[base]['median_ms']:.3f}× {base}" if base else ""
    if goal:
        met = x["median_ms"] / r[base]["median_ms"] <= float(goal)
        ratio += f" (goal <= {goal}: {'met' if met else 'MISSED'}; cpu {x['cpu_ms'] / r[base]['cpu_ms']:.3f}×)"
    if x["exit"] not in (0, 1):
        ratio += f" [exit {x['exit']}]"
    print(f"{name:<48} {x['median_ms']:>10.2f} {x['cpu_ms']:>8.2f}  {ratio}")
PY
in_ns python3 "$ROOT/bench/alternate.py" "$RUNS" 2 "${CMDS[@]}" > "$OUT/main.json"
python3 "$OUT/table.py" "$OUT/main.json" \
  "ss -tan||" "ss sport 7000||" "ss sport 7003||" \
  "diagnose 7000 (healthy busy port)|ss sport 7000|" \
  "diagnose 7003 (refused; gate: no walk)|ss sport 7003|0.2" \
  "example inspect 7000|ss sport 7000|" "example inspect 7000 thorough (no walk)|ss sport 7000|0.2" \
  "ss -tln||" "listeners|ss -tln|0.25" "ss -tlnp||" \
  "listeners --port 7000|ss -tlnp|0.1" "listeners --port 6379|ss -tlnp|0.1" "listeners|ss -tlnp|"

[ "$TW" -gt 0 ] || exit 0
# ---- TIME_WAIT-heavy: TW sockets in TIME_WAIT on the refused port 7005 (its server made
# them, then stopped) and on the served port 7006 (its server keeps running).
P=7005 Q=7006
for port in $P $Q; do
  ip netns exec "$NS" bash -c "exec $BIN/conndoc-labtool serve 127.0.0.1 $port --close" 2>/dev/null &
  PIDS+=($!)
  [ "$port" = $P ] && SRV=$!
  for _ in $(seq 1 50); do in_ns ss -Htln "sport = :$port" | grep -q . && break; sleep 0.1; done
  in_ns "$BIN/conndoc-labtool" churn 127.0.0.1 "$port" "$TW" >/dev/null
done
kill "$SRV"; wait "$SRV" 2>/dev/null || true
tw_port() { in_ns ss -Htan state time-wait "sport = :$1" | wc -l; }
tw0="$P: $(tw_port $P), $Q: $(tw_port $Q)"
echo "== TIME_WAIT-heavy table: TIME_WAIT sockets on port $tw0 (nothing listens on $P now); $(in_ns ss -Htan state time-wait | wc -l) in the namespace, $(in_ns ss -Htan | wc -l) sockets in all"
# What the walk found, from each diagnosis's own evidence: the walk ran, and its count.
for port in $P $Q; do
  in_ns "$BIN/conndoc" diagnose "127.0.0.1:$port" --no-color --evidence-out "$OUT/ev.json" > "$OUT/verdict" 2>&1 || true
  python3 - "$OUT/ev.json" "$OUT/verdict" "$port" <<'PY'
import json, sys
h = json.load(open(sys.argv[1])).get("host") or {}
v = open(sys.argv[2]).read()
print(f"== verdict {sys.argv[3]}: {v.splitlines()[0] if v else '?'}")
print(f"   its walk: port_sockets_read {h.get('port_sockets_read')}, port_sockets {h.get('port_sockets')}; time-wait-pileup in the report: {'time-wait-pileup' in v}")
PY
done
CMDS=(
  "ss sport $P=ss -tan state all sport = :$P"
  "diagnose $P (refused, walks its TIME_WAIT)=$D 127.0.0.1:$P"
  "ss sport $Q=ss -tan state all sport = :$Q"
  "diagnose $Q (served, walks: time-wait-pileup)=$D 127.0.0.1:$Q"
  "ss sport 7003=ss -tan state all sport = :7003"
  "diagnose 7003 (refused, walks: none on it)=$D 127.0.0.1:7003"
  "example inspect $P thorough=env THOROUGH=1 $BIN/examples/inspect $P"
)
in_ns python3 "$ROOT/bench/alternate.py" "$RUNS" 2 "${CMDS[@]}" > "$OUT/tw.json"
tw1="$P: $(tw_port $P), $Q: $(tw_port $Q)"
python3 "$OUT/table.py" "$OUT/tw.json" \
  "ss sport $P||" "diagnose $P (refused, walks its TIME_WAIT)|ss sport $P|0.2" \
  "ss sport $Q||" "diagnose $Q (served, walks: time-wait-pileup)|ss sport $Q|0.2" \
  "ss sport 7003||" "diagnose 7003 (refused, walks: none on it)|ss sport 7003|0.2" \
  "example inspect $P thorough|ss sport $P|0.2"
echo "== TIME_WAIT sockets on port $tw1 after the run (before: $tw0)"
[ "$(tw_port $P)" -ge 1000 ] && [ "$(tw_port $Q)" -ge 1000 ] || echo "== WARNING: fewer than 1,000 TIME_WAIT sockets were left on a port at the end: the walk may not have run in every round"
