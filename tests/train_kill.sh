#!/usr/bin/env bash
# train_kill.sh - SIGKILL of one rank in the middle of training: the job ends (no rank waits
# forever), and a restart from the last checkpoint, on another rank count, reproduces bitwise the
# parameters and optimizer state of a run that was never interrupted.
set -euo pipefail
TRAIN=${1:?usage: train_kill.sh path/to/adampi-train}
EPOCHS=${EPOCHS:-12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--synthetic --epochs "$EPOCHS" --hidden 256,256 --opt adamp)
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }

run 2 "$TRAIN" "${args[@]}" --checkpoint "$work/ref.h5" > /dev/null

run 2 "$TRAIN" "${args[@]}" --checkpoint "$work/ck.h5" > "$work/killed.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do [ -f "$work/ck.h5" ] && break; sleep 0.1; done
[ -f "$work/ck.h5" ] || { echo "FAIL: no checkpoint appeared"; exit 1; }
sleep 0.3
victim=$(pgrep -f "^$TRAIN ${args[*]} --checkpoint $work/ck.h5" | shuf -n 1 || true)
[ -n "$victim" ] || { echo "FAIL: the run ended before a rank could be killed (raise EPOCHS)"; exit 1; }
kill -9 "$victim"
for _ in $(seq 1 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then echo "FAIL: the job still runs 60 s after a rank was killed"; kill -9 "$job"; exit 1; fi
wait "$job" && { echo "FAIL: the job reported success after a rank was killed"; exit 1; }
done_epochs=$(grep -c "done: train" "$work/killed.log" || true)

run 4 "$TRAIN" "${args[@]}" --checkpoint "$work/ck.h5" --resume "$work/ck.h5" > /dev/null
h5diff -q "$work/ref.h5" "$work/ck.h5" /tensors /tensors && h5diff -q "$work/ref.h5" "$work/ck.h5" /arrays /arrays || { echo "FAIL: the restarted run differs"; exit 1; }
echo "ok: a rank killed after $done_epochs epoch(s) of $EPOCHS, the job ended, the restart on 4 ranks from the last checkpoint is bitwise the uninterrupted 2-rank run"
