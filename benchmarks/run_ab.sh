#!/usr/bin/env bash
# run_ab.sh REV [-np N] [bench_ab options] - the library at git revision REV against this
# checkout's build, step by step in one process (bench_ab): which is faster, and whether they
# compute the same bits. It runs bench_ab twice, REV as A and then as B, and prints the ratios of
# both runs and their geometric mean, which cancels what favours one side of a run (on the
# development VM, the second model copy of a run could be a few percent faster or slower for the
# whole run). REV is built once, Release, in $AB_DIR/REV (default /tmp/adampi-ab); BUILD_DIR
# (default build) must hold this checkout's build. Threads (--threads T > 1) run with mpirun's
# binding off. RUNS=N (default 1) repeats the pair of runs N times and adds the geometric mean over
# all of them (on GPT-2 shapes one pair is not enough here). Example, a change to the update
# kernels against the commit before it:
#   benchmarks/run_ab.sh HEAD~1 --set resnet50 --opt adamp --grads orthogonal --rounds 41
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ]; then sed -n '2,12p' "$0"; exit 2; fi
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
old=$bld/lib/libadampi.so new=$(cd "$BUILD_DIR" && pwd)/lib/libadampi.so
ab() { mpirun "${flags[@]}" -np "$np" "$BUILD_DIR/bin/bench_ab" --a "$1" --b "$2" "${@:3}"; }
echo "# old: $rev ($sha), new: $BUILD_DIR"
csvs=()
for ((run = 1; run <= ${RUNS:-1}; run++)); do
  out1=$(ab "$old" "$new" "$@") || { printf '%s\n' "$out1"; exit 1; }
  printf '%s\n' "$out1" | grep -v '^csv' | sed 's/^/run 1 (A old, B new): /'
  out2=$(ab "$new" "$old" "$@") || { printf '%s\n' "$out2"; exit 1; }
  printf '%s\n' "$out2" | grep -v '^csv' | sed 's/^/run 2 (A new, B old): /'
  csvs+=("$(printf '%s\n' "$out1" | grep '^csv,' | tail -1)" "$(printf '%s\n' "$out2" | grep '^csv,' | tail -1)")
done
# csv fields: 10 a_step 11 b_step 16 a_stats 17 b_stats 18 a_update 19 b_update 20 same_bits; odd
# lines have the new build as B, even lines as A
printf '%s\n' "${csvs[@]}" | awk -F, '
  function add(s, t, u) { ls += log(s); lt += log(t); lu += log(u); n++; printf " %.3f/%.3f/%.3f", s, t, u }
  BEGIN { same = 1; printf "new/old (step/statistics/update, medians) per run:" }
  NR % 2 == 1 { add($11 / $10, $17 / $16, $19 / $18); same = same && $20 }
  NR % 2 == 0 { add($10 / $11, $16 / $17, $18 / $19); same = same && $20 }
  END { printf "\nnew/old, geometric mean of the %d runs: step %.3f; statistics %.3f; update %.3f; same bits: %s\n",
               n, exp(ls / n), exp(lt / n), exp(lu / n), same ? "yes" : "no" }'
