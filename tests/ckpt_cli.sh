#!/usr/bin/env bash
# ckpt_cli.sh - adampi-ckpt on a checkpoint of adampi-train and on damaged copies of it:
#   info prints the optimizer, steps, rank count at save, groups, tensors, caller arrays and values;
#   verify accepts the file on 1, 2 and 3 ranks and refuses seven kinds of damage, naming the problem;
#   export writes the fp32 parameters and caller arrays (.h5 and .npz) equal to the checkpoint's, and refuses a damaged
#   file without writing anything; latest picks the newest valid one of PATH, PATH.1, PATH.2 and
#   moves damaged newer ones out of the rotation; launch/run (third argument) resumes by itself.
# The damage is made with h5py (a value changed through HDF5, an attribute deleted) and dd (a byte
# of a dataset flipped at the offset h5py reports); exits 77 where h5py or numpy is missing.
set -euo pipefail
CKPT=${1:?usage: ckpt_cli.sh path/to/adampi-ckpt path/to/adampi-train}
TRAIN=${2:?usage: ckpt_cli.sh path/to/adampi-ckpt path/to/adampi-train [path/to/launch/run]}
LAUNCH_RUN=${3:-}
PY=/usr/bin/python3

if ! "$PY" -c 'import h5py, numpy' 2> /dev/null; then
  echo "skipped: ckpt_cli needs $PY with h5py and numpy (Debian: python3-h5py python3-numpy)"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }
fail() { echo "FAIL: $*"; exit 1; }

# A checkpoint with two rotations behind it: 3 epochs, keep 2 (ck.h5 = epoch 3, .1 = 2, .2 = 1).
run 2 "$TRAIN" --synthetic --epochs 3 --hidden 16,16 --batch 64 --opt sgdp --checkpoint ck.h5 --keep 2 > train.txt
[ -f ck.h5.1 ] && [ -f ck.h5.2 ] || fail "adampi-train --keep 2 left no ck.h5.1 and ck.h5.2"

# info
"$CKPT" info ck.h5 > info.txt || { cat info.txt; fail "info refused a valid checkpoint"; }
for want in "optimizer: sgdp" "steps: 561 taken, 0 skipped" "saved on: 2 ranks" "groups: 2" "tensors: 8" \
            "fc1.weight *\[16, 784\] *group 0  step 561" "bn1.bias *\[16\] *group 1  step 561" "caller arrays: 4" \
            "bn1.running_mean *\[16\]" "bn2.running_var *\[16\]" \
            "group 0: lr=0.1 .*momentum=0.9" "epoch = 3" "seed = 1" "verified: every checksum"; do
  grep -q -e "$want" info.txt || { cat info.txt; fail "info does not print '$want'"; }
done
echo "ok: info prints optimizer, steps, ranks at save, groups with hyper-parameters, 8 tensors with shapes and step counters, 4 caller arrays, caller values"

# verify on 1, 2, 3 ranks
for n in 1 2 3; do
  out=$(run "$n" "$CKPT" verify ck.h5) || fail "verify on $n ranks refused a valid checkpoint: $out"
  echo "$out" | grep -q "ok: sgdp, 8 tensors, 4 caller arrays, step 561, saved on 2 ranks, verified on $n" || fail "verify on $n ranks printed: $out"
done
echo "ok: verify accepts the checkpoint on 1, 2 and 3 ranks"

