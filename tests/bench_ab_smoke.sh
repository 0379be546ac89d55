#!/bin/sh
# bench_ab_smoke.sh BENCH_AB LIBADAMPI - the A/B benchmark (two builds step by step in one process)
# runs in every mode on 2 ranks, with float32 and bfloat16 models: one library given twice (an A/A
# run) reports a finite ratio and the same bits, exit status 0 with --check-bits; B with a learning
# rate one part in 2^20 off is reported as different bits, exit status 3 with --check-bits; a library
# that cannot be loaded is a clear error and a non-zero exit. Timings are not checked.
set -eu
bench=$1 lib=$2
fail() { echo "FAIL: $*"; exit 1; }
run() { mpirun -np 2 --oversubscribe "$bench" --set sweep --millions 1 --row-len 300 --rounds 4 "$@"; }
for mode in sharded dp dp-shm; do
  for dt in fp32 bf16; do
    out=$(run --a "$lib" --b "$lib" --mode "$mode" --dtype "$dt" --check-bits) || fail "A/A $mode $dt exited non-zero"
    printf '%s\n' "$out" | grep -q '^same bits after 6 steps each: yes$' || fail "A/A $mode $dt: not the same bits"
    line=$(printf '%s\n' "$out" | grep '^B/A step, per round: median') || fail "no ratio line for $mode $dt"
    printf '%s\n' "$line" | grep -Eqi '(^|[^a-z])(nan|inf)([^a-z]|$)' && fail "non-finite ratio for $mode $dt"
    echo "$mode $dt: $line"
  done
done
st=0
out=$(run --a "$lib" --b "$lib" --perturb-b --check-bits) || st=$?
[ "$st" -eq 3 ] || fail "a perturbed B: exit status $st, not 3"
printf '%s\n' "$out" | grep -q '^same bits after 6 steps each: no (parameters, rank 0)$' || fail "a perturbed B: not reported"
st=0
out=$(run --a "$lib.missing" --b "$lib" 2>&1) || st=$?
[ "$st" -ne 0 ] || fail "a missing library: exit status 0"
printf '%s\n' "$out" | grep -q "cannot load $lib.missing" || fail "a missing library: no clear message"
echo "bench_ab: A/A same bits in every mode, a difference reported, a missing library refused"
