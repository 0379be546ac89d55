#!/usr/bin/env bash
# train_cli.sh - adampi-train as a user runs it:
#   1. 2 ranks, 1 epoch on the real Fashion-MNIST (when installed): test accuracy above 80%;
#   2. 2 epochs in one go, and 1 epoch + resume for the second: final checkpoints bitwise equal, also
#      when the first epoch ran on 4 ranks, the second on 2, and the uninterrupted run on 1;
#   3. a missing data set and corrupt IDX files: a message naming the problem, non-zero exit.
# Without Fashion-MNIST installed, 1 and the truncated-file case are skipped and it exits 77.
set -euo pipefail
TRAIN=${1:?usage: train_cli.sh path/to/adampi-train}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skipped=0
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }

if [ -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  run 2 "$TRAIN" --epochs 1 --csv "$work/log.csv" > "$work/out.txt"
  acc=$(tail -1 "$work/log.csv" | cut -d, -f8)
  awk -v a="$acc" 'BEGIN { exit !(a > 0.80) }' || { echo "FAIL: test accuracy $acc after one epoch"; cat "$work/out.txt"; exit 1; }
  echo "ok: 2 ranks, 1 epoch of Fashion-MNIST: test accuracy $acc"
else
  echo "skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); the other parts run, then exit 77"
  skipped=1
fi

for opt in adamp sgdp; do
  run 2 "$TRAIN" --synthetic --opt "$opt" --epochs 2 --hidden 64,64 --checkpoint "$work/a.h5" > /dev/null
  run 2 "$TRAIN" --synthetic --opt "$opt" --epochs 1 --hidden 64,64 --checkpoint "$work/b.h5" > /dev/null
  run 2 "$TRAIN" --synthetic --opt "$opt" --epochs 2 --hidden 64,64 --checkpoint "$work/b.h5" --resume "$work/b.h5" > /dev/null
  h5diff -q "$work/a.h5" "$work/b.h5" /tensors /tensors && h5diff -q "$work/a.h5" "$work/b.h5" /arrays /arrays || { echo "FAIL: $opt resumed run differs"; exit 1; }
  echo "ok: $opt: 2 epochs, and 1 epoch + resume, give bitwise equal parameters and state"
done
run 1 "$TRAIN" --synthetic --epochs 2 --hidden 64,64 --checkpoint "$work/one.h5" > /dev/null
run 4 "$TRAIN" --synthetic --epochs 1 --hidden 64,64 --checkpoint "$work/four.h5" > /dev/null
run 2 "$TRAIN" --synthetic --epochs 2 --hidden 64,64 --checkpoint "$work/four.h5" --resume "$work/four.h5" > /dev/null
h5diff -q "$work/one.h5" "$work/four.h5" /tensors /tensors && h5diff -q "$work/one.h5" "$work/four.h5" /arrays /arrays || { echo "FAIL: 1 rank vs 4 then 2 ranks differ"; exit 1; }
echo "ok: 2 epochs on 1 rank, and epoch 1 on 4 ranks + epoch 2 resumed on 2 ranks: bitwise equal"

if run 2 "$TRAIN" --data "$work/none" --epochs 1 > /dev/null 2> "$work/err.txt"; then echo "FAIL: missing data accepted"; exit 1; fi
grep -q "apt-get install dataset-fashion-mnist" "$work/err.txt" || { echo "FAIL: message was:"; cat "$work/err.txt"; exit 1; }
mkdir -p "$work/bad"
echo "not an idx file" | gzip > "$work/bad/train-images-idx3-ubyte.gz"
if run 1 "$TRAIN" --data "$work/bad" --epochs 1 > /dev/null 2> "$work/err.txt"; then echo "FAIL: corrupt data accepted"; exit 1; fi
grep -q "not an IDX file" "$work/err.txt" || { echo "FAIL: message was:"; cat "$work/err.txt"; exit 1; }
if [ -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  (gzip -dc "$DATA/train-images-idx3-ubyte.gz" || true) | head -c 100000 | gzip > "$work/bad/train-images-idx3-ubyte.gz"
  if run 1 "$TRAIN" --data "$work/bad" --epochs 1 > /dev/null 2> "$work/err.txt"; then echo "FAIL: truncated data accepted"; exit 1; fi
  grep -q "truncated" "$work/err.txt" || { echo "FAIL: message was:"; cat "$work/err.txt"; exit 1; }
fi
echo "ok: missing, corrupt and truncated data sets refused with a message"
[ "$skipped" = 0 ] || exit 77 # ctest: "Skipped", not a pass, when the data set was missing
