#!/usr/bin/env bash
# slurm_cluster.sh - launch/slurm.sbatch on a real Slurm cluster made on this machine: munged,
# slurmctld and two slurmd (`slurmd -N n1`, `slurmd -N n2`: two nodes on one host, own ports), all
# in a private directory with its own slurm.conf, stopped afterwards leaving no daemon or file.
#   1. srun (--mpi=pmix), 2 nodes x 2 tasks, 1 epoch: the checkpoint is bitwise the 1-rank run's;
#   2. mpirun inside an allocation, 2 nodes x 1 task: the job resumes that checkpoint by itself and
#      the result is bitwise the 1-rank run that never stopped;
#   3. scancel in the middle of training: the last checkpoint verifies, and a resubmitted job (srun,
#      2 x 1) continues from it to the bits of the uninterrupted run;
#   4. scontrol requeuehold in the middle of training (mpirun, 2 x 2), with the newest checkpoint then
#      damaged: the requeued job moves it aside, falls back to the previous one (keep_last) and still
#      ends bitwise the uninterrupted run;
#   5. the PyTorch example: PROGRAM=launch/torch_fmnist.py, submitted from the checkout (srun, 2 x 1),
#      one epoch of AdamP and SGDP on 2048 images: the job completes, every node's ranks found the
#      checkout's adampi package and the build's libadampi, each final accuracy is above 50%, and
#      the CSV and PNG are written. Without torch, mpi4py, matplotlib, the data or a shared
#      libadampi, 1-4 still run and the test then exits 77 naming what was missing.
# Accounting is not configured (no slurmdbd), so jobs are followed with scontrol show job (kept
# MinJobAge seconds after they end) rather than sacct. Both "nodes" are one host: Open MPI runs over
# TCP (OMPI_MCA_btl=tcp,self), as in multihost.sh, and each node has its own TmpFS for PMIx.
# Needs root and Debian's slurmctld, slurmd and munge; exits 77 with the reason where it cannot run.
set -euo pipefail
BIN=${1:?usage: slurm_cluster.sh path/to/build/bin [path/to/launch/slurm.sbatch]}
BIN=$(cd "$BIN" && pwd)
SBATCH_SCRIPT=${2:-$(cd "$(dirname "$0")/.." && pwd)/launch/slurm.sbatch}
PY=/usr/bin/python3
WAIT=${WAIT:-90} # seconds any one job may take

