#!/usr/bin/env bash
# soak.sh - thousands of steps of the test problem on 4 ranks with a checkpoint every 100 steps,
# resumed half-way on 3 ranks: the final parameters, state and step counters must equal those of
# the uninterrupted 4-rank run bit for bit.
set -euo pipefail
TOOL=${1:?usage: soak.sh path/to/ckpt_tool}
STEPS=${STEPS:-2000}
EVERY=${EVERY:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpirun --oversubscribe -np 4 "$TOOL" soak "$work" "$STEPS" "$EVERY"
mpirun --oversubscribe -np 3 "$TOOL" resume "$work" "$STEPS" "$EVERY"
cmp "$work/final.bin" "$work/resumed.bin" || { echo "FAIL: the resumed soak differs"; exit 1; }
echo "ok: $STEPS steps on 4 ranks with a checkpoint every $EVERY, resumed at step $((STEPS / 2)) on 3 ranks: bitwise equal"