# seven kinds of damage, each refused with the problem named, on 1 and 3 ranks
cp ck.h5 value.h5
"$PY" -c "import h5py; d = h5py.File('value.h5', 'r+')['tensors/fc2.weight/param']; x = d[()]; x[3, 4] += 1; d[...] = x"
cp ck.h5 byte.h5
off=$("$PY" -c "import h5py; print(h5py.File('byte.h5', 'r')['tensors/bn1.bias/momentum'].id.get_offset() + 5)")
printf '\x5a' | dd of=byte.h5 bs=1 seek="$off" conv=notrunc 2> /dev/null
cmp -s ck.h5 byte.h5 && fail "the byte flip changed nothing"
cp ck.h5 stats.h5
off=$("$PY" -c "import h5py; print(h5py.File('stats.h5', 'r')['arrays/bn1.running_var'].id.get_offset() + 9)")
printf '\x5a' | dd of=stats.h5 bs=1 seek="$off" conv=notrunc 2> /dev/null
cmp -s ck.h5 stats.h5 && fail "the byte flip in a caller array changed nothing"
cp ck.h5 attr.h5
"$PY" -c "import h5py; del h5py.File('attr.h5', 'r+')['tensors/fc3.bias'].attrs['step']"
head -c 20000 ck.h5 > truncated.h5
echo "not a checkpoint" > text.h5
declare -A expect=(
  [value]="tensor 'fc2.weight', dataset 'param': checksum mismatch"
  [byte]="tensor 'bn1.bias', dataset 'momentum': checksum mismatch"
  [stats]="caller array 'bn1.running_var': checksum mismatch"
  [attr]="tensor 'fc3.bias': attributes index, group and step"
  [truncated]="HDF5 cannot open it"
  [text]="not an HDF5 file"
  [missing]="cannot read the file")
for k in value byte stats attr truncated text missing; do
  for n in 1 3; do
    if run "$n" "$CKPT" verify "$k.h5" > out.txt 2>&1; then cat out.txt; fail "verify on $n ranks accepted $k.h5"; fi
    grep -q "adampi-ckpt: $k.h5: not valid: .*${expect[$k]}" out.txt || { cat out.txt; fail "verify of $k.h5: expected '${expect[$k]}'"; }
  done
  echo "ok: verify refuses $k.h5 on 1 and 3 ranks: $(grep -o "not valid: .*" out.txt | head -1)"
done
if "$CKPT" info value.h5 > info2.txt 2>&1; then fail "info accepted a damaged file"; fi
grep -q "tensors: 8" info2.txt && grep -q "epoch = 3" info2.txt && grep -q "not valid: .*checksum mismatch" info2.txt || { cat info2.txt; fail "info of a damaged file"; }
echo "ok: info of a damaged file prints what the file says, then the problem, and exits 1"

# export
"$CKPT" export ck.h5 params.h5 > /dev/null
run 2 "$CKPT" export ck.h5 params.npz > /dev/null
"$PY" - <<'PY' || fail "the exported parameters differ from the checkpoint's"
import h5py, numpy as np
ck, h5, z = h5py.File("ck.h5", "r"), h5py.File("params.h5", "r"), np.load("params.npz")
refs = {n: ck["tensors"][n]["param"][()] for n in ck["tensors"]}
refs.update({n: ck["arrays"][n][()] for n in ck["arrays"]})
names = sorted(refs)
assert len(names) == 12 and "bn2.running_var" in names, names
assert sorted(h5) == names and sorted(z.files) == names, (sorted(h5), sorted(z.files))
for n in names:
    ref = refs[n]
    for got in (h5[n][()], z[n]):
        assert got.dtype == np.float32 and got.shape == ref.shape and got.tobytes() == ref.tobytes(), n
assert all(len(h5[n].attrs) == 0 for n in names) and list(h5.attrs) == []
print("ok: export: %d tensors and caller arrays in .h5 and .npz, bitwise the checkpoint's, no optimizer state" % len(names))
PY
if "$CKPT" export value.h5 bad.npz > out.txt 2>&1; then fail "export accepted a damaged file"; fi
[ ! -e bad.npz ] && [ ! -e bad.npz.adampi-tmp ] || fail "export of a damaged file left a file"
if "$CKPT" export ck.h5 out.txt > /dev/null 2>&1; then fail "export accepted an output that is neither .h5 nor .npz"; fi
echo "ok: export refuses a damaged checkpoint and writes nothing"

