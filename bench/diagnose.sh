#!/usr/bin/env bash
# Whole-process time of `conndoc diagnose 127.0.0.1:PORT` on a refused port, side by side
# with the tools a user reaches for (nc -z, redis-cli ping), in one hyperfine run.
# The port is one this script bound and closed, so nothing listens there.
# Usage: bench/diagnose.sh [runs]      (needs hyperfine, netcat-openbsd, redis-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
cargo build --release --quiet -p conndoc
bin=target/release/conndoc
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
hyperfine -N --warmup 20 --runs "$runs" -i --export-json "$out/r.json" \
  -n "conndoc diagnose" "$bin diagnose 127.0.0.1:$port --no-color" \
  -n "nc -z" "nc -z 127.0.0.1 $port" \
  -n "redis-cli ping" "redis-cli -p $port ping" >/dev/null
python3 - "$out/r.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["redis-cli ping"]["median"]
print("| command | median | mean ± σ | ratio to redis-cli (median) |")
print("|---|---|---|---|")
for name, x in r.items():
    print(f"| `{name}` | {x['median']*1e3:.2f} ms | {x['mean']*1e3:.2f} ± {x['stddev']*1e3:.2f} ms | {x['median']/base:.2f}× |")
PY
