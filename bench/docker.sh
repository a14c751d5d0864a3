#!/usr/bin/env bash
# `conndoc diagnose` of each Docker fault vs `docker ps` and `docker inspect CONTAINER` (what
# a person runs first), whole processes, median of N interleaved runs, all in one run, as
# ratios. Targets: conndoc ≤ 1× docker ps and ≤ 0.5× docker inspect.
#
# Builds its own world like the lab (docs/lab.md "Docker"): a network namespace, dockerd in
# it (nsenter --net, private mount namespace, own data/exec root and socket), the test image
# imported from host binaries, one container per fault. Everything is removed on exit.
# Usage: sudo [CONNDOC_BIN=path] bench/docker.sh [runs]     (root; Debian docker.io, redis-server, busybox-static)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
[ "$(id -u)" = 0 ] || { echo "bench/docker.sh needs root" >&2; exit 2; }
# CONNDOC_BIN=path runs another build (e.g. target/debug/conndoc) without building.
if [ -z "${CONNDOC_BIN:-}" ]; then cargo build --release --quiet -p conndoc; fi
bin=${CONNDOC_BIN:-$PWD/target/release/conndoc}
ns=cdkbench$$
st=/tmp/cdkb-$$
mkdir -p "$st"
dpid=
cleanup() {
  set +e
  if [ -S "$st/docker.sock" ]; then
    ids=$(DOCKER_HOST=unix://$st/docker.sock timeout 10 docker ps -aq)
    [ -n "$ids" ] && DOCKER_HOST=unix://$st/docker.sock timeout 20 docker rm -f $ids >/dev/null
  fi
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$st"
  # What dockerd creates outside its namespace, if it was not there before.
  [ -n "${had_key:-}" ] || rm -f /etc/docker/key.json
  [ -n "${had_run:-}" ] || rm -rf /run/docker
  # (runc removes the containers' own cgroups as they go: retry briefly)
  [ -n "${had_cg:-}" ] || for _ in $(seq 20); do
    for d in /sys/fs/cgroup/*/docker; do rmdir "$d" 2>/dev/null; done
    ls -d /sys/fs/cgroup/*/docker >/dev/null 2>&1 || break; sleep 0.1
  done
}
[ -e /etc/docker/key.json ] && had_key=1
[ -e /run/docker ] && had_run=1
ls -d /sys/fs/cgroup/*/docker >/dev/null 2>&1 && had_cg=1
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
unshare --mount --propagation private -- nsenter --net=/run/netns/$ns -- dockerd \
  --data-root "$st/data" --exec-root "$st/exec" --pidfile "$st/docker.pid" -H "unix://$st/docker.sock" \
  --storage-driver overlay2 --containerd-namespace "$ns-ctr" --containerd-plugins-namespace "$ns-plg" \
  --log-level warn >"$st/dockerd.log" 2>&1 &
dpid=$!
export DOCKER_HOST=unix://$st/docker.sock
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done

# The test image: redis-server, busybox, their libraries and the loader (ldd).
fs=$st/rootfs
mkdir -p "$fs/bin" "$fs/tmp" "$fs/etc"
cp "$(command -v busybox)" "$fs/bin/busybox"
cp "$(command -v redis-server)" "$fs/bin/redis-server"
for a in sh echo sleep cat; do ln -s busybox "$fs/bin/$a"; done
for f in $(ldd "$(command -v redis-server)" | awk '/=>/{print $3} !/=>/{print $1}' | grep '^/'); do
  mkdir -p "$fs$(dirname "$f")"; cp -L "$f" "$fs$f"
done
tar -C "$fs" -c . | docker import - conndoc-lab/redis:1 >/dev/null
R="redis-server --save '' --appendonly no"
docker run -d --name notpub conndoc-lab/redis:1 sh -c "exec $R --port 6381 --bind 0.0.0.0 --protected-mode no" >/dev/null
docker run -d --name loop -p 6382:6382 conndoc-lab/redis:1 sh -c "exec $R --port 6382 --bind 127.0.0.1" >/dev/null
docker run -d --name wrong -p 6393:6383 conndoc-lab/redis:1 sh -c "exec $R --port 6383 --bind 0.0.0.0 --protected-mode no" >/dev/null
docker run -d --name stopped -p 6384:6384 conndoc-lab/redis:1 sh -c "echo 'Fatal error' >&2; exit 1" >/dev/null
docker wait stopped >/dev/null
sleep 1 # the three redis servers up

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg); namespace $ns, $runs interleaved runs"
python3 - "$ns" "$bin" "$runs" <<'PY'
import os, statistics, subprocess, sys, time
ns, bin_, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cmds = [
    ("docker ps", ["docker", "ps"], None),
    ("docker inspect loop", ["docker", "inspect", "loop"], None),
    ("diagnose: container-port-not-published", [bin_, "diagnose", "redis://127.0.0.1:6381", "--json", "--timeout", "1s"], "container-port-not-published"),
    ("diagnose: container-bound-to-loopback (tcp)", [bin_, "diagnose", "tcp://127.0.0.1:6382", "--json", "--timeout", "1s"], "container-bound-to-loopback"),
    ("diagnose: wrong-port", [bin_, "diagnose", "redis://127.0.0.1:6383", "--json", "--timeout", "1s"], "wrong-port"),
    ("diagnose: container-not-running", [bin_, "diagnose", "redis://127.0.0.1:6384", "--json", "--timeout", "1s"], "container-not-running"),
]
def run(argv):
    t = time.perf_counter()
    p = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "--"] + argv, capture_output=True, text=True)
    return time.perf_counter() - t, p.stdout
for name, argv, want in cmds:  # warm up and check each verdict once
    _, out = run(argv)
    if want and f'"cause": "{want}"' not in out and f'"cause":"{want}"' not in out:
        sys.exit(f"{name}: verdict is not {want}:\n{out[:2000]}")
# Where a diagnosis spends its time, from its own evidence (one run each).
for name, argv, want in cmds:
    if not want:
        continue
    evf = f"/tmp/cdkb-ev-{os.getpid()}.json"
    run(argv + ["--evidence-out", evf])
    import json
    ev = json.load(open(evf))
    os.unlink(evf)
    st = lambda k: (ev.get(k) or {}).get("elapsed_us")
    b = ev.get("backend") or {}
    print(f"stages of {name}: whole {ev['elapsed_us']/1e3:.1f} ms; host {(st('host') or 0)/1e3:.1f}, "
          f"containers {(st('containers') or 0)/1e3:.1f} ({len((ev.get('containers') or {}).get('containers', []))} inspected of "
          f"{(ev.get('containers') or {}).get('total')}), backend search {b.get('search_us', 0)/1e3:.1f} ms "
          f"({b.get('searched', 0)} namespaces), firewall read {'yes' if ev.get('firewall') else 'no'}")
times = {name: [] for name, _, _ in cmds}
for _ in range(runs):  # interleaved, so load changes hit every command alike
    for name, argv, _ in cmds:
        times[name].append(run(argv)[0])
ps = statistics.median(times["docker ps"])
ins = statistics.median(times["docker inspect loop"])
print(f"{'command (median of %d, whole process)' % runs:<50} {'ms':>8} {'× docker ps':>12} {'× inspect':>10}")
for name, _, _ in cmds:
    m = statistics.median(times[name])
    print(f"{name:<50} {m*1e3:8.2f} {m/ps:12.2f} {m/ins:10.2f}")
PY
echo "== load average after $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