# latest
mkdir rot && cp ck.h5 ck.h5.1 ck.h5.2 rot/
[ "$(run 2 "$CKPT" latest rot/ck.h5 2> /dev/null)" = "rot/ck.h5" ] || fail "latest did not pick the newest of three valid checkpoints"
cp value.h5 rot/ck.h5
got=$("$CKPT" latest rot/ck.h5 2> err.txt)
[ "$got" = "rot/ck.h5.1" ] || { cat err.txt; fail "latest with a damaged newest picked '$got'"; }
[ ! -e rot/ck.h5 ] && cmp -s rot/ck.h5.damaged value.h5 || fail "the damaged newest was not moved to rot/ck.h5.damaged"
grep -q "falling back to rot/ck.h5.1" err.txt || { cat err.txt; fail "latest did not say it fell back"; }
echo "ok: latest: a damaged newest is moved aside (kept as .damaged) and the previous one chosen"
run 2 "$TRAIN" --synthetic --epochs 3 --hidden 16,16 --batch 64 --opt sgdp --checkpoint rot/ck.h5 --keep 2 --resume rot/ck.h5.1 > /dev/null
cmp -s rot/ck.h5.2 ck.h5.1 || fail "the save after the fallback moved the good checkpoint out of the rotation"
h5diff -q ck.h5 rot/ck.h5 /tensors /tensors && h5diff -q ck.h5 rot/ck.h5 /arrays /arrays || fail "the run resumed from the fallback differs from the run that never stopped"
echo "ok: resumed from the fallback: the good one is now .2, the new one bitwise the uninterrupted run"
cp value.h5 rot/ck.h5 && cp byte.h5 rot/ck.h5.1 && cp attr.h5 rot/ck.h5.2
if "$CKPT" latest rot/ck.h5 > out.txt 2> err.txt; then fail "latest chose one of three damaged checkpoints: $(cat out.txt)"; fi
[ ! -s out.txt ] && grep -q "none of the 3 checkpoints" err.txt && [ -e rot/ck.h5 ] || { cat err.txt; fail "latest with only damaged files"; }
got=$("$CKPT" latest nothing/here.h5 2> err.txt) || fail "latest without any checkpoint failed"
[ -z "$got" ] && grep -q "start from scratch" err.txt || fail "latest without a checkpoint printed '$got'"
echo "ok: latest: only damaged files -> exit 1, nothing chosen or moved; no file -> nothing, exit 0"

# launch/run: --checkpoint without --resume continues from the newest valid checkpoint
if [ -n "$LAUNCH_RUN" ]; then
  export BUILD_DIR=$(cd "$(dirname "$CKPT")/.." && pwd)
  args=(--synthetic --hidden 16,16 --batch 64 --opt sgdp --checkpoint "$work/run.h5" --keep 1)
  "$LAUNCH_RUN" -n 2 -b none -- "${args[@]}" --epochs 2 > run1.txt
  grep -q "resuming" run1.txt && fail "launch/run resumed without a checkpoint"
  "$LAUNCH_RUN" -n 1 -b none -- "${args[@]}" --epochs 3 > run2.txt
  grep -q "launch/run: resuming from $work/run.h5\$" run2.txt || { cat run2.txt; fail "launch/run did not resume"; }
  h5diff -q ck.h5 run.h5 /tensors /tensors && h5diff -q ck.h5 run.h5 /arrays /arrays || fail "2 epochs on 2 ranks + 1 on 1 rank through launch/run differ from 3 epochs"
  cp value.h5 run.h5
  "$LAUNCH_RUN" -n 2 -b none -- "${args[@]}" --epochs 3 > run3.txt 2>&1
  grep -q "launch/run: resuming from $work/run.h5.1\$" run3.txt && [ -e run.h5.damaged ] || { cat run3.txt; fail "launch/run did not fall back"; }
  h5diff -q ck.h5 run.h5 /tensors /tensors && h5diff -q ck.h5 run.h5 /arrays /arrays || fail "the fallback through launch/run differs from 3 epochs"
  cp value.h5 run.h5 && cp value.h5 run.h5.1
  if "$LAUNCH_RUN" -n 1 -b none -- "${args[@]}" --epochs 3 > run4.txt 2>&1; then fail "launch/run started over damaged checkpoints"; fi
  cmp -s value.h5 run.h5 || fail "launch/run changed a damaged checkpoint it refused"
  echo "ok: launch/run resumes by itself (2 -> 1 ranks, bitwise), falls back past a damaged newest one, refuses to start over damaged ones"
fi
