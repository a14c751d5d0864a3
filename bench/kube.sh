#!/usr/bin/env bash
# A Kubernetes node with N Services (issue 12): what diagnosing one Service adds to a
# diagnosis, against one `iptables-save` (iptables mode) / one `nft list ruleset` (nftables
# mode) of that node, side by side in one run. The node is a network namespace this script
# creates (with an uplink namespace for its default route) and deletes on exit.
#
#   sudo bench/kube.sh                  # N=5000 Services, RUNS=7
# Environment: CONNDOC (binary, default target/release/conndoc), N, RUNS, KEEP=1.
#
# Rules are kube-proxy's shapes (lab/kube/*.rules, *.nft; kubernetes/kubernetes
# pkg/proxy/{iptables,nftables}/proxier.go): Services alternate one and two endpoints
# (`statistic random` / `numgen random mod 2`); the last Service has no endpoints, and is
# the one diagnosed. Chain hashes are counters here, not sha256 (names only, same lengths).
# "Adds" = median(diagnose the Service) - median(diagnose a plain refused address on the
# same node): both read the same rulesets, the difference is the Service's recognition.
set -euo pipefail

N=${N:-5000}
RUNS=${RUNS:-7}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONNDOC=${CONNDOC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conndoc}

[ "$(id -u)" = 0 ] || { echo "bench/kube.sh: run as root (it creates network namespaces)" >&2; exit 2; }
[ -x "$CONNDOC" ] || { echo "bench/kube.sh: no conndoc binary at $CONNDOC (cargo build --release -p conndoc)" >&2; exit 2; }
for t in ip nft iptables-nft-restore iptables-nft-save awk; do command -v "$t" >/dev/null || { echo "bench/kube.sh: $t is required" >&2; exit 2; }; done

NS=cdkb$$
UP=cdkb$$u
WORK=$(mktemp -d /tmp/conndoc-kube-bench.XXXXXX)
cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$UP" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

node() {
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$UP" 2>/dev/null || true
    ip netns add "$NS"; ip netns add "$UP"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add eth0 type veth peer name eth0 netns "$UP"
    ip -n "$NS" addr add 10.77.9.2/24 dev eth0; ip -n "$UP" addr add 10.77.9.1/24 dev eth0
    ip -n "$NS" link set eth0 up; ip -n "$UP" link set eth0 up
    ip -n "$NS" route add default via 10.77.9.1
    ip netns exec "$NS" ping -q -c 1 -W 1 10.77.9.1 >/dev/null || true
}

# Service i: ClusterIP 10.96.(i/250).(i%250+1):80, endpoints 10.244.(i/250).(i%250+1):8080
# (and 10.245.… for odd i). The last one has none.
gen_iptables() {
    awk -v n="$N" 'function h(p, i) { return sprintf("%s%016X", p, i) }
    function ip(a, i) { return sprintf("%s.%d.%d", a, int(i / 250), i % 250 + 1) }
    BEGIN {
      print "*filter"; print ":INPUT ACCEPT [0:0]"; print ":FORWARD ACCEPT [0:0]"; print ":OUTPUT ACCEPT [0:0]"
      print ":KUBE-SERVICES - [0:0]"; print ":KUBE-EXTERNAL-SERVICES - [0:0]"; print ":KUBE-FORWARD - [0:0]"
      print "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
      print "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"
      print "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
      printf "-A KUBE-SERVICES -m comment --comment \"bench/svc%d:http has no endpoints\" -m tcp -p tcp -d %s --dport 80 -j REJECT\n", n - 1, ip("10.96", n - 1)
      print "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
      print "COMMIT"
      print "*nat"; print ":PREROUTING ACCEPT [0:0]"; print ":INPUT ACCEPT [0:0]"; print ":OUTPUT ACCEPT [0:0]"; print ":POSTROUTING ACCEPT [0:0]"
      print ":KUBE-SERVICES - [0:0]"; print ":KUBE-MARK-MASQ - [0:0]"; print ":KUBE-NODEPORTS - [0:0]"
      for (i = 0; i < n - 1; i++) { print ":" h("KUBE-SVC-", i) " - [0:0]"; print ":" h("KUBE-SEP-", 2 * i) " - [0:0]"; if (i % 2) print ":" h("KUBE-SEP-", 2 * i + 1) " - [0:0]" }
      print "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
      print "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
      print "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"
      for (i = 0; i < n - 1; i++) {
        s = "bench/svc" i ":http"; c = ip("10.96", i)
        printf "-A KUBE-SERVICES -m comment --comment \"%s cluster IP\" -m tcp -p tcp -d %s --dport 80 -j %s\n", s, c, h("KUBE-SVC-", i)
        printf "-A %s -m comment --comment \"%s cluster IP\" -m tcp -p tcp -d %s --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n", h("KUBE-SVC-", i), s, c
        k = (i % 2) ? 2 : 1
        for (e = 0; e < k; e++) {
          ep = ip(e ? "10.245" : "10.244", i); sep = h("KUBE-SEP-", 2 * i + e)
          if (k == 2 && e == 0) printf "-A %s -m comment --comment \"%s -> %s:8080\" -m statistic --mode random --probability 0.5000000000 -j %s\n", h("KUBE-SVC-", i), s, ep, sep
          else printf "-A %s -m comment --comment \"%s -> %s:8080\" -j %s\n", h("KUBE-SVC-", i), s, ep, sep
          printf "-A %s -m comment --comment %s -s %s -j KUBE-MARK-MASQ\n", sep, s, ep
          printf "-A %s -m comment --comment %s -m tcp -p tcp -j DNAT --to-destination %s:8080\n", sep, s, ep
        }
      }
      print "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
      print "COMMIT"
    }'
}

