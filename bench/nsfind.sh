#!/usr/bin/env bash
# Finding the namespace that owns an address among N lab-made namespaces (issue 10 target:
# <= 20 ms for 500), side by side with what a person runs instead: `ip -n NS -br addr` over
# every namespace until one has it. Needs root; makes namespaces cdlbenchNNN (no links, an
# address on each one's loopback, nothing leaves them) and deletes them on exit.
set -euo pipefail
N=${N:-500}
cd "$(dirname "$0")/.."
cargo build --release -q -p conndoc-host --example nsfind
BIN=target/release/examples/nsfind
cleanup() { for i in $(seq 1 "$N"); do ip netns del "cdlbench$i" 2>/dev/null || true; done; }
trap cleanup EXIT
for i in $(seq 1 "$N"); do
  ip netns add "cdlbench$i"
  ip -n "cdlbench$i" addr add "10.250.$((i / 250)).$((i % 250 + 1))/32" dev lo
done
# The last namespace made holds the address searched for (the worst case for the loop).
last="10.250.$((N / 250)).$((N % 250 + 1))"
echo "load: $(uptime)  nproc: $(nproc)"
# Wall time depends on what else runs (2 worker threads compete with the machine's load);
# user+sys CPU of the whole process is the load-independent figure.
TIMEFORMAT='whole process: wall %3R s, user %3U s, sys %3S s'
for run in 1 2 3 4 5; do
  time { out=$($BIN "$last"); echo "conndoc nsfind: $out"; }
done
TIMEFORMAT='ip -n NS -br addr loop: wall %3R s, user %3U s, sys %3S s'
time { for i in $(seq 1 "$N"); do ip -n "cdlbench$i" -br addr | grep -q "$last/" && break; done; }
echo "load after: $(uptime)"
