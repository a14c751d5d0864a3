#!/usr/bin/env bash
# Benchmarks of `conndoc watch` and `conndoc check` (issue 6), side by side in one run:
#   1. the daemon holding a 5 s schedule over N loopback targets: lateness, CPU, memory,
#      CPU per probe; the dashboard index and /metrics render time with N targets;
#   2. prometheus-blackbox-exporter doing tcp_connect probes of the same targets at the same
#      rate (driven by bench/watch_bbdriver.py as Prometheus would): its CPU per probe;
#   3. `conndoc check` over N refused ports against `nmap -sT -T5` over the same ports.
# Everything runs inside a network namespace this script creates (and deletes on exit):
# the machine's own loopback and port ranges are not touched.
#
#   sudo bench/watch.sh                     # N=10000 DURATION=60
#   sudo N=2000 DURATION=30 bench/watch.sh  # quicker
# The listeners (bench/watch_server.py) hold every accepted connection open until the
# prober closes it (at most 10 s): a `tcp://` check fails a connection the server closes
# within 150 ms. The script fails (exit 1) unless every target is up for the daemon and
# ≥ 99.9 % of the exporter's probes succeed.
# Environment: CONNDOC (binary, default target/release/conndoc or $CARGO_TARGET_DIR/release/conndoc),
# N, DURATION (measured seconds), WARMUP (seconds), CHECK_CONCURRENCY, CHECK_N (ports for
# the check/nmap part, default N), CLOSE (the daemon's `close`: rst, the default, or fin),
# PARTS (which of watch,blackbox,check to run; default all three), KEEP=1 (keep the work
# directory).
#
# CPU is utime+stime of the prober's own process from /proc/PID/stat (all its threads; not
# the listeners' server, not the driver). On loopback the kernel runs the listener's half of
# each handshake in the connecting process's context, so both probers are charged for it
# alike.
set -euo pipefail

N=${N:-10000}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-20}
CHECK_CONCURRENCY=${CHECK_CONCURRENCY:-64}
CLOSE=${CLOSE:-rst}
PARTS=${PARTS:-watch,blackbox,check}
part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
INTERVAL=5
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONNDOC=${CONNDOC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conndoc}

need() { command -v "$1" >/dev/null || { echo "bench/watch.sh: $1 is required ($2)" >&2; exit 2; }; }
[ "$(id -u)" = 0 ] || { echo "bench/watch.sh: run as root (it creates a network namespace)" >&2; exit 2; }
[ -x "$CONNDOC" ] || { echo "bench/watch.sh: no conndoc binary at $CONNDOC (cargo build --release -p conndoc)" >&2; exit 2; }
need ip iproute2; need python3 python3; need curl curl; need nmap nmap; need bc bc
need prometheus-blackbox-exporter prometheus-blackbox-exporter
case "$CLOSE" in rst|fin) ;; *) echo "bench/watch.sh: CLOSE must be rst or fin" >&2; exit 2 ;; esac