gen_nftables() {
    # The base of lab/kube/nftables.nft (kube-proxy's baseRules), then the Services.
    awk '/^# default\/web:http/ { exit } { print }' "$ROOT/lab/kube/nftables.nft"
    awk -v n="$N" 'function h(i) { return sprintf("%08X", i) }
    function ip(a, i) { return sprintf("%s.%d.%d", a, int(i / 250), i % 250 + 1) }
    BEGIN {
      for (i = 0; i < n - 1; i++) {
        s = "bench/svc" i "/tcp/http"; c = ip("10.96", i); svc = "service-" h(i) "-" s
        k = (i % 2) ? 2 : 1; vm = ""
        for (e = 0; e < k; e++) {
          ep = ip(e ? "10.245" : "10.244", i); epc = "endpoint-" h(2 * i + e) "-" s "__" ep "/8080"
          print "add chain ip kube-proxy " epc
          print "add rule ip kube-proxy " epc " ip saddr " ep " jump mark-for-masquerade"
          print "add rule ip kube-proxy " epc " meta l4proto tcp dnat to " ep ":8080"
          vm = vm (e ? " , " : "") e " : goto " epc
        }
        print "add chain ip kube-proxy " svc
        print "add rule ip kube-proxy " svc " ip daddr " c " ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
        print "add rule ip kube-proxy " svc " numgen random mod " k " vmap { " vm " }"
        print "add element ip kube-proxy cluster-ips { " c " }"
        print "add element ip kube-proxy service-ips { " c " . tcp . 80 : goto " svc " }"
      }
      c = ip("10.96", n - 1)
      print "add element ip kube-proxy cluster-ips { " c " }"
      print "add element ip kube-proxy no-endpoint-services { " c " . tcp . 80 comment \"bench/svc" n - 1 ":http\" : goto reject-chain }"
    }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms() { # run "$@" in the node, print elapsed ms
    local t0 t1
    t0=$(date +%s%N); ip netns exec "$NS" "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}

SVC=$(awk -v i=$((N - 1)) 'BEGIN { printf "10.96.%d.%d", int(i / 250), i % 250 + 1 }')
run_mode() { # mode, listing command...
    local mode=$1; shift
    local list=() svc=() other=() verdict
    verdict=$( (ip netns exec "$NS" "$CONNDOC" diagnose "tcp://$SVC:80" --timeout 1s --json || true) | awk -F'"' '/"cause"/ { print $4; exit }')
    for _ in $(seq "$RUNS"); do # alternating, one run
        list+=("$(ms "$@")")
        svc+=("$(ms "$CONNDOC" diagnose "tcp://$SVC:80" --timeout 1s --json)")
        other+=("$(ms "$CONNDOC" diagnose "tcp://10.77.9.1:9" --timeout 1s --json)")
    done
    local l s o
    l=$(printf '%s\n' "${list[@]}" | median); s=$(printf '%s\n' "${svc[@]}" | median); o=$(printf '%s\n' "${other[@]}" | median)
    printf '%-9s %6d Services  %-22s %6d ms | diagnose Service %6d ms (%s) | diagnose other %6d ms | adds %5d ms: ratio %s× listing\n' \
        "$mode" "$N" "$*" "$l" "$s" "$verdict" "$o" $((s - o)) "$(awk -v a=$((s - o)) -v b="$l" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
}

echo "load: $(uptime); nproc $(nproc); binary $CONNDOC"
node
gen_iptables >"$WORK/iptables.rules"
ip netns exec "$NS" iptables-nft-restore <"$WORK/iptables.rules"
echo "iptables mode: $(ip netns exec "$NS" iptables-nft-save | grep -c '^-A') rules"
run_mode iptables iptables-nft-save

node
gen_nftables >"$WORK/nftables.nft"
ip netns exec "$NS" nft -f "$WORK/nftables.nft"
echo "nftables mode: $(ip netns exec "$NS" nft -a list ruleset | grep -c 'handle [0-9]*$') rules and chains, $((N)) Services"
run_mode nftables nft list ruleset
echo "load after: $(uptime); nproc $(nproc)"
