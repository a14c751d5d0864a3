#!/usr/bin/env bash
# Locating a drop three hops away: conndoc's path stage vs `traceroute -T` and `mtr --tcp`,
# on the same lab path, in one run (interleaved rounds, median of each), as ratios.
#
# Builds, in network namespaces of its own (nothing touches the machine's namespace):
#   client ── r1 ── r2 ── r3 ── server (10.77.3.2, a listener on 7000)
# with r3's forwarding path dropping tcp dport 7000, so hops 1-3 answer time exceeded and
# nothing beyond does. Then times, from the client namespace:
#   conndoc diagnose --timeout 1s        (path stage beside the connect, as by default)
#   conndoc diagnose --timeout 1s --path (forced from the start)
#   traceroute -T -n -q 1 -w 1 -p 7000   (Debian traceroute, TCP SYN method)
#   mtr --tcp -n -c 1 -P 7000 --report   (mtr-tiny)
# Each run is checked: conndoc must say path-drop "lost after hop 3, 10.77.2.2"; traceroute
# and mtr must list 10.77.2.2 as hop 3.
# Usage: sudo bench/path.sh [rounds]     (needs root, iproute2, nft, traceroute, mtr-tiny)
#        sudo CONNDOC=target/debug/conndoc bench/path.sh 3   (an already-built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
tgt=${CARGO_TARGET_DIR:-target}
# CONNDOC=path/to/conndoc times that binary (conndoc-labtool beside it) instead of building.
if [ -z "${CONNDOC:-}" ]; then cargo build --release --quiet -p conndoc; fi
bin=${CONNDOC:-$PWD/$tgt/release/conndoc}
labtool=$(dirname "$bin")/conndoc-labtool
id=$$
p=cdpb${id}
hosts="c r1 r2 r3 s"
out=$(mktemp -d)
cleanup() {
  ip netns pids ${p}s 2>/dev/null | xargs -r kill 2>/dev/null || true
  for h in $hosts; do ip netns del ${p}$h 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
for h in $hosts; do ip netns add ${p}$h; ip -n ${p}$h link set lo up; done
link() { # ns-a ns-b addr-a addr-b
  ip -n ${p}$1 link add to$2 type veth peer name to$1 netns ${p}$2
  ip -n ${p}$1 addr add $3/24 dev to$2; ip -n ${p}$2 addr add $4/24 dev to$1
  ip -n ${p}$1 link set to$2 up; ip -n ${p}$2 link set to$1 up
}
link c r1 10.77.0.1 10.77.0.2
link r1 r2 10.77.1.1 10.77.1.2
link r2 r3 10.77.2.1 10.77.2.2
link r3 s 10.77.3.1 10.77.3.2
for r in r1 r2 r3; do ip netns exec ${p}$r sysctl -qw net.ipv4.ip_forward=1; done
ip -n ${p}c route add default via 10.77.0.2
ip -n ${p}r1 route add default via 10.77.1.2
ip -n ${p}r2 route add 10.77.0.0/24 via 10.77.1.1
ip -n ${p}r2 route add 10.77.3.0/24 via 10.77.2.2
ip -n ${p}r3 route add default via 10.77.2.1
ip -n ${p}s route add default via 10.77.3.1
ip netns exec ${p}s sh -c "$labtool serve :: 7000 >/dev/null 2>&1 &"
ip netns exec ${p}r3 nft -f - <<'NFT'
table inet bench {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 7000 drop
  }
}
NFT
ip netns exec ${p}c ping -n -q -c 1 -W 2 10.77.3.2 >/dev/null

names=(conndoc conndoc_path traceroute mtr)
cmds=(
  "$bin diagnose --no-color --timeout 1s tcp://10.77.3.2:7000"
  "$bin diagnose --no-color --timeout 1s --path tcp://10.77.3.2:7000"
  "traceroute -T -n -q 1 -w 1 -p 7000 10.77.3.2"
  "mtr --tcp -n -c 1 -P 7000 --report 10.77.3.2"
)
checks=(
  "lost after hop 3, 10.77.2.2"
  "lost after hop 3, 10.77.2.2"
  " 3  10.77.2.2"
  "3.|-- 10.77.2.2"
)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    t0=$(date +%s%N)
    ip netns exec ${p}c ${cmds[$i]} > "$out/o" 2>&1 || true
    t1=$(date +%s%N)
    if ! grep -qF -- "${checks[$i]}" "$out/o"; then
      echo "${names[$i]} did not locate the drop:"; cat "$out/o"; exit 1
    fi
    echo $(( (t1 - t0) / 1000000 )) >> "$out/${names[$i]}.ms"
  done
done
echo "load average before $load0, after: $(uptime); nproc $(nproc); binary $bin"
python3 - "$out" "$rounds" <<'PY'
import sys, statistics, os
d, rounds = sys.argv[1], sys.argv[2]
med = {}
for n in ["conndoc", "conndoc_path", "traceroute", "mtr"]:
    v = [int(x) for x in open(os.path.join(d, n + ".ms"))]
    med[n] = statistics.median(v)
    print(f"{n:14} median {med[n]:7.0f} ms  (min {min(v)}, max {max(v)}, {len(v)} runs)")
for c in ["conndoc", "conndoc_path"]:
    for o in ["traceroute", "mtr"]:
        print(f"{c} / {o}: {med[c] / med[o]:.2f}x")
PY
