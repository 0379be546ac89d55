#!/usr/bin/env bash
# replay_cli.sh - adampi-replay as a user runs it: the same fixture replayed on 1..8 ranks gives
# bitwise identical OUT files (h5diff without tolerance), and a bad input exits non-zero on every
# rank with a message, leaving OUT as it was. With --dtype bf16|fp16 --clip-norm --grad-scale: the
# same bits on 1, 2, 3, 5 and 8 ranks, and a resume on another rank count; bad flag values refused.
set -euo pipefail

REPLAY=${1:?usage: replay_cli.sh path/to/adampi-replay fixtures-dir}
FIXTURES=${2:?usage: replay_cli.sh path/to/adampi-replay fixtures-dir}
RANKS=${RANKS:-"1 2 3 4 5 7 8"}
CASES=${CASES:-"adamp_basic sgdp_momentum adamp_layer wide_rows"}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }

for c in $CASES; do
  for n in $RANKS; do
    run "$n" "$REPLAY" "$FIXTURES/$c.in.h5" "$work/$c.$n.h5"
    if [ "$n" != 1 ]; then
      if ! h5diff -q "$work/$c.1.h5" "$work/$c.$n.h5" /params /params; then
        echo "FAIL: $c on $n ranks differs from 1 rank"
        h5diff -r "$work/$c.1.h5" "$work/$c.$n.h5" /params /params | head -20
        exit 1
      fi
    fi
  done
  echo "ok: $c bitwise identical on ranks: $RANKS"
done

# A bad input: non-zero exit, a message naming the problem, OUT untouched.
echo "not hdf5" > "$work/bad.h5"
echo "previous contents" > "$work/out.h5"
if run 3 "$REPLAY" "$work/bad.h5" "$work/out.h5" 2> "$work/err.txt"; then
  echo "FAIL: a non-HDF5 input was accepted"; exit 1
fi
grep -q "is not an HDF5 file" "$work/err.txt" || { echo "FAIL: message was:"; cat "$work/err.txt"; exit 1; }
[ "$(cat "$work/out.h5")" = "previous contents" ] || { echo "FAIL: OUT was changed by a failed run"; exit 1; }
[ ! -e "$work/out.h5.adampi-tmp" ] || { echo "FAIL: a temporary file was left behind"; exit 1; }
echo "ok: bad input refused, OUT untouched"

# Checkpoint and resume on another rank count: bitwise the uninterrupted run.
c=adamp_nesterov_wd_groups
run 1 "$REPLAY" "$FIXTURES/$c.in.h5" "$work/full.h5" > /dev/null
run 4 "$REPLAY" --stop-after 9 --checkpoint "$work/ck.h5" "$FIXTURES/$c.in.h5" "$work/part.h5" > /dev/null
run 3 "$REPLAY" --resume "$work/ck.h5" "$FIXTURES/$c.in.h5" "$work/resumed.h5" > /dev/null
h5diff -q "$work/full.h5" "$work/resumed.h5" /params /params || { echo "FAIL: resume 4 -> 3 differs"; exit 1; }
echo "ok: $c saved after 9 steps on 4 ranks, resumed on 3: bitwise the uninterrupted run"

# A checkpoint that does not belong to the run: refused with a message, OUT untouched.
expect_refusal() { # what, expected message, adampi-replay arguments...
  local what=$1 msg=$2
  shift 2
  echo "previous contents" > "$work/out.h5"
  if run 2 "$REPLAY" "$@" "$work/out.h5" > /dev/null 2> "$work/err.txt"; then
    echo "FAIL: $what was accepted"; exit 1
  fi
  grep -qF -- "$msg" "$work/err.txt" || { echo "FAIL: $what: message was:"; cat "$work/err.txt"; exit 1; }
  [ "$(cat "$work/out.h5")" = "previous contents" ] || { echo "FAIL: $what changed OUT"; exit 1; }
  [ ! -e "$work/out.h5.adampi-tmp" ] || { echo "FAIL: $what left a temporary file"; exit 1; }
  echo "ok: $what refused, OUT untouched"
}
run 2 "$REPLAY" --stop-after 3 --checkpoint "$work/sgdp_ck.h5" "$FIXTURES/sgdp_momentum.in.h5" "$work/p.h5" > /dev/null
expect_refusal "an SGDP checkpoint resumed into an AdamP replay" "holds 'sgdp' state but this optimizer is 'adamp'" \
  --resume "$work/sgdp_ck.h5" "$FIXTURES/adamp_nesterov_wd_groups.in.h5"
