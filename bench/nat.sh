#!/usr/bin/env bash
# A diagnosis through a hand-written DNAT rule (issue 10), whole process, side by side with
# what a person runs instead: the front's ruleset listing (`nft list ruleset`), then the
# backend namespace's addresses and listeners (`ip -br addr`, `ss -tlnp`), in one hyperfine
# run, printing the ratios (to each of those and to their sum), the load average and the core
# count. Needs root and hyperfine; makes namespaces cdnatPID{c,s,b} (veths between them only,
# nothing leaves them; the machine's namespace is not touched) and deletes them on exit.
# CONNDOC_BIN picks the binary (default: the release build, built here); RUNS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CONNDOC_BIN:-target/release/conndoc}
if [ -z "${CONNDOC_BIN:-}" ]; then cargo build --release -q -p conndoc -p conndoc-lab; fi
LABTOOL=$(dirname "$BIN")/conndoc-labtool
C=cdnat$$c S=cdnat$$s B=cdnat$$b APP=
OUT=$(mktemp -d /tmp/conndoc-nat-bench.XXXXXX)
cleanup() {
  if [ -n "$APP" ]; then kill "$APP" 2>/dev/null || true; fi
  for n in $C $S $B; do ip netns del $n 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT INT TERM
for n in $C $S $B; do ip netns add $n; ip -n $n link set lo up; done
ip -n $C link add c0 type veth peer name s0 netns $S
ip -n $S link add s1 type veth peer name b0 netns $B
ip -n $C addr add 10.77.0.1/24 dev c0 && ip -n $C link set c0 up
ip -n $S addr add 10.77.0.2/24 dev s0 && ip -n $S link set s0 up
ip -n $S addr add 10.77.1.1/24 dev s1 && ip -n $S link set s1 up
ip -n $B addr add 10.77.1.2/24 dev b0 && ip -n $B link set b0 up
ip -n $B route add default via 10.77.1.1
ip netns exec $S sysctl -qw net.ipv4.ip_forward=1
ip netns exec $S nft -f - <<'NFT'
table ip hand {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 16379 dnat to 10.77.1.2:6379
  }
}
NFT
# The backend binds loopback: container-bound-to-loopback through the DNAT rule.
ip netns exec $B "$LABTOOL" serve 127.0.0.1 6379 >/dev/null 2>&1 &
APP=$!
sleep 0.5
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== verdict: $(ip netns exec $C "$BIN" diagnose tcp://10.77.0.2:16379 --timeout 1s --netns $S --no-color | head -1 || true)"
hyperfine -N --warmup 3 --runs "${RUNS:-30}" -i --export-json "$OUT/r.json" \
  -n "conndoc diagnose (through the DNAT rule)" "ip netns exec $C $BIN diagnose tcp://10.77.0.2:16379 --timeout 1s --netns $S --no-color" \
  -n "nft list ruleset (front)" "ip netns exec $S nft list ruleset" \
  -n "ip -br addr (backend)" "ip -n $B -br addr" \
  -n "ss -tlnp (backend)" "ip netns exec $B ss -tlnp" >/dev/null
echo "== load average after $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT/r.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
names = list(r)
c, tools = r[names[0]], names[1:]
print("| command (hyperfine, median) | median | user + sys (mean) | conndoc / it |")
print("|---|---|---|---|")
for n in names:
    x = r[n]
    print(f"| {n} | {x['median']*1e3:.2f} ms | {(x['user'] + x['system'])*1e3:.2f} ms | {c['median'] / x['median']:.2f}× |")
total = sum(r[n]["median"] for n in tools)
print(f"RATIO conndoc / (the three commands a person runs, summed: {total*1e3:.2f} ms): {c['median'] / total:.2f}")
PY