skip() { echo "skipped: slurm_cluster: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (slurmd runs jobs as any user)"
for c in munged slurmctld slurmd sbatch srun scontrol scancel sinfo h5diff; do
  command -v "$c" > /dev/null || skip "$c is not installed (Debian: slurmctld slurmd munge hdf5-tools)"
done
"$PY" -c 'import h5py' 2> /dev/null || skip "$PY has no h5py (Debian: python3-h5py)"
for f in adampi-train adampi-ckpt; do [ -x "$BIN/$f" ] || skip "$BIN/$f is not built"; done
ROOT=$(cd "$(dirname "$0")/.." && pwd) # the checkout, where the PyTorch job is submitted from
FMNIST=/usr/share/datasets/fashion-mnist
no_torch="" # why scenario 5 cannot run, if it cannot
"$PY" -c 'import torch, mpi4py, matplotlib' 2> /dev/null || no_torch="$PY lacks torch, mpi4py or matplotlib (Debian: python3-torch python3-mpi4py python3-matplotlib)"
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || no_torch="no Fashion-MNIST at $FMNIST (Debian: dataset-fashion-mnist)"
[ -e "$BIN/../lib/libadampi.so" ] || no_torch="no shared libadampi at $BIN/../lib (BUILD_SHARED_LIBS=ON)"

work=$(mktemp -d /tmp/adampi-slurm.XXXXXX)
chmod 755 "$work"
mkdir -p "$work"/{munge,run,state,log,spool/n1,spool/n2,tmp/n1,tmp/n2,tmp/jobs,jobs}
chmod 700 "$work/munge" # the key; the socket lives in run/, which munged wants open to all
chmod 755 "$work/run"
export SLURM_CONF=$work/slurm.conf

# Stop everything this script started, by pid: jobs first (their steps end with them), then the
# daemons, then any slurmstepd still holding a file of this directory; then the directory.
cleanup() {
  local rc=$?
  set +e
  if [ -f "$work/slurmctld.pid" ]; then
    scancel --quiet --user=root 2> /dev/null
    for _ in $(seq 1 50); do [ -z "$(squeue -h -t PD,R,CG,S -o %i 2> /dev/null | head -1)" ] && break; sleep 0.2; done
  fi
  for p in slurmd-n1 slurmd-n2 slurmctld run/munged; do
    [ -f "$work/$p.pid" ] && kill "$(cat "$work/$p.pid")" 2> /dev/null
  done
  for p in slurmd-n1 slurmd-n2 slurmctld run/munged; do
    [ -f "$work/$p.pid" ] || continue
    pid=$(cat "$work/$p.pid")
    for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2> /dev/null
  done
  for pid in $(pgrep -x slurmstepd); do
    ls -l "/proc/$pid/fd" 2> /dev/null | grep -q "$work" && kill -9 "$pid"
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# Ports: a free block of five above 20000 (controller, slurmd n1, n2, srun's range below).
base=
for try in $(seq 0 20); do
  b=$((20000 + (($$ + try * 97) % 400) * 50))
  used=$(ss -Htan | awk '{print $4}' | grep -c -E ":($b|$((b + 1))|$((b + 2)))\$" || true)
  [ "$used" = 0 ] && base=$b && break
done
[ -n "$base" ] || skip "no free block of TCP ports found"

fail() {
  echo "FAIL: $*"
  for f in "$work"/jobs/*.out; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done
  for f in "$work"/log/*; do echo "--- $f"; tail -15 "$f"; done
  exit 1
}

# ---- the cluster ---------------------------------------------------------------------------------
dd if=/dev/urandom of="$work/munge/key" bs=1024 count=1 2> /dev/null
chmod 400 "$work/munge/key"
munged --socket="$work/run/munge.sock" --key-file="$work/munge/key" --log-file="$work/log/munged.log" \
  --pid-file="$work/run/munged.pid" --seed-file="$work/munge/seed" || skip "munged does not start here"
host=$(hostname)
cat > "$SLURM_CONF" << EOF
ClusterName=adampi$$
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$base
SrunPortRange=$((base + 10))-$((base + 49))
AuthType=auth/munge
AuthInfo=socket=$work/run/munge.sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
TmpFS=$work/tmp/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
JobRequeue=1
InactiveLimit=0
MinJobAge=600
KillWait=5
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((base + 1)) CPUs=2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((base + 2)) CPUs=2 State=UNKNOWN
PartitionName=test Nodes=n1,n2 Default=YES MaxTime=10 State=UP
EOF
slurmctld -i || fail "slurmctld did not start"
slurmd -N n1 || fail "slurmd n1 did not start"
slurmd -N n2 || fail "slurmd n2 did not start"
for _ in $(seq 1 150); do
  [ "$(sinfo -h -N -o '%N %T' 2> /dev/null | grep -c -E ' idle$')" = 2 ] && break
  sleep 0.2
done
[ "$(sinfo -h -N -o '%N %T' | grep -c -E ' idle$')" = 2 ] || fail "the two nodes are not idle after 30 s: $(sinfo -h -N -o '%N %T' | tr '\n' ' ')"
echo "[$SECONDS s] ok: cluster up: slurmctld and two slurmd (n1, n2; Slurm $(slurmd -V | awk '{print $2}')) on ports $base-$((base + 2))"

# ---- jobs -----------------------------------------------------------------------------------------
export OMPI_MCA_btl=tcp,self OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export TMPDIR=$work/tmp/jobs ADAMPI_BIN=$BIN KEEP=2
# PMIx's shared-memory store (gds ds21) has a start-up race: once in this test's runs (tenth round of
# the performance issue), both tasks on one node died of SIGSEGV at address 0 at start-up and the
# job hung (openpmix/openpmix#1114, open-mpi/ompi#12495, where hash is the workaround). The hash
# store serves the same data; adampi's own start-up is the same either way.
export PMIX_MCA_gds=hash
small=(--synthetic --hidden 16,16 --batch 512 --opt adamp)
large=(--synthetic --hidden 128,128 --batch 512 --opt adamp --epochs 20)

# submit NAME LAUNCH SBATCH-OPTIONS... -- TRAINER-ARGS...: prints the job id
submit() {
  local name=$1 launch=$2
  shift 2
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  LAUNCH=$launch CHECKPOINT=$work/jobs/$name.h5 sbatch --parsable --time=5 --job-name="$name" -o "$work/jobs/$name.out" \
    "${opts[@]}" "$SBATCH_SCRIPT" "$@"
}
state() { scontrol show job -o "$1" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
# wait_state ID STATE...: until the job is in one of the states (bounded), else fail
wait_state() {
  local id=$1 s=""
  shift
  for _ in $(seq 1 $((WAIT * 5))); do
    s=$(state "$id")
    for want in "$@"; do [ "$s" = "$want" ] && return 0; done
    case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | BOOT_FAIL | OUT_OF_MEMORY)
      fail "job $id ended $s while waiting for $*";;
    esac
    sleep 0.2
  done
  fail "job $id still $s after $WAIT s (waiting for $*): $(scontrol show job -o "$id" | grep -o -E "Reason=[^ ]+|NodeList=[^ ]+" | tr "\n" " ")"
}
wait_file() {
  for _ in $(seq 1 $((WAIT * 10))); do [ -f "$1" ] && return 0; sleep 0.1; done
  fail "$1 did not appear within $WAIT s"
}
same() { h5diff -q "$1" "$2" /tensors /tensors && h5diff -q "$1" "$2" /arrays /arrays || fail "$3: $1 and $2 differ"; }
epoch_of() { "$BIN/adampi-ckpt" info "$1" | awk '$1 == "epoch" {print $3}'; }

# References: one rank, never stopped.
ref() { mpirun -np 1 "$BIN/adampi-train" "${@:2}" --checkpoint "$work/$1.h5" > "$work/$1.txt" || fail "reference run $1"; }
ref ref1 "${small[@]}" --epochs 1
ref ref3 "${small[@]}" --epochs 3
ref ref20 "${large[@]}"

# 1. srun, 2 nodes x 2 tasks, from scratch
j=$(submit a srun -N 2 --ntasks-per-node=2 -- "${small[@]}" --epochs 1)
wait_state "$j" COMPLETED
grep -q "starting from scratch" "$work/jobs/a.out" || fail "job a did not say it started from scratch"
grep -q "4 ranks" "$work/jobs/a.out" || fail "job a did not run 4 ranks"
same "$work/ref1.h5" "$work/jobs/a.h5" "srun job on 2 nodes x 2 tasks vs 1 rank"
"$BIN/adampi-ckpt" info "$work/jobs/a.h5" | grep -q "saved on: 4 ranks" || fail "job a's checkpoint was not saved by 4 ranks"
echo "[$SECONDS s] ok: sbatch + srun --mpi=pmix, 2 nodes x 2 tasks, 1 epoch: checkpoint bitwise the 1-rank run"

# 2. mpirun inside the allocation, 2 nodes x 1 task: resumes job a's checkpoint by itself
j=$(LAUNCH=mpirun CHECKPOINT=$work/jobs/a.h5 sbatch --parsable --time=5 -o "$work/jobs/b.out" -N 2 --ntasks-per-node=1 \
  "$SBATCH_SCRIPT" "${small[@]}" --epochs 3)
wait_state "$j" COMPLETED
grep -q "resuming from $work/jobs/a.h5\$" "$work/jobs/b.out" || fail "job b did not resume from a.h5"
grep -q "2 ranks" "$work/jobs/b.out" || fail "job b did not run 2 ranks"
same "$work/ref3.h5" "$work/jobs/a.h5" "1 epoch on 4 ranks + 2 epochs on 2 ranks (mpirun) vs 3 epochs on 1 rank"
echo "[$SECONDS s] ok: sbatch + mpirun in the allocation, 2 nodes x 1 task: resumed the 4-task checkpoint by itself; bitwise the 1-rank run that never stopped"

# 3. scancel in the middle of training, then a resubmitted job continues
j=$(submit c srun -N 2 --ntasks-per-node=2 -- "${large[@]}")
wait_file "$work/jobs/c.h5.1"
scancel "$j"
wait_state "$j" CANCELLED
! grep -q "adamp done" "$work/jobs/c.out" || fail "job c finished before scancel (make the run longer)"
"$BIN/adampi-ckpt" verify "$work/jobs/c.h5" > /dev/null || fail "the checkpoint left by scancel does not verify"
e=$(epoch_of "$work/jobs/c.h5")
[ -n "$e" ] && [ "$e" -ge 2 ] && [ "$e" -lt 20 ] || fail "the checkpoint left by scancel holds epoch '$e'"
j=$(submit c srun -N 2 --ntasks-per-node=1 -- "${large[@]}")
wait_state "$j" COMPLETED
grep -q "resuming from $work/jobs/c.h5\$" "$work/jobs/c.out" || fail "the resubmitted job did not resume from c.h5"
grep -q "resumed from .* after epoch $e\$" "$work/jobs/c.out" || fail "the resubmitted job did not continue after epoch $e"
same "$work/ref20.h5" "$work/jobs/c.h5" "cancelled after epoch $e on 4 tasks, resubmitted on 2 tasks, vs 1 rank"
echo "[$SECONDS s] ok: scancel after epoch $e of 20: the last checkpoint verifies; the resubmitted job (2 tasks) continued from it, bitwise the 1-rank run"

# 4. scontrol requeue in the middle of training; the newest checkpoint is then damaged
j=$(submit d mpirun -N 2 --ntasks-per-node=2 -- "${large[@]}")
wait_file "$work/jobs/d.h5.1"
scontrol requeuehold "$j" # requeued and held, so that the damage below happens before it restarts
wait_state "$j" PENDING
e=$(epoch_of "$work/jobs/d.h5.1")
newest=$(epoch_of "$work/jobs/d.h5")
[ -n "$e" ] && [ -n "$newest" ] && [ "$newest" -lt 20 ] || fail "after the requeue: d.h5 holds epoch '$newest', d.h5.1 epoch '$e'"
"$PY" -c "import h5py; d = h5py.File('$work/jobs/d.h5', 'r+')['tensors/fc1.weight/param']; x = d[()]; x[0, 0] += 1; d[...] = x"
cp "$work/jobs/d.h5" "$work/damaged.h5"
scontrol release "$j"
scontrol update JobId="$j" StartTime=now # a requeued job would wait ~2 minutes otherwise
wait_state "$j" COMPLETED
out=$work/jobs/d.out
grep -q "restart 1): resuming from $work/jobs/d.h5.1\$" "$out" || fail "the requeued job did not fall back to d.h5.1"
grep -q "d.h5 is damaged: .*tensor 'fc1.weight', dataset 'param': checksum mismatch" "$out" || fail "the requeued job did not name the damage"
cmp -s "$work/damaged.h5" "$work/jobs/d.h5.damaged" || fail "the damaged checkpoint was not kept as d.h5.damaged"
grep -q "resumed from .* after epoch $e\$" "$out" || fail "the requeued job did not continue after epoch $e"
same "$work/ref20.h5" "$work/jobs/d.h5" "requeued after a damaged newest checkpoint vs 1 rank"
echo "[$SECONDS s] ok: scontrol requeuehold + release after epoch $newest of 20, newest checkpoint damaged: the job moved it aside, fell back to epoch $e (d.h5.1) by itself, bitwise the 1-rank run"

# 5. the PyTorch example through the job script, submitted from the checkout as a user would
if [ -z "$no_torch" ]; then
  t=$work/jobs/torch
  j=$(cd "$ROOT" && env -u PYTHONPATH -u ADAMPI_LIBRARY PROGRAM=launch/torch_fmnist.py LAUNCH=srun \
    sbatch --parsable --time=5 --job-name=torch -o "$t.out" -N 2 --ntasks-per-node=1 "$SBATCH_SCRIPT" \
    --opts adamp,sgdp --epochs 1 --train-limit 2048 --every 8 --data "$FMNIST" --csv "$t.csv" --png "$t.png")
  wait_state "$j" COMPLETED
  lib=$(cd "$BIN/../lib" && pwd)/libadampi.so
  grep -q "running $PY $ROOT/launch/torch_fmnist.py on srun (PYTHONPATH=$ROOT/src/python ADAMPI_LIBRARY=$lib)" "$t.out" ||
    fail "the PyTorch job did not run torch_fmnist.py with the checkout's package and the build's library"
  grep -q "^torch_fmnist: 2 ranks, global batch 128, 2048 training" "$t.out" || fail "the PyTorch job did not run 2 ranks on 2048 images"
  acc=$(grep "^final test accuracy: " "$t.out") || fail "the PyTorch job printed no final test accuracy"
  echo "$acc" | awk '{ n = 0; for (i = 4; i <= NF; i += 2) { v = $(i + 1); sub(/[%,]+$/, "", v); n++; if (v + 0 <= 50) exit 1 }
    exit n != 2 }' || fail "the PyTorch job's accuracies are not both above 50%: $acc"
  awk -F, 'NR > 1 && $6 != "" { n++; if ($6 <= 0.5) bad++ } END { exit !(n == 2 && bad == 0) }' "$t.csv" ||
    fail "the CSV $t.csv does not hold two final accuracies above 0.5"
  [ -s "$t.png" ] && [ "$(head -c 4 "$t.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "the PNG $t.png was not written"
  echo "[$SECONDS s] ok: PROGRAM=launch/torch_fmnist.py through the job script (srun, 2 nodes x 1 task), 1 epoch on 2048 images: ${acc#final test accuracy: }; CSV and PNG written"
else
  echo "skipped: slurm_cluster: scenarios 1-4 passed, but the PyTorch job (5) cannot run: $no_torch"
  exit 77
fi
