#!/usr/bin/env bash
# benchmarks/run_torch.sh [RANKS] [OUT_DIR] - the PyTorch step three ways (DDP + official AdamP,
# DDP + ZeroRedundancyOptimizer(adamp.AdamP), adampi.torch.AdamP) under mpirun, one thread per
# rank, each mode in its own job (so peak memory is its own); then how far their parameters are
# apart after one step from the same state. Needs a build (cmake --build build).
# CSV: OUT_DIR/bench_torch.csv (default results/). ADAMP_PATH names the official package.
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-2}
OUT=${2:-results}
mkdir -p "$OUT"
rm -f "$OUT/bench_torch.csv"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export ADAMPI_LIBRARY=${ADAMPI_LIBRARY:-$PWD/build/lib/libadampi.so} OMP_NUM_THREADS=1
PY=${PYTHON:-/usr/bin/python3}
grep -m1 "model name" /proc/cpuinfo
for mode in ddp zero adampi; do
  mpirun -np "$RANKS" --bind-to none "$PY" benchmarks/bench_torch.py --mode "$mode" --iters "${ITERS:-8}" \
    --dump "$OUT/$mode.npy" --csv "$OUT/bench_torch.csv" | grep -v '^mode,'
done
"$PY" benchmarks/bench_torch.py --compare "$OUT/ddp.npy" "$OUT/zero.npy" "$OUT/adampi.npy"
rm -f "$OUT"/ddp.npy "$OUT"/zero.npy "$OUT"/adampi.npy
