#!/usr/bin/env bash
# A diagnosis through a hand-written DNAT rule (issue 10), whole process, side by side with
# what a person runs instead: the front's ruleset listing (`nft list ruleset`), then the
# backend namespace's addresses and listeners (`ip -br addr`, `ss -tlnp`), in one hyperfine
# run. Needs root and hyperfine; makes namespaces cdlnatb{c,s,b} (veths between them only,
# nothing leaves them) and deletes them on exit. CONNDOC_BIN picks the binary (default: the
# release build, built here).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CONNDOC_BIN:-target/release/conndoc}
if [ -z "${CONNDOC_BIN:-}" ]; then cargo build --release -q -p conndoc -p conndoc-lab; fi
LABTOOL=$(dirname "$BIN")/conndoc-labtool
C=cdlnatbc S=cdlnatbs B=cdlnatbb APP=
cleanup() {
  if [ -n "$APP" ]; then kill "$APP" 2>/dev/null || true; fi
  for n in $C $S $B; do ip netns del $n 2>/dev/null || true; done
}
trap cleanup EXIT
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
echo "load: $(uptime), nproc $(nproc)"
ip netns exec $C "$BIN" diagnose tcp://10.77.0.2:16379 --timeout 1s --netns $S | head -1 || true
hyperfine -N --warmup 3 --runs "${RUNS:-30}" -i \
  "ip netns exec $C $BIN diagnose tcp://10.77.0.2:16379 --timeout 1s --netns $S" \
  "ip netns exec $S nft list ruleset" \
  "ip -n $B -br addr" \
  "ip netns exec $B ss -tlnp"
echo "load: $(uptime)"
