#!/usr/bin/env bash
# Host inspection cost with a large socket table, side by side with ss, in one run.
#
#   sudo bench/host.sh [SOCKETS] [RUNS]      (default 50000 sockets, 20 runs each)
#
# Builds a lab network namespace (nothing changes outside it), fills its TCP table with
# SOCKETS sockets (SOCKETS/2 held client connections + their accepted server ends, over
# ports 7000-7002), adds a quiet listener on 6379, then times whole processes inside the
# namespace: `ss -tan`, `ss -tanp`, `ss -tlnp` against conndoc's inspection of one port
# (examples/inspect: sock_diag with kernel filters + owner lookup + counters + sysctls;
# THOROUGH=1 adds the per-port state walk that runs after a failed probe),
# `conndoc listeners --port` and `conndoc listeners`. Prints medians and ratios.
set -euo pipefail
N=${1:-50000}
RUNS=${2:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "bench/host.sh: needs root (network namespaces)" >&2; exit 2; }

cargo build --release -q -p conndoc --bin conndoc --bin conndoc-labtool --manifest-path "$ROOT/Cargo.toml"
cargo build --release -q -p conndoc-host --example inspect --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release
NS=cdbench$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Anything else still inside the namespace was started by this script.
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns sysctl -qw net.ipv4.ip_local_port_range="1024 65000"

# A process may hold at most RLIMIT_NOFILE sockets (and raising the hard limit needs
# CAP_SYS_RESOURCE), so the connections are spread over PAIRS server/client pairs on ports
# 7000, 7001, …; port 7000 is the "busy" one.
PAIRS=3
PER=$(( (N / 2 + PAIRS - 1) / PAIRS ))
HALF=$PER
LIMIT=$(ulimit -Hn)
[ "$LIMIT" = unlimited ] || [ "$PER" -lt $((LIMIT - 50)) ] || { echo "bench/host.sh: $PER connections per process exceed the fd limit $LIMIT" >&2; exit 2; }
# `ip netns exec` and `bash -c exec` both replace themselves, so $! is the labtool's pid.
ip netns exec "$NS" bash -c "exec $BIN/conndoc-labtool serve 0.0.0.0 6379" 2>/dev/null &
PIDS+=($!)
for ((k = 0; k < PAIRS; k++)); do
  ip netns exec "$NS" bash -c "ulimit -n $((PER + 100)); exec $BIN/conndoc-labtool serve 127.0.0.1 $((7000 + k)) --backlog 4096" 2>/dev/null &
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
echo "sockets in the namespace's table: $(in_ns ss -Htan | wc -l) (kernel $(uname -r), $(nproc) cores)"

# Median wall time (ms) of RUNS runs of a command, measured inside the namespace.
median() {
  in_ns bash -c '
    runs=$1; shift
    for ((i = 0; i < runs; i++)); do
      t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; t1=$EPOCHREALTIME
      echo "$(( (${t1/./} - ${t0/./}) ))"
    done | sort -n | awk "{a[NR]=\$1} END {printf \"%.2f\", a[int((NR+1)/2)]/1000}"
  ' _ "$RUNS" "$@"
}

ss_tan=$(median ss -tan)
ss_tanp=$(median ss -tanp)
ss_tlnp=$(median ss -tlnp)
insp_plain=$(median "$BIN/examples/inspect" 7000)
insp_thorough=$(median env THOROUGH=1 "$BIN/examples/inspect" 7000)
insp_busy=$(median "$BIN/examples/inspect" 7000 conndoc-labtool)
insp_quiet=$(median "$BIN/examples/inspect" 6379 conndoc-labtool)
ls_port=$(median "$BIN/conndoc" listeners --port 7000)
ls_all=$(median "$BIN/conndoc" listeners)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '%-58s %10s %8s\n' "command (median of $RUNS, whole process)" "ms" "ratio"
printf '%-58s %10s %8s\n' "ss -tan" "$ss_tan" "1"
printf '%-58s %10s %8s\n' "inspect 7000 (busy port: $HALF conns) vs ss -tan" "$insp_plain" "$(ratio "$insp_plain" "$ss_tan")"
printf '%-58s %10s %8s\n' "  … with --expect conndoc-labtool (7 such processes)" "$insp_busy" "$(ratio "$insp_busy" "$ss_tan")"
printf '%-58s %10s %8s\n' "  … thorough (after a failed probe: + per-port state walk)" "$insp_thorough" "$(ratio "$insp_thorough" "$ss_tan")"
printf '%-58s %10s %8s\n' "inspect 6379 (quiet port) vs ss -tan" "$insp_quiet" "$(ratio "$insp_quiet" "$ss_tan")"
printf '%-58s %10s %8s\n' "ss -tanp" "$ss_tanp" "1"
printf '%-58s %10s %8s\n' "conndoc listeners --port 7000 (listener→process) vs ss -tanp" "$ls_port" "$(ratio "$ls_port" "$ss_tanp")"
printf '%-58s %10s %8s\n' "ss -tlnp" "$ss_tlnp" "1"
printf '%-58s %10s %8s\n' "conndoc listeners vs ss -tlnp" "$ls_all" "$(ratio "$ls_all" "$ss_tlnp")"
