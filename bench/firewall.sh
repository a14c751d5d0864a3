#!/usr/bin/env bash
# Firewall evaluation over a 10,000-rule nftables ruleset, and the cost of packet capture,
# side by side with the tool a user would reach for, in one hyperfine run.
#
# Builds, in network namespaces of its own (nothing touches the machine's namespace):
#   client ── s0   (10.77.0.2, one rule: tcp dport 7000 reject with tcp reset)
#          └─ s10k (10.77.1.2, 9,999 non-matching rules, then the same reject rule)
# with a listener on port 7000 in both, then times, from the client namespace:
#   conndoc diagnose → s0 and → s10k (--netns: rules read and evaluated there; both are
#   firewall-reject, so the firewall stage runs — a healthy target skips it),
#   `nft list ruleset` in s10k (what a person runs to look), conndoc without CAP_NET_RAW
#   (no capture) and with capture, plus conndoc's own read/build/evaluate breakdown.
# conndoc reads nftables over netlink (fwbench reports that read alone as netlink_ms);
# `nft -j list ruleset` and fwparse show what the fallback (no netlink) would cost.
# The decoded ruleset is cached by (namespace, nf_tables generation) (docs/firewall.md):
# "cold" runs start with the cache directory removed (the first diagnosis after a ruleset
# change: GETGEN, dump, decode, write the file), "warm" ones find the file of the unchanged
# generation. Every conndoc run gets CONNDOC_CACHE_DIR=a directory of this script's own.
# Prints the ratios to `nft list ruleset`, the load average and the core count.
# Usage: sudo bench/firewall.sh [runs]     (needs root, hyperfine, nft, setpriv, nc)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
tgt=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p conndoc
cargo build --release --quiet -p conndoc-firewall --example fwbench --example fwparse
bin=$tgt/release/conndoc
fwbench=$tgt/release/examples/fwbench
id=$$
c=cdfwb${id}c; s0=cdfwb${id}a; s10k=cdfwb${id}b
out=$(mktemp -d)
cleanup() {
  for ns in $s0 $s10k; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  for ns in $c $s0 $s10k; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
for ns in $c $s0 $s10k; do ip netns add $ns; ip -n $ns link set lo up; done
ip -n $c link add eth0 type veth peer name eth0 netns $s0
ip -n $c link add eth1 type veth peer name eth0 netns $s10k
ip -n $c addr add 10.77.0.1/24 dev eth0; ip -n $s0 addr add 10.77.0.2/24 dev eth0
ip -n $c addr add 10.77.1.1/24 dev eth1; ip -n $s10k addr add 10.77.1.2/24 dev eth0
for l in "$c eth0" "$c eth1" "$s0 eth0" "$s10k eth0"; do set -- $l; ip -n $1 link set $2 up; done
for ns in $s0 $s10k; do ip netns exec $ns sh -c 'nc -lk 7000 >/dev/null 2>&1 &'; done

python3 - > "$out/rules.nft" <<'PY'
print("table inet bench {")
print("  chain input {")
print("    type filter hook input priority 0; policy accept;")
for i in range(9999):
    print(f"    ip saddr 192.0.2.{i % 250} tcp dport {20000 + i} drop")
print("    tcp dport 7000 reject with tcp reset")
print("  }")
print("}")
PY
ip netns exec $s10k nft -f "$out/rules.nft"
ip netns exec $s0 nft -f - <<'NFT'
table inet bench {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7000 reject with tcp reset
  }
}
NFT
sleep 0.5
echo "rules loaded in s10k: $(ip netns exec $s10k nft -a list ruleset | grep -c '# handle' ) lines with a handle" >&2

echo "== conndoc's own breakdown in s10k (median of 10, ms; read/build/evaluate uncached) ==" >&2
CONNDOC_NO_CACHE=1 ip netns exec $s10k "$fwbench" 10.77.1.2 7000 10 | tee "$out/fwbench.json" >&2
ip netns exec $s10k nft -j list ruleset > "$out/r10k.json"
ip netns exec $s10k nft -a list ruleset > "$out/r10k.txt"
"$tgt/release/examples/fwparse" "$out/r10k.json" "$out/r10k.txt" | tee "$out/fwparse.json" >&2

