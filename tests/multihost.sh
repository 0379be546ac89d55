#!/usr/bin/env bash
# multihost.sh - adampi-replay and adampi-train on two "hosts" made of Linux network namespaces on
# this machine: a bridge, a veth pair per host, Open MPI over TCP between them, remote ranks started
# through a plm_rsh_agent that runs `ip netns exec HOST`. 2 ranks per host; the results (plain
# replay, a checkpoint saved on the two hosts resumed on one, and a training run) must equal the
# single-host run bit for bit.
# Delay and loss are added with tc netem where the kernel has it, else the links are slowed with tbf.
# Skips (exit 77, ctest's "Skipped", with a message) where namespaces cannot be made. Traffic stays
# inside the namespaces this script makes.
set -euo pipefail

REPLAY=${1:?usage: multihost.sh path/to/adampi-replay fixtures-dir [path/to/adampi-train]}
FIXTURES=${2:?usage: multihost.sh path/to/adampi-replay fixtures-dir [path/to/adampi-train]}
TRAIN=${3:-}

if [ "$(id -u)" -ne 0 ] || ! command -v ip > /dev/null; then
  echo "skipped: multi-host test needs root and iproute2 (ip netns)"; exit 77
fi
tag=$$
net=$((100 + tag % 100))
h1=adampi-$tag-h1 h2=adampi-$tag-h2 br=adb$tag
work=$(mktemp -d)
cleanup() {
  ip netns del "$h1" 2>/dev/null || true
  ip netns del "$h2" 2>/dev/null || true
  ip link del "$br" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
if ! ip netns add "$h1" 2>/dev/null; then echo "skipped: cannot create network namespaces here"; exit 77; fi
ip netns add "$h2"
ip link add "$br" type bridge
ip link set "$br" up
ip addr add "10.$net.0.254/24" dev "$br"
i=0
for h in "$h1" "$h2"; do
  i=$((i + 1))
  ip link add "v$tag$i" type veth peer name eth0 netns "$h"
  ip link set "v$tag$i" master "$br"
  ip link set "v$tag$i" up
  ip netns exec "$h" ip addr add "10.$net.0.$i/24" dev eth0
  ip netns exec "$h" ip link set eth0 up
  ip netns exec "$h" ip link set lo up
done
# Degrade the links: delay and loss with netem where the kernel has it; else (this machine's
# kernel has no netem) a token-bucket filter: 40 Mbit/s links whose queues add up to 20 ms.
netem="on plain links (this kernel has neither netem nor tbf)"
if ip netns exec "$h1" tc qdisc add dev eth0 root netem delay 2ms 1ms loss 1% 2>/dev/null &&
   ip netns exec "$h2" tc qdisc add dev eth0 root netem delay 2ms 1ms loss 1% 2>/dev/null; then
  netem="with 2 +- 1 ms delay and 1% loss on both links"
elif ip netns exec "$h1" tc qdisc add dev eth0 root tbf rate 40mbit burst 32kb latency 20ms 2>/dev/null &&
     ip netns exec "$h2" tc qdisc add dev eth0 root tbf rate 40mbit burst 32kb latency 20ms 2>/dev/null; then
  netem="on 40 Mbit/s links with up to 20 ms of queueing (no netem in this kernel: no loss)"
fi

cat > "$work/agent" <<'AGENT'
#!/bin/sh
# Open MPI's rsh agent: [options] HOST command... -> run command inside network namespace HOST
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
exec ip netns exec "$host" sh -c "$*"
AGENT
chmod +x "$work/agent"
printf '%s slots=2\n%s slots=2\n' "$h1" "$h2" > "$work/hosts"

# Both namespaces share the machine's hostname, so Open MPI's shared-memory transport would give
# ranks of the two "hosts" the same segment names: TCP only. The daemons' shared topology segment
# (rtc_hwloc) is off too: its fixed-address mapping crashed a daemon once in 20 runs here.
two_hosts() {
  mpirun --hostfile "$work/hosts" \
    -np 4 \
    --mca plm_rsh_agent "$work/agent" \
    --mca oob_tcp_if_include "10.$net.0.0/24" \
    --mca btl_tcp_if_include "10.$net.0.0/24" \
    --mca btl tcp,self \
    --mca rtc_hwloc_vmhole none \
    "$@"
}
one_host() { mpirun --oversubscribe -np "$1" "${@:2}"; }

for c in adamp_basic sgdp_momentum; do
  one_host 1 "$REPLAY" "$FIXTURES/$c.in.h5" "$work/$c.single.h5" > /dev/null
  two_hosts "$REPLAY" "$FIXTURES/$c.in.h5" "$work/$c.multi.h5" > /dev/null
  h5diff -q "$work/$c.single.h5" "$work/$c.multi.h5" /params /params || { echo "FAIL: $c on 2 hosts differs"; exit 1; }
  echo "ok: $c on 2 hosts x 2 ranks $netem: bitwise the single-host run"
done
c=adamp_nesterov_wd_groups
one_host 1 "$REPLAY" "$FIXTURES/$c.in.h5" "$work/full.h5" > /dev/null
two_hosts "$REPLAY" --stop-after 11 --checkpoint "$work/ck.h5" "$FIXTURES/$c.in.h5" "$work/part.h5" > /dev/null
one_host 3 "$REPLAY" --resume "$work/ck.h5" "$FIXTURES/$c.in.h5" "$work/resumed.h5" > /dev/null
h5diff -q "$work/full.h5" "$work/resumed.h5" /params /params || { echo "FAIL: resume of a 2-host checkpoint differs"; exit 1; }
echo "ok: checkpoint saved by 4 ranks on 2 hosts, resumed by 3 ranks on one: bitwise the uninterrupted run"

if [ -n "${ADAMPI_TEST_STEP:-}" ]; then
  # The data-parallel step through adampi_alloc_step_buffers across hosts: ranks on the same host
  # read and store each other's buffers directly, ranks on the other host exchange messages; the
  # suite checks every step against the caller's-buffers path, bitwise, on every rank.
  two_hosts "$ADAMPI_TEST_STEP" > "$work/step.txt" 2>&1 || { cat "$work/step.txt"; echo "FAIL: test_step on 2 hosts"; exit 1; }
  grep -q "100%: Checks" "$work/step.txt" || { cat "$work/step.txt"; echo "FAIL: test_step on 2 hosts"; exit 1; }
  echo "ok: test_step on 2 hosts x 2 ranks $netem (step buffers: direct within a host, messages between): $(grep -o 'Checks: [0-9]*, Failures: 0' "$work/step.txt")"
fi

if [ -n "$TRAIN" ]; then
  # Fashion-MNIST when it is installed (the trainer falls back to its synthetic task otherwise).
  args=(--epochs 1 --hidden 64,64 --batch 256 --opt adamp)
  one_host 1 "$TRAIN" "${args[@]}" --checkpoint "$work/train1.h5" > "$work/train1.txt"
  two_hosts "$TRAIN" "${args[@]}" --checkpoint "$work/train4.h5" > "$work/train4.txt"
  h5diff -q "$work/train1.h5" "$work/train4.h5" /tensors /tensors && h5diff -q "$work/train1.h5" "$work/train4.h5" /arrays /arrays || { echo "FAIL: training on 2 hosts differs"; exit 1; }
  data=$(grep -q -i synthetic "$work/train4.txt" && echo "the synthetic task" || echo "Fashion-MNIST")
  echo "ok: adampi-train, 1 epoch of $data on 2 hosts x 2 ranks $netem: parameters and state bitwise the 1-rank run"
fi
