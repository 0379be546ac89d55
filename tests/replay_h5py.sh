#!/usr/bin/env bash
# replay_h5py.sh - replay files written the way h5py users write them (tests/fixtures/h5py, made by
# its generate.py: variable-length UTF-8 and ASCII strings, fixed-length UTF-8, null-terminated,
# space-padded and wide null-padded strings, int32 and uint8 integers, float32 hyper-parameters,
# numpy-bool nesterov) replay to bitwise the same /params as their twin in the project's own form
# (fixed-length ASCII, int64, float64), on 1 and 3 ranks.
set -euo pipefail

REPLAY=${1:?usage: replay_h5py.sh path/to/adampi-replay h5py-fixtures-dir}
DIR=${2:?usage: replay_h5py.sh path/to/adampi-replay h5py-fixtures-dir}
RANKS=${RANKS:-"1 3"}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { mpirun --oversubscribe -np "$1" "${@:2}" < /dev/null; } # mpirun would read the case list

cases=0
while read -r name ref; do
  case $name in '#'* | '') continue ;; esac
  for n in $RANKS; do
    [ -e "$work/$ref.$n.h5" ] || run "$n" "$REPLAY" "$DIR/$ref.h5" "$work/$ref.$n.h5" > /dev/null
    if ! run "$n" "$REPLAY" "$DIR/$name.h5" "$work/$name.$n.h5" > "$work/log.txt" 2>&1; then
      echo "FAIL: $name refused on $n ranks:"; cat "$work/log.txt"; exit 1
    fi
    if ! h5diff -q "$work/$ref.$n.h5" "$work/$name.$n.h5" /params /params; then
      echo "FAIL: $name on $n ranks differs from $ref"
      h5diff -r "$work/$ref.$n.h5" "$work/$name.$n.h5" /params /params | head -20
      exit 1
    fi
  done
  # the replay moved the parameters (a file read as all defaults would not compare equal to
  # anything by chance, but a replay of zero steps would)
  if h5diff -q "$DIR/$name.h5" "$work/$name.1.h5" /params /params > /dev/null 2>&1; then
    echo "FAIL: $name: the replay did not change the parameters"; exit 1
  fi
  echo "ok: $name replays bitwise as $ref on ranks: $RANKS"
  cases=$((cases + 1))
done < "$DIR/cases.txt"
# float32 hyper-parameters matter: their reference replays differently from the float64 one, so the
# float32 case would catch a reader that widened them inexactly or read the float64 values
run 1 "$REPLAY" "$DIR/reference_adamp.h5" "$work/f64.h5" > /dev/null
run 1 "$REPLAY" "$DIR/reference_float32_adamp.h5" "$work/f32.h5" > /dev/null
if h5diff -q "$work/f64.h5" "$work/f32.h5" /params /params > /dev/null 2>&1; then
  echo "FAIL: float32 and float64 hyper-parameters replay alike: the float32 case checks nothing"; exit 1
fi
[ "$cases" -ge 10 ] || { echo "FAIL: only $cases cases in $DIR/cases.txt"; exit 1; }
echo "ok: $cases files written the h5py way replay bitwise as the project's own form"