NS=cdwbench$$
WORK=$(mktemp -d /tmp/conndoc-watch-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "${NS}c" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
# Run a command inside the namespace with enough file descriptors. An array, not a
# function, so that `"${NSX[@]}" cmd &` leaves $! = the command's own pid (ip and sh exec).
NSX=(ip netns exec "$NS" sh -c 'ulimit -n 262144 2>/dev/null; exec "$@"' sh)

FIRST=20000
LAST=$((FIRST + N - 1))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, USER_HZ (100/s)
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# curl inside the namespace
ncurl() { ip netns exec "$NS" curl -s "$@"; }
nmetric() { ncurl "http://127.0.0.1:9464/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "== $N listening targets on 127.0.0.1:$FIRST-$LAST in namespace $NS; $(nproc) cores; $CONNDOC"
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg); close = $CLOSE; parts $PARTS"
"${NSX[@]}" python3 "$HERE/watch_server.py" "$FIRST" "$N" > "$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/server.log" 2>/dev/null && break; sleep 0.2; done

# Sockets in TIME_WAIT in the namespace (what FIN-closing probes leave behind).
timewait() { ip netns exec "$NS" ss -Htan state time-wait | wc -l; }

# ---------------------------------------------------------------- 1. conndoc watch
if part watch; then
{
    echo "listen = \"127.0.0.1:9464\""
    echo "history = \"$WORK/history.db\""
    echo "[defaults]"
    echo "interval = \"${INTERVAL}s\""
    echo "timeout = \"2s\""
    echo "close = \"$CLOSE\""
    for p in $(seq "$FIRST" "$LAST"); do printf '[[target]]\nname = "t%d"\nurl = "tcp://127.0.0.1:%d"\n' "$p" "$p"; done
} > "$WORK/watch.toml"
"$CONNDOC" watch --check-config "$WORK/watch.toml"
"${NSX[@]}" "$CONNDOC" watch --config "$WORK/watch.toml" 2> "$WORK/watch.log" &
WPID=$!
PIDS+=($WPID)
up=0
for _ in $(seq 300); do
    up=$(nmetric 'conndoc_targets{state="up"}' || true)
    [ "${up:-0}" = "$N" ] && break
    sleep 0.5
done
# A figure over targets that are down measures failed checks, not health checks: fail.
if [ "${up:-0}" != "$N" ]; then
    echo "bench/watch.sh: only ${up:-0} of $N targets up after 150 s (down: $(nmetric 'conndoc_targets{state="down"}')); see $WORK/watch.log" >&2
    KEEP=1; exit 1
fi
echo "all $N targets up; warming up ${WARMUP}s"
sleep "$WARMUP"
c0=$(cpu_ticks "$WPID"); p0=$(nmetric conndoc_probes_total); l0=$(nmetric conndoc_probes_late_total)
s0=$(nmetric conndoc_probes_skipped_total); t0=$(date +%s.%N)
sleep "$DURATION"
c1=$(cpu_ticks "$WPID"); p1=$(nmetric conndoc_probes_total); l1=$(nmetric conndoc_probes_late_total)
s1=$(nmetric conndoc_probes_skipped_total); t1=$(date +%s.%N)
lagmax=$(nmetric conndoc_schedule_lag_max_seconds)
w_tw=$(timewait)
down=$(nmetric 'conndoc_targets{state="down"}')
w_hwm=$(hwm_kb "$WPID")
if [ "${down:-0}" != 0 ]; then
    echo "bench/watch.sh: $down of $N targets went down during the measurement; the figures are invalid" >&2
    KEEP=1; exit 1
fi
# Dashboard and /metrics with N targets: median of 7 requests each.
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
dash_s=$(for _ in $(seq 7); do ncurl -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9464/; done | med)
dash_bytes=$(ncurl http://127.0.0.1:9464/ | wc -c)
api_s=$(for _ in $(seq 7); do ncurl -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9464/api/targets; done | med)
met_s=$(for _ in $(seq 7); do ncurl -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9464/metrics; done | med)
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null || true

w_secs=$(echo "$t1 - $t0" | bc -l)
w_cpu=$(echo "($c1 - $c0) / 100" | bc -l)
w_probes=$((p1 - p0))
w_core=$(echo "100 * $w_cpu / $w_secs" | bc -l)
w_us=$(echo "1000000 * $w_cpu / $w_probes" | bc -l)
w_rate=$(echo "$w_probes / $w_secs" | bc -l)
fi

# ---------------------------------------------------------------- 2. blackbox exporter
if part blackbox; then
# Driven like Prometheus would (one /probe per target per interval) by a small asyncio
# client, because a real Prometheus scraping 2,000 targets/s needs more CPU than the
# 2-core machine has left; only the exporter's own CPU is counted.
printf 'modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n' > "$WORK/blackbox.yml"
"${NSX[@]}" prometheus-blackbox-exporter --config.file="$WORK/blackbox.yml" --web.listen-address=127.0.0.1:9115 > "$WORK/bb.log" 2>&1 &
BPID=$!
PIDS+=($BPID)
sleep 1
"${NSX[@]}" python3 "$HERE/watch_bbdriver.py" 9115 "$FIRST" "$N" "$INTERVAL" $((WARMUP + DURATION + 5)) > "$WORK/driver.out" 2>&1 &
DPID=$!
PIDS+=($DPID)
echo "blackbox exporter over the same $N targets at the same rate; warming up ${WARMUP}s"
sleep "$WARMUP"
drv() { tail -1 "$WORK/driver.out"; }
read -r d0 ok0 late0 < <(drv); b0=$(cpu_ticks "$BPID"); tb0=$(date +%s.%N)
sleep "$DURATION"
read -r d1 ok1 late1 < <(drv); b1=$(cpu_ticks "$BPID"); tb1=$(date +%s.%N)
b_hwm=$(hwm_kb "$BPID")
b_tw=$(timewait)
b_probes=$((d1 - d0))
b_ok=$(echo "($ok1 - $ok0) / $b_probes" | bc -l)
b_late=$((late1 - late0))
if [ "$(echo "$b_ok < 0.999" | bc -l)" = 1 ]; then
    echo "bench/watch.sh: only $(echo "100 * $b_ok" | bc -l | cut -c1-6) % of the exporter's probes succeeded; the figures are invalid" >&2
    KEEP=1; exit 1
fi
b_secs=$(echo "$tb1 - $tb0" | bc -l)
b_cpu=$(echo "($b1 - $b0) / 100" | bc -l)
b_us=$(echo "1000000 * $b_cpu / $b_probes" | bc -l)
b_core=$(echo "100 * $b_cpu / $b_secs" | bc -l)
b_rate=$(echo "$b_probes / $b_secs" | bc -l)
kill "$DPID" "$BPID" 2>/dev/null || true
wait "$DPID" "$BPID" 2>/dev/null || true
fi

# ---------------------------------------------------------------- 3. check vs nmap (refused ports)
if part check; then
# The same ports in a fresh namespace, where nothing listens: the first one still holds
# the ~100,000 TIME_WAIT sockets the blackbox exporter's FIN closes left, which slow every
# connect and socket dump there (bench/check.sh measures the same in its own namespace).
kill "${PIDS[0]}" 2>/dev/null || true
wait "${PIDS[0]}" 2>/dev/null || true
sleep 2   # let the kernel finish tearing down the listeners and the exporter's sockets
ip netns add "${NS}c"
ip netns exec "${NS}c" ip link set lo up
CNSX=(ip netns exec "${NS}c")
CHECK_N=${CHECK_N:-$N}
CLAST=$((FIRST + CHECK_N - 1))
{
    echo "history = \"$WORK/unused.db\""
    for p in $(seq "$FIRST" "$CLAST"); do printf '[[target]]\nname = "p%d"\nurl = "tcp://127.0.0.1:%d"\ntimeout = "2s"\n' "$p" "$p"; done
} > "$WORK/check.toml"
cs=$(date +%s.%N)
"${CNSX[@]}" "$CONNDOC" check --config "$WORK/check.toml" --concurrency "$CHECK_CONCURRENCY" --no-progress > "$WORK/check.out" || true
ce=$(date +%s.%N)
c_secs=$(echo "$ce - $cs" | bc -l)
c_rate=$(echo "$CHECK_N / $c_secs" | bc -l)
c_nolistener=$(grep -c ' no-listener ' "$WORK/check.out" || true)
ns_=$(date +%s.%N)
"${CNSX[@]}" nmap -sT -T5 -n -Pn -p "$FIRST-$CLAST" 127.0.0.1 > "$WORK/nmap.out"
ne=$(date +%s.%N)
n_secs=$(echo "$ne - $ns_" | bc -l)
n_rate=$(echo "$CHECK_N / $n_secs" | bc -l)
n_closed=$(grep -oE '[0-9]+ (closed|filtered)' "$WORK/nmap.out" | head -1 || true)
fi

printf '\n== results (N=%d, interval %ds, measured %ss)\n' "$N" "$INTERVAL" "$DURATION"
if part watch; then
printf 'conndoc watch:     %8.0f probes/s  %6.2f%% of one core  %7.1f µs CPU/probe  peak RSS %d MiB\n' "$w_rate" "$w_core" "$w_us" $((w_hwm / 1024))
printf '                   late (> 1 interval): %d  skipped: %d  max schedule lag: %ss  down: %s  close: %s  TIME_WAIT sockets: %d\n' $((l1 - l0)) $((s1 - s0)) "$lagmax" "$down" "$CLOSE" "$w_tw"
printf 'dashboard index (%d targets, %d bytes): %ss median; /api/targets %ss; /metrics %ss\n' "$N" "$dash_bytes" "$dash_s" "$api_s" "$met_s"
fi
if part blackbox; then
printf 'blackbox exporter: %8.0f probes/s  %6.2f%% of one core  %7.1f µs CPU/probe  peak RSS %d MiB  success %.3f  late requests %d\n' "$b_rate" "$b_core" "$b_us" $((b_hwm / 1024)) "$b_ok" "$b_late"
printf '                   TIME_WAIT sockets: %d\n' "$b_tw"
if part watch; then printf 'CPU per probe, conndoc / blackbox: %.3f\n' "$(echo "$w_us / $b_us" | bc -l)"; fi
fi
if part check; then
printf 'conndoc check:  %d ports in %.2fs = %8.0f ports/s (concurrency %d), %d with cause no-listener\n' "$CHECK_N" "$c_secs" "$c_rate" "$CHECK_CONCURRENCY" "$c_nolistener"
printf 'nmap -sT -T5:   %d ports in %.2fs = %8.0f ports/s (%s)\n' "$CHECK_N" "$n_secs" "$n_rate" "$n_closed"
printf 'check rate / nmap rate: %.3f\n' "$(echo "$c_rate / $n_rate" | bc -l)"
fi
echo "== load average after $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
