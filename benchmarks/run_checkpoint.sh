#!/usr/bin/env bash
# run_checkpoint.sh - the checkpoint benchmark of the README: save and load of 100M parameters
# with AdamP state (1.2 GB) on 1, 2 and 4 ranks, against a plain write+fsync and read of the same
# bytes measured in the same run. Writes its files under DIR (default: the build directory).
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
DIR=${DIR:-$BUILD_DIR}
MILLIONS=${MILLIONS:-100}
REPEAT=${REPEAT:-3}
RANKS=${RANKS:-"1 2 4"}
if [ "${1:-}" = "-h" ]; then sed -n '2,5p' "$0"; exit 0; fi
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
for n in $RANKS; do
  mpirun "${flags[@]}" \
    -np "$n" \
    "$BUILD_DIR/bin/bench_checkpoint" \
    --millions "$MILLIONS" \
    --repeat "$REPEAT" \
    --dir "$DIR" | grep -v '^csv,ranks' 
done
