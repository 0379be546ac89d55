#!/usr/bin/env bash
# run_mixed.sh - the mixed-precision benchmarks of the README's performance section, in one go:
# the bfloat16 data-parallel step against the float32 one, and clipped against unclipped, on 2 and
# 4 ranks, through the step buffers (dp-shm) and the caller's buffers (dp); float16 and SGDP on 2
# ranks; GPT-2 shapes on 2 ranks. Prints the readable lines and writes every CSV line to OUT
# (default results/bench_mixed.csv; results/ is git-ignored and kept by tests/run), after a "# cpu:"
# line; benchmarks/step_table.py makes the README's table from that file.
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
OUT=${OUT:-results/bench_mixed.csv}
STEPS=${STEPS:-21}
if [ "${1:-}" = "-h" ]; then sed -n '2,7p' "$0"; exit 0; fi
mkdir -p "$(dirname "$OUT")"
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
bench() { mpirun "${flags[@]}" -np "$1" "$BUILD_DIR/bin/bench_mixed" --steps "$STEPS" "${@:2}"; }
{
  lscpu | sed -n 's/^Model name: */# cpu: /p'
  for np in 2 4; do
    for mode in dp-shm dp; do bench "$np" --set resnet50 --opt adamp --mode "$mode" --dtype bf16; done
  done
  bench 2 --set resnet50 --opt adamp --mode dp-shm --dtype fp16
  bench 2 --set resnet50 --opt sgdp --mode dp-shm --dtype bf16
  bench 2 --set gpt2 --opt adamp --mode dp-shm --dtype bf16
} | tee >(grep -E '^(csv,|# cpu:)' | awk '!/^csv,set/ || !seen++' > "$OUT") | grep -v '^csv,'
echo "CSV: $OUT (the README's table: /usr/bin/python3 benchmarks/step_table.py $OUT)"