noraw="setpriv --inh-caps=-net_raw --ambient-caps=-net_raw --bounding-set=-net_raw"
cache=$out/cache
run="env CONNDOC_CACHE_DIR=$cache"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
# One --prepare per command: the cold 10k run starts without the cache directory.
ip netns exec $c hyperfine -N -i --warmup 3 --runs "$runs" --export-json "$out/r.json" \
  -p true -n "nft list ruleset (10k rules)" "ip netns exec $s10k nft list ruleset" \
  -p true -n "nft -j list ruleset (10k rules)" "ip netns exec $s10k nft -j list ruleset" \
  -p true -n "conndoc diagnose, 1 rule" "$run $bin diagnose tcp://10.77.0.2:7000 --netns $s0 --no-color" \
  -p "rm -rf $cache" -n "conndoc diagnose, 10k rules, cold (ruleset changed)" \
     "$run $bin diagnose tcp://10.77.1.2:7000 --netns $s10k --no-color" \
  -p true -n "conndoc diagnose, 10k rules, warm (unchanged)" \
     "$run $bin diagnose tcp://10.77.1.2:7000 --netns $s10k --no-color" \
  -p true -n "conndoc diagnose, 10k rules, cache off" \
     "env CONNDOC_NO_CACHE=1 $bin diagnose tcp://10.77.1.2:7000 --netns $s10k --no-color" \
  -p true -n "conndoc diagnose, 1 rule, no capture" "$run $noraw $bin diagnose tcp://10.77.0.2:7000 --netns $s0 --no-color" \
  >/dev/null
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg); hyperfine, $runs runs each"
# What a warm run reported as its source.
ip netns exec $c $run $bin diagnose tcp://10.77.1.2:7000 --netns $s10k --evidence-out "$out/ev.json" >/dev/null 2>&1 || true
python3 -c '
import json, sys
def walk(x):
    if isinstance(x, dict):
        if x.get("role") == "target" and "sources" in x:
            yield x["sources"][0]
        for v in x.values(): yield from walk(v)
    elif isinstance(x, list):
        for v in x: yield from walk(v)
for s in walk(json.load(open(sys.argv[1]))): print("warm run, target nftables source:", json.dumps(s))' "$out/ev.json" >&2 || true
ip netns exec $c ping -c 20 -i 0.05 -q 10.77.0.2 | tail -1 > "$out/ping.txt"
python3 - "$out/r.json" "$out/fwbench.json" "$out/ping.txt" "$out/fwparse.json" <<'PY'
import json, sys, re
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
fw = json.load(open(sys.argv[2]))
fp = json.load(open(sys.argv[4]))
rtt = float(re.search(r"= [\d.]+/([\d.]+)/", open(sys.argv[3]).read()).group(1))
med = lambda n: r[n]["median"] * 1e3
print("| command | median | mean ± σ | ratio to `nft list ruleset` |")
print("|---|---|---|---|")
base = med("nft list ruleset (10k rules)")
for name, x in r.items():
    print(f"| {name} | {x['median']*1e3:.1f} ms | {x['mean']*1e3:.1f} ± {x['stddev']*1e3:.1f} ms | {x['median']*1e3/base:.2f}× |")
print()
one = med('conndoc diagnose, 1 rule')
cold = med('conndoc diagnose, 10k rules, cold (ruleset changed)') - one
warm = med('conndoc diagnose, 10k rules, warm (unchanged)') - one
off = med('conndoc diagnose, 10k rules, cache off') - one
print(f"- 10k rules add **{cold:.1f} ms** to the first diagnosis after a ruleset change (cold: dump, decode, "
      f"write the cache file) and **{warm:.1f} ms** to the following ones (warm: GETGEN, cache file read), "
      f"target ≤ 20 ms; with the cache off {off:.1f} ms. `nft list ruleset` alone takes {base:.1f} ms.")
print(f"- cache, in-process: GETGEN + memory hit {fw['memory_hit_ms']} ms; GETGEN + file read and decoded "
      f"{fw['disk_hit_ms']} ms, of which reading and decoding the file {fw['file_load_ms']} ms "
      f"({fw['file_bytes'] / 1e6:.2f} MB for {fw['rules']} rules; {fw['hits']}).")
print(f"- conndoc's own breakdown, uncached: read {fw['read_ms']} ms ({fw['source']}, with the four *-save), "
      f"of which the netlink dump and decode alone {fw['netlink_ms']} ms, "
      f"build {fw['build_ms']} ms, evaluate {fw['evaluate_ms']} ms over {fw['rules']} rules; verdict: {fw['verdict']}.")
print(f"- the `nft -j` fallback, pure part on its saved output: JSON parse {fp['json_ms']} ms, model build (incl. parse) {fp['build_ms']} ms, "
      f"evaluation {fp['evaluate_ms']} ms.")
d = med('conndoc diagnose, 1 rule') - med('conndoc diagnose, 1 rule, no capture')
print(f"- capture adds **{d:.2f} ms** to the whole run; the probe's round trip here is {rtt:.3f} ms "
      f"(ping), the capture waits for at most one echo round trip after the connect.")
PY
