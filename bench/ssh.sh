#!/usr/bin/env bash
# `conndoc diagnose --ssh` on a failing target against what a user does instead, in one run:
# the local diagnosis on the server plus one `ssh HOST true` (the login it costs).
#
#   sudo bench/ssh.sh [RUNS]      (default 20 runs of each command, interleaved)
#   PROFILE=debug sudo bench/ssh.sh   (the dev build: all four commands use the same binary)
#
# Builds two lab network namespaces joined by a veth pair (nothing changes outside them),
# starts a real sshd (Debian openssh-server) in the server one with keys made here by
# ssh-keygen, and a service bound to 127.0.0.1:7000 there (a failing target: bound-to-loopback).
# Then, per round, times whole processes:
#   A  client: conndoc diagnose tcp://10.88.0.2:7000 --ssh root@10.88.0.2   (one SSH session)
#   B  server: conndoc diagnose tcp://10.88.0.2:7000                          (local diagnosis)
#   C  client: ssh root@10.88.0.2 true                                        (one login)
#   D  client: conndoc diagnose tcp://10.88.0.2:7000                          (client side only)
# and prints medians and the ratio A / (B + C); the budget is 1.20.
set -euo pipefail
RUNS=${1:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ "$(id -u)" = 0 ] || { echo "bench/ssh.sh: needs root (network namespaces, sshd)" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "bench/ssh.sh: /usr/sbin/sshd missing (openssh-server)" >&2; exit 2; }

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p conndoc --bin conndoc --bin conndoc-labtool --manifest-path "$ROOT/Cargo.toml"
else
  cargo build -q -p conndoc --bin conndoc --bin conndoc-labtool --manifest-path "$ROOT/Cargo.toml"
fi
BIN=$CARGO_TARGET_DIR/$PROFILE
C=cdbsc$$
S=cdbss$$
DIR=$(mktemp -d /tmp/conndoc-bench-ssh.XXXXXX)
cleanup() {
  for ns in "$C" "$S"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  wait 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$S" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$C"
ip netns add "$S"
ip -n "$C" link set lo up
ip -n "$S" link set lo up
ip -n "$C" link add eth0 type veth peer name eth0 netns "$S"
ip -n "$C" addr add 10.88.0.1/24 dev eth0
ip -n "$S" addr add 10.88.0.2/24 dev eth0
ip -n "$C" link set eth0 up
ip -n "$S" link set eth0 up

ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$DIR/client_key"
cp "$DIR/client_key.pub" "$DIR/authorized_keys"
echo "10.88.0.2 $(cut -d' ' -f1,2 "$DIR/host_key.pub")" >"$DIR/known_hosts"
mkdir -p "$DIR/bin" /run/sshd
ln -s "$BIN/conndoc" "$DIR/bin/conndoc"
cat >"$DIR/sshd_config" <<EOF
ListenAddress 10.88.0.2
HostKey $DIR/host_key
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $DIR/sshd.pid
SetEnv PATH=$DIR/bin:/usr/sbin:/usr/bin:/sbin:/bin
MaxStartups 100
EOF
printf 'Host *\n  User root\n  IdentitiesOnly yes\n  IdentityAgent none\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n' >"$DIR/config"
SSH="ssh -F $DIR/config -i $DIR/client_key -o UserKnownHostsFile=$DIR/known_hosts"
ip netns exec "$S" /usr/sbin/sshd -D -e -f "$DIR/sshd_config" 2>"$DIR/sshd.log" &
ip netns exec "$S" "$BIN/conndoc-labtool" serve 127.0.0.1 7000 >/dev/null 2>&1 &
for _ in $(seq 1 50); do
  ip netns exec "$S" ss -Hltn | grep -q ':22 ' && ip netns exec "$S" ss -Hltn | grep -q ':7000 ' && break
  sleep 0.1
done
T=tcp://10.88.0.2:7000
# Sanity: the --ssh run reaches its verdict through the remote facts.
# (A generous --ssh-timeout: a loaded machine must not turn the benchmark into a timeout test.)
ip netns exec "$C" env CONNDOC_SSH_COMMAND="$SSH" "$BIN/conndoc" diagnose "$T" --ssh root@10.88.0.2 --ssh-timeout 30s --json >"$DIR/sanity.json" || true
grep -q '"cause": "bound-to-loopback"' "$DIR/sanity.json" || { echo "bench/ssh.sh: --ssh run did not find bound-to-loopback:" >&2; grep -A3 '"skipped"' "$DIR/sanity.json" >&2; cat "$DIR/sshd.log" >&2; exit 1; }

# One timed run (µs) of a command inside a namespace.
t_us() {
  local ns=$1; shift
  ip netns exec "$ns" bash -c 't0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; t1=$EPOCHREALTIME; echo $(( ${t1/./} - ${t0/./} ))' _ "$@"
}
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg); $RUNS interleaved rounds"
: >"$DIR/a"; : >"$DIR/b"; : >"$DIR/c"; : >"$DIR/d"
for ((i = 0; i < RUNS; i++)); do
  t_us "$C" env CONNDOC_SSH_COMMAND="$SSH" "$BIN/conndoc" diagnose "$T" --ssh root@10.88.0.2 --ssh-timeout 30s --json >>"$DIR/a"
  t_us "$S" "$BIN/conndoc" diagnose "$T" --json >>"$DIR/b"
  t_us "$C" $SSH root@10.88.0.2 true >>"$DIR/c"
  t_us "$C" "$BIN/conndoc" diagnose "$T" --json >>"$DIR/d"
done
med() { sort -n "$1" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'; }
A=$(med "$DIR/a"); B=$(med "$DIR/b"); Cc=$(med "$DIR/c"); D=$(med "$DIR/d")
printf '%-64s %9s\n' "command (median of $RUNS, whole process, ms)" "ms"
printf '%-64s %9s\n' "A  conndoc diagnose $T --ssh root@10.88.0.2" "$A"
printf '%-64s %9s\n' "B  conndoc diagnose $T on the server (local diagnosis)" "$B"
printf '%-64s %9s\n' "C  ssh root@10.88.0.2 true" "$Cc"
printf '%-64s %9s\n' "D  conndoc diagnose $T on the client, no --ssh" "$D"
awk -v a="$A" -v b="$B" -v c="$Cc" 'BEGIN { printf "ratio A / (B + C) = %.3f   (budget 1.20)\n", a / (b + c) }'
echo "sshd logins during the run: $(grep -c 'Accepted publickey' "$DIR/sshd.log" || true) (expected $((2 * RUNS + 1)): one per --ssh run, one per ssh true, one sanity run)"
echo "profile: $PROFILE; load: $(uptime); $(nproc) cores"
