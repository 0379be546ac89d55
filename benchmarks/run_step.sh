#!/usr/bin/env bash
# run_step.sh - the step benchmarks of the README's performance section, in one go: ResNet-50
# shapes (all four optimizers, random and orthogonal gradients, 1 thread; AdamP and SGDP with 2
# threads; sharded on 2 and 4 ranks; data-parallel on 2 and 4 ranks with the caller's buffers and
# with adampi_alloc_step_buffers), GPT-2-small shapes, and bf16/fp16 models (random and orthogonal
# gradients; data-parallel orthogonal). mpirun binds rank r to core r, so one-rank lines run on
# core 0 (threads: unbound). Prints the readable lines and writes every
# CSV line to OUT (default results/bench_step.csv; results/ is git-ignored and kept by tests/run),
# after a "# cpu:" line; benchmarks/step_table.py makes the README's table from that file.
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
OUT=${OUT:-results/bench_step.csv}
if [ "${1:-}" = "-h" ]; then sed -n '2,9p' "$0"; exit 0; fi
mkdir -p "$(dirname "$OUT")"
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
bench() { mpirun "${flags[@]}" -np "$1" "$BUILD_DIR/bin/bench_step" "${@:2}"; }
# Threads inside one rank need mpirun's default binding (one core per rank) off.
bench_threads() { mpirun "${flags[@]}" --bind-to none -np 1 "$BUILD_DIR/bin/bench_step" "$@"; }
{
  lscpu | sed -n 's/^Model name: */# cpu: /p'
  for opt in adamp adamw sgdp sgd; do
    bench 1 --set resnet50 --opt "$opt" --grads all
  done
  for opt in adamp sgdp; do bench_threads --set resnet50 --opt "$opt" --grads orthogonal --threads 2; done
  bench 2 --set resnet50 --opt adamp --grads orthogonal
  bench 4 --set resnet50 --opt adamp --grads orthogonal
  for np in 2 4; do
    for mode in dp dp-shm; do bench "$np" --set resnet50 --opt adamp --grads orthogonal --mode "$mode"; done
  done
  for opt in adamp sgdp; do bench 1 --set gpt2 --opt "$opt" --grads all; done
  # 16-bit models (the float32 master and state in adampi), each against its own floor
  for dt in bf16 fp16; do bench 1 --set resnet50 --opt adamp --grads all --dtype "$dt"; done
  for dt in bf16 fp16; do bench 1 --set resnet50 --opt sgdp --grads all --dtype "$dt"; done
  for dt in bf16 fp16; do bench 2 --set resnet50 --opt adamp --grads orthogonal --mode dp-shm --dtype "$dt"; done
  for dt in bf16 fp16; do bench 1 --set gpt2 --opt adamp --grads all --dtype "$dt"; done
} | tee >(grep -E '^(csv,|# cpu:)' | awk '!/^csv,set/ || !seen++' > "$OUT") | grep -v '^csv,'
echo "CSV: $OUT (the README's table: /usr/bin/python3 benchmarks/step_table.py $OUT)"
