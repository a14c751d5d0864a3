#!/usr/bin/env bash
# Whole-process time of `conndoc diagnose 127.0.0.1:PORT` on a refused port (host
# inspected), side by side with the tools a user reaches for (`nc -z`, `redis-cli ping`),
# in one hyperfine run (issues 2, 16). Everything runs inside a network namespace this
# script creates and deletes: nothing listens on PORT there, and the machine's own
# loopback is not touched.
#
#   sudo bench/diagnose.sh [runs]     (needs hyperfine, netcat-openbsd, redis-tools)
# Environment: CONNDOC (binary; default: cargo build --release, then target/release/conndoc).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
[ "$(id -u)" = 0 ] || { echo "bench/diagnose.sh: run as root (it creates a network namespace)" >&2; exit 2; }
for t in hyperfine nc redis-cli python3 ip; do command -v "$t" >/dev/null || { echo "bench/diagnose.sh: $t is required" >&2; exit 2; }; done
if [ -z "${CONNDOC:-}" ]; then
    cargo build --release --quiet -p conndoc
    CONNDOC=${CARGO_TARGET_DIR:-target}/release/conndoc
fi
bin=$(realpath "$CONNDOC")
port=7000
ns=cddiag$$
out=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$out"' EXIT INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
load0=$(cut -d' ' -f1-3 /proc/loadavg)
# The verdict once, so the timed runs are known to be the refused path.
ip netns exec "$ns" "$bin" diagnose "127.0.0.1:$port" --no-color > "$out/verdict" || true
ip netns exec "$ns" hyperfine -N --warmup 20 --runs "$runs" -i --export-json "$out/r.json" \
  -n "conndoc diagnose 127.0.0.1:$port" "$bin diagnose 127.0.0.1:$port --no-color" \
  -n "nc -z 127.0.0.1 $port" "nc -z 127.0.0.1 $port" \
  -n "redis-cli -p $port ping" "redis-cli -p $port ping" >/dev/null
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg); namespace $ns, $runs runs each"
echo "== verdict: $(head -1 "$out/verdict")"
python3 - "$out/r.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
nc = next(x for n, x in r.items() if n.startswith("nc -z"))["median"]
print("| command | median | mean ± σ | user + sys (mean) | ratio to `nc -z` (median) |")
print("|---|---|---|---|---|")
for name, x in r.items():
    cpu = (x["user"] + x["system"]) * 1e3
    print(f"| `{name}` | {x['median']*1e3:.2f} ms | {x['mean']*1e3:.2f} ± {x['stddev']*1e3:.2f} ms | {cpu:.2f} ms | {x['median']/nc:.2f}× |")
c = next(x for n, x in r.items() if n.startswith("conndoc"))["median"]
print(f"RATIO conndoc diagnose / nc -z: {c/nc:.2f} (goal <= 1.5)")
PY
