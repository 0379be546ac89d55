#!/usr/bin/env bash
# tests/fuzz/run.sh BIN_DIR [RUNS] - replay every saved regression input through its harness, then
# fuzz each harness for a bounded number of executions (default 20000; the edit harnesses, which
# write a file through HDF5 per input, get a quarter) from the seed corpus, with a fixed seed so a
# CI run is repeatable. Exit status 1 if any input crashes, trips a sanitizer, breaks an invariant,
# runs longer than 20 s or needs more than 2 GiB. New crashing inputs are left in
# BIN_DIR/../fuzz-artifacts/ to be added to tests/fuzz/regressions/<harness>/.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || [ $# -lt 1 ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
BIN=$(cd "$1" && pwd)
RUNS=${2:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(cd "$BIN/.." && pwd)/fuzz-work
ART=$(cd "$BIN/.." && pwd)/fuzz-artifacts
rm -rf "$WORK"
mkdir -p "$WORK" "$ART"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1

total=0
summary=()
for h in checkpoint_raw checkpoint_edit replay_raw replay_edit; do
  exe="$BIN/fuzz_$h"
  # 1. Every input that once crashed this harness must now pass.
  reg=("$HERE"/regressions/"$h"/*)
  if [ -e "${reg[0]}" ]; then
    "$exe" "${reg[@]}" > "$WORK/$h.regressions.log" 2>&1 || {
      tail -40 "$WORK/$h.regressions.log"
      echo "fuzz: $h: a saved regression input fails again" >&2
      exit 1
    }
  fi
  # 2. Bounded fuzzing from the seeds (raw: valid files; edit: programs start from nothing).
  corpus="$WORK/corpus-$h"
  mkdir -p "$corpus"
  case $h in
    checkpoint_raw) cp "$HERE"/seeds/checkpoint/*.h5 "$corpus"/ ;;
    replay_raw) cp "$HERE"/seeds/replay/*.h5 "$corpus"/ ;;
  esac
  n=$RUNS
  case $h in *_edit) n=$((RUNS / 4)) ;; esac
  start=$(date +%s)
  if ! "$exe" -runs="$n" -seed=1 -timeout=20 -rss_limit_mb=2048 -artifact_prefix="$ART/$h-" \
       -print_final_stats=1 "$corpus" > "$WORK/$h.log" 2>&1; then
    grep -E "ERROR|SUMMARY|invariant|^    #[0-9]+ " "$WORK/$h.log" | head -40 >&2 || true
    echo "fuzz: $h crashed; the input is in $ART (add it to tests/fuzz/regressions/$h/ once fixed)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$h.log")
  cov=$(grep -o 'cov: [0-9]*' "$WORK/$h.log" | tail -1)
  total=$((total + runs))
  summary+=("$(printf '%-16s %8d executions in %4d s, %s edges, %d regression inputs, 0 crashes' "$h" "$runs" \
    $(( $(date +%s) - start )) "${cov#cov: }" "$( [ -e "${reg[0]}" ] && echo ${#reg[@]} || echo 0)")")
done
printf 'fuzz: %s\n' "${summary[@]}"
echo "fuzz: $total executions in all, no crash, no sanitizer report, no broken invariant"