expect_refusal "a missing checkpoint" "cannot read" --resume "$work/none.h5" "$FIXTURES/$c.in.h5"
head -c 3000 "$work/ck.h5" > "$work/cut.h5"
expect_refusal "a truncated checkpoint" "truncated" --resume "$work/cut.h5" "$FIXTURES/$c.in.h5"
expect_refusal "a missing input file" "cannot read" "$work/none.h5"

# Mixed precision: a bfloat16 or float16 model with global-norm clipping and a gradient scale gives
# the same OUT (its fp32 master) on every rank count, differs from the float32 replay, and resumes
# from a checkpoint on another rank count to the same bits.
MIXED_RANKS=${MIXED_RANKS:-"1 2 3 5 8"}
for c in adamp_nesterov_wd_groups sgdp_momentum; do
  for dt in bf16 fp16; do
    flags=(--dtype "$dt" --clip-norm 0.05 --grad-scale 8)
    for n in $MIXED_RANKS; do
      run "$n" "$REPLAY" "${flags[@]}" "$FIXTURES/$c.in.h5" "$work/$c.$dt.$n.h5" > "$work/log.txt"
      grep -q "model $( [ "$dt" = bf16 ] && echo bfloat16 || echo float16 )" "$work/log.txt" || { echo "FAIL: $c $dt: summary was:"; cat "$work/log.txt"; exit 1; }
      grep -q "(clipped at 0 steps)" "$work/log.txt" && { echo "FAIL: $c $dt: no step was clipped"; exit 1; }
      if [ "$n" != 1 ] && ! h5diff -q "$work/$c.$dt.1.h5" "$work/$c.$dt.$n.h5" /params /params; then
        echo "FAIL: $c --dtype $dt on $n ranks differs from 1 rank"
        h5diff -r "$work/$c.$dt.1.h5" "$work/$c.$dt.$n.h5" /params /params | head -20
        exit 1
      fi
    done
    run 1 "$REPLAY" "$FIXTURES/$c.in.h5" "$work/$c.f32.h5" > /dev/null
    if h5diff -q "$work/$c.f32.h5" "$work/$c.$dt.1.h5" /params /params > /dev/null; then
      echo "FAIL: $c --dtype $dt gives the float32 replay's bits"; exit 1
    fi
    run 4 "$REPLAY" "${flags[@]}" --stop-after 9 --checkpoint "$work/mck.h5" "$FIXTURES/$c.in.h5" "$work/mpart.h5" > /dev/null
    run 3 "$REPLAY" "${flags[@]}" --resume "$work/mck.h5" "$FIXTURES/$c.in.h5" "$work/mres.h5" > /dev/null
    h5diff -q "$work/$c.$dt.1.h5" "$work/mres.h5" /params /params || { echo "FAIL: $c --dtype $dt: resume 4 -> 3 differs"; exit 1; }
    echo "ok: $c ${flags[*]} bitwise identical on ranks: $MIXED_RANKS, and resumed 4 -> 3"
  done
done

# Bad values of the mixed-precision flags: refused before anything runs, OUT untouched.
c=adamp_basic
expect_refusal "--dtype int8" "--dtype 'int8' is not a known type" --dtype int8 "$FIXTURES/$c.in.h5"
expect_refusal "--clip-norm -1" "--clip-norm '-1' must be a finite number >= 0" --clip-norm -1 "$FIXTURES/$c.in.h5"
expect_refusal "--clip-norm nan" "--clip-norm 'nan' must be" --clip-norm nan "$FIXTURES/$c.in.h5"
expect_refusal "--grad-scale 0" "--grad-scale '0' must be a finite number > 0" --grad-scale 0 "$FIXTURES/$c.in.h5"
expect_refusal "--grad-scale inf" "--grad-scale 'inf' must be" --grad-scale inf "$FIXTURES/$c.in.h5"
expect_refusal "--grad-scale 2x" "--grad-scale '2x' must be" --grad-scale 2x "$FIXTURES/$c.in.h5"
