#!/usr/bin/env bash
# memcheck.sh - valgrind memcheck on 2-rank runs of the step and checkpoint suites: no invalid read
# or write, no use of uninitialised memory, in adampi or anywhere else. Suppressions: Open MPI's own
# file and tests/valgrind.supp (PMIx internals, each explained). Leaks are not counted: Open MPI
# keeps allocations from MPI_Init until exit (none of the leak records involves libadampi).
set -euo pipefail
BIN=${1:?usage: memcheck.sh build/bin}
SUPP_DIR=$(cd "$(dirname "$0")" && pwd)
if ! command -v valgrind > /dev/null; then echo "skipped: valgrind is not installed"; exit 77; fi
supps=(--suppressions="$SUPP_DIR/valgrind.supp")
[ -f /usr/share/openmpi/openmpi-valgrind.supp ] && supps+=(--suppressions=/usr/share/openmpi/openmpi-valgrind.supp)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for t in test_step test_checkpoint; do
  if ! mpirun --oversubscribe -np 2 \
      valgrind --error-exitcode=9 --errors-for-leak-kinds=none "${supps[@]}" --log-file="$logs/$t.%p.log" \
      "$BIN/$t" > "$logs/$t.out" 2>&1; then
    echo "FAIL: $t under valgrind"; cat "$logs"/$t.*.log | grep -A20 -E "Invalid|uninitialised|Conditional" | head -60; exit 1
  fi
  echo "ok: $t on 2 ranks: $(grep -h 'ERROR SUMMARY' "$logs"/$t.*.log | sed 's/==[0-9]*== //' | sort -u | tr '\n' ' ')"
done
