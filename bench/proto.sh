#!/bin/sh
# Protocol probe benchmark (issue 5), side by side with redis-benchmark and redis-cli, in one run.
#
#   sudo bench/proto.sh [N]
#
# Everything runs inside a network namespace this script creates and deletes on exit (the
# machine's own loopback is not touched): its own redis-server on a free port of the
# namespace's loopback (killed at exit), then prints a Markdown table of medians and ratios,
# with the load average and the core count:
#   1. in-process probe (connect + PING + INFO) vs redis-benchmark -c 1 -t ping per-request
#      latency plus one connect, vs the floor (a bare client doing the same exchange, no
#      parsing), and vs redis-benchmark -k 0 (which reconnects per request);
#   2. the whole `conndoc diagnose redis://…` process vs `redis-cli ping`.
# Builds release binaries into ${CARGO_TARGET_DIR:-target} (NOBUILD=1: use those built).
set -eu
N=${1:-3000}
RUNS=${RUNS:-60}
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
TGT=${CARGO_TARGET_DIR:-target}
if [ -z "${CONNDOC_PROTO_NS:-}" ]; then
    # Outside: check, build, make the namespace, run this script again inside it.
    [ "$(id -u)" = 0 ] || { echo "bench/proto.sh: run as root (it creates a network namespace)" >&2; exit 2; }
    for p in redis-server redis-cli redis-benchmark python3 ip; do
        command -v $p >/dev/null || { echo "bench/proto.sh: $p not found" >&2; exit 2; }
    done
    if [ "${NOBUILD:-0}" != 1 ]; then
        cargo build --release -q -p conndoc --bin conndoc
        cargo build --release -q -p conndoc-proto --example probe_bench
    fi
    for b in conndoc examples/probe_bench; do
        [ -x "$TGT/release/$b" ] || { echo "bench/proto.sh: $TGT/release/$b is not built" >&2; exit 2; }
    done
    NS=cdproto$$
    trap 'for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null || true; done; ip netns del "$NS" 2>/dev/null || true' EXIT INT TERM
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg); namespace $NS"
    ip netns exec "$NS" env CONNDOC_PROTO_NS="$NS" sh "$SELF" "$N"
    echo "== load average after $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi

# Inside the namespace.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT INT TERM
i=0
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "redis-server did not start" >&2; exit 1; }; sleep 0.05
done

p50_ms() { # redis-benchmark CSV → p50 of PING_MBULK in µs
    awk -F'","' '/PING_MBULK/ { gsub(/"/, "", $5); print $5 * 1000 }'
}
RB_K1=$(redis-benchmark -p "$PORT" -c 1 -n "$N" -t ping --csv 2>/dev/null | p50_ms)
RB_K0=$(redis-benchmark -p "$PORT" -c 1 -n "$N" -k 0 -t ping --csv 2>/dev/null | p50_ms)
PROBE=$("$TGT/release/examples/probe_bench" "127.0.0.1:$PORT" "$N")
python3 - "$PORT" "$TGT/release/conndoc" "$RUNS" "$RB_K1" "$RB_K0" "$PROBE" <<'PY'
import json, os, statistics, subprocess, sys, time
port, conndoc, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rb_k1, rb_k0, probe = float(sys.argv[4]), float(sys.argv[5]), json.loads(sys.argv[6])
cmds = {
    "redis-cli ping": ["redis-cli", "-p", port, "ping"],
    "conndoc diagnose": [conndoc, "diagnose", f"redis://127.0.0.1:{port}"],
    "conndoc diagnose --no-host": [conndoc, "diagnose", "--no-host", f"redis://127.0.0.1:{port}"],
}
times = {k: [] for k in cmds}
for _ in range(3):  # warm the page cache
    for c in cmds.values():
        subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(runs):  # interleaved, so load changes hit all alike
    for k, c in cmds.items():
        t = time.perf_counter()
        r = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[k].append((time.perf_counter() - t) * 1e3)
        assert r.returncode == 0, f"{k} exited {r.returncode}"
med = {k: statistics.median(v) for k, v in times.items()}
base = rb_k1 + probe["connect_p50_us"]
print(f"| measure | median | ratio |")
print(f"|---|---|---|")
print(f"| redis-benchmark -c 1 -t ping, p50 per request (keep-alive) | {rb_k1:.0f} µs | |")
print(f"| one TCP connect, p50 | {probe['connect_p50_us']:.0f} µs | |")
print(f"| redis-benchmark -c 1 -k 0 -t ping, p50 (reconnect per request) | {rb_k0:.0f} µs | |")
print(f"| floor: bare client, connect + PING + INFO pipelined + close, p50 | {probe['floor_p50_us']:.0f} µs | "
      f"{probe['floor_p50_us'] / base:.2f}× ping+connect |")
print(f"| conndoc in-process probe: connect + PING + INFO, p50 (n={probe['n']}) | {probe['probe_p50_us']:.0f} µs | "
      f"{probe['probe_p50_us'] / base:.2f}× ping+connect; {probe['probe_p50_us'] / probe['floor_p50_us']:.2f}× floor; "
      f"{probe['probe_p50_us'] / rb_k0:.2f}× ping -k 0 |")
print(f"| redis-cli ping (process) | {med['redis-cli ping']:.1f} ms | 1.00× |")
print(f"| conndoc diagnose redis:// (process, host inspected) | {med['conndoc diagnose']:.1f} ms | "
      f"{med['conndoc diagnose'] / med['redis-cli ping']:.2f}× |")
print(f"| conndoc diagnose --no-host redis:// (process) | {med['conndoc diagnose --no-host']:.1f} ms | "
      f"{med['conndoc diagnose --no-host'] / med['redis-cli ping']:.2f}× |")
print(f"\n{runs} interleaved process runs; load average {' '.join(open('/proc/loadavg').read().split()[:3])}; {os.cpu_count()} cores")
PY
