#!/bin/sh
# bench_smoke.sh BENCH_STEP - the step benchmark behind the README's performance tables runs in
# every mode (sharded, data-parallel with messages and with the step buffers) and element type
# (float32, bfloat16, float16), on 2 ranks and a small sweep, and prints a finite ratio to its
# floor: the tables' commands keep working as the library changes. Timings are not checked.
set -eu
bench=$1
fail() { echo "FAIL: $*"; exit 1; }
for opt in adamp sgdp; do
  for mode in sharded dp dp-shm; do
    for dt in fp32 bf16 fp16; do
      out=$(mpirun -np 2 --oversubscribe "$bench" --set sweep --millions 1 --row-len 300 --steps 3 --opt "$opt" \
        --grads orthogonal --mode "$mode" --dtype "$dt") || fail "bench_step --opt $opt --mode $mode --dtype $dt exited non-zero"
      line=$(printf '%s\n' "$out" | grep " $mode " | grep " $dt ") || fail "no result line for $opt $mode $dt"
      printf '%s\n' "$line" | cut -c1-120
      printf '%s\n' "$line" | grep -Eq ' [0-9]+\.[0-9]+ x floor' || fail "no floor ratio for $opt $mode $dt"
      printf '%s\n' "$line" | grep -Eqi '(^|[^a-z])(nan|inf)([^a-z]|$)' && fail "non-finite figure for $opt $mode $dt"
      printf '%s\n' "$out" | grep -q '^csv,.*,'"$dt"'$' || fail "no CSV line for $opt $mode $dt"
    done
  done
done
echo "bench_step: every mode and element type ran"
