#!/usr/bin/env bash
# replay_cli.sh - adampi-replay as a user runs it: the same fixture replayed on 1..8 ranks gives
# bitwise identical OUT files (h5diff without tolerance), and a bad input exits non-zero on every
# rank with a message, leaving OUT as it was.
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
  grep -q "$msg" "$work/err.txt" || { echo "FAIL: $what: message was:"; cat "$work/err.txt"; exit 1; }
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
