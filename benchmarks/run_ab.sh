#!/usr/bin/env bash
# run_ab.sh REV [-np N] [bench_ab options] - the library at git revision REV (A) against this
# checkout's build (B), step by step in one process (bench_ab): which is faster, and whether they
# compute the same bits. REV is built once, Release, in $AB_DIR/REV (default /tmp/adampi-ab);
# BUILD_DIR (default build) must hold this checkout's build. Threads (--threads T > 1) run with
# mpirun's binding off. Example, a change to the update kernels against the commit before it:
#   benchmarks/run_ab.sh HEAD~1 --set resnet50 --opt adamp --grads orthogonal --rounds 41
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ]; then sed -n '2,7p' "$0"; exit 2; fi
rev=$1; shift
np=1
if [ "${1:-}" = "-np" ]; then np=$2; shift 2; fi
BUILD_DIR=${BUILD_DIR:-build}
AB_DIR=${AB_DIR:-/tmp/adampi-ab}
root=$(git rev-parse --show-toplevel)
sha=$(git -C "$root" rev-parse --verify "$rev^{commit}") || { echo "run_ab.sh: no commit $rev" >&2; exit 2; }
src=$AB_DIR/$sha/src bld=$AB_DIR/$sha/build
if [ ! -f "$bld/lib/libadampi.so" ]; then
  rm -rf "$AB_DIR/$sha" && mkdir -p "$AB_DIR/$sha"
  git -C "$root" archive --format=tar --prefix=src/ "$sha" | tar -x -C "$AB_DIR/$sha"
  cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DADAMPI_BUILD_TESTS=OFF -DADAMPI_BUILD_BENCHMARKS=OFF \
    -DADAMPI_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$bld" -j2 --target adampi >/dev/null
fi
[ -x "$BUILD_DIR/bin/bench_ab" ] || { echo "run_ab.sh: no $BUILD_DIR/bin/bench_ab (build this checkout first)" >&2; exit 2; }
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
case " $* " in *" --threads "[2-9]*|*" --threads "[1-9][0-9]*) flags+=(--bind-to none) ;; esac
echo "# A: $rev ($sha)"
mpirun "${flags[@]}" -np "$np" "$BUILD_DIR/bin/bench_ab" --a "$bld/lib/libadampi.so" \
  --b "$(cd "$BUILD_DIR" && pwd)/lib/libadampi.so" "$@"
