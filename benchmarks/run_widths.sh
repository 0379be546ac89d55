#!/usr/bin/env bash
# run_widths.sh [--rev REV] [bench_ab options] - the AVX2 clones against the clones the dispatcher
# runs here, step by step in one process (bench_ab), on one machine: what a CPU without AVX-512 gets
# from the same memory system. The library is built a second time with its clones capped at
# x86-64-v3 (-DADAMPI_CLONES_AVX2, src/internal.h), in $BUILD_DIR/avx2-clones, and each case runs with A =
# this checkout's build (BUILD_DIR, default build) and B = that one; a ratio B/A of 1 means the AVX2
# clones are as fast as the AVX-512 ones. --rev REV caps REV's clones instead (its source from git,
# built in $AB_DIR/avx2-SHA; for a revision older than ADAMPI_CLONES_AVX2 its clone list is edited),
# to measure a change to the AVX2 clones. Cases: AdamP and SGDP, random and orthogonal gradients,
# float32, bfloat16 and float16 models, ResNet-50 shapes; more bench_ab options (--rounds K, --set)
# go to every case. Meaningful only on a CPU with AVX-512: elsewhere both sides run AVX2 clones.
set -euo pipefail
if [ "${1:-}" = "-h" ]; then sed -n '2,12p' "$0"; exit 2; fi
rev=
if [ "${1:-}" = "--rev" ]; then rev=$2; shift 2; fi
BUILD_DIR=${BUILD_DIR:-build}
AB_DIR=${AB_DIR:-/tmp/adampi-ab}
root=$(git rev-parse --show-toplevel)
[ -x "$BUILD_DIR/bin/bench_ab" ] || { echo "run_widths.sh: no $BUILD_DIR/bin/bench_ab (build this checkout first)" >&2; exit 2; }
if [ -n "$rev" ]; then
  sha=$(git -C "$root" rev-parse --verify "$rev^{commit}") || { echo "run_widths.sh: no commit $rev" >&2; exit 2; }
  src=$AB_DIR/avx2-$sha/src bld=$AB_DIR/avx2-$sha/build
  if [ ! -f "$bld/lib/libadampi.so" ]; then
    rm -rf "$AB_DIR/avx2-$sha" && mkdir -p "$AB_DIR/avx2-$sha"
    git -C "$root" archive --format=tar --prefix=src/ "$sha" | tar -x -C "$AB_DIR/avx2-$sha"
    grep -q ADAMPI_CLONES_AVX2 "$src/src/internal.h" ||
      sed -i 's/target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")/target_clones("arch=x86-64-v3", "default")/' \
        "$src/src/internal.h"
  fi
  label="AVX2 clones of $rev"
else
  src=$root bld=$(cd "$BUILD_DIR" && pwd)/avx2-clones
  label="AVX2 clones of this checkout"
fi
cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-DADAMPI_CLONES_AVX2 -DADAMPI_BUILD_TESTS=OFF \
  -DADAMPI_BUILD_BENCHMARKS=OFF -DADAMPI_BUILD_TOOLS=OFF >/dev/null
cmake --build "$bld" -j2 --target adampi >/dev/null
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
a=$(cd "$BUILD_DIR" && pwd)/lib/libadampi.so b=$bld/lib/libadampi.so
echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p'); AVX-512: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
echo "# A: $a (the dispatcher's clones), B: $b ($label)"
echo "| optimizer | gradients | type | B/A step (median, quartiles) | B/A statistics | B/A update | same bits |"
echo "|---|---|---|---|---|---|---|"
for opt in adamp sgdp; do
  for grads in random orthogonal; do
    for dt in fp32 bf16 fp16; do
      out=$(mpirun "${flags[@]}" -np 1 "$BUILD_DIR/bin/bench_ab" --a "$a" --b "$b" --set resnet50 --opt "$opt" \
        --grads "$grads" --dtype "$dt" --rounds 11 "$@") || { printf '%s\n' "$out"; exit 1; }
      step=$(printf '%s\n' "$out" | sed -n 's/^B\/A step, per round: median \([0-9.]*\), quartiles \([0-9.-]*\),.*/\1 (\2)/p')
      phases=$(printf '%s\n' "$out" | sed -n 's/^B\/A of the medians: stats \([0-9.]*\) exchange [0-9.]* update \([0-9.]*\).*/\1 | \2/p')
      same=$(printf '%s\n' "$out" | sed -n 's/^same bits after [0-9]* steps each: //p')
      echo "| $opt | $grads | $dt | $step | $phases | $same |"
    done
  done
done
