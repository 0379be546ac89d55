#!/usr/bin/env bash
# ckpt_faults.sh - checkpoints under faults, with ckpt_tool:
#   1. SIGKILL of one rank at a random moment during repeated saves, TRIALS times: the file at the
#      path always loads (on another rank count) and is exactly some complete earlier save;
#   2. a full disk (a small tmpfs): the save fails with a message, the previous file stays intact
#      and no temporary file is left;
#   3. a directory without write permission (a read-only tmpfs as root, chmod otherwise).
# 2 and 3 need mount (root); they are skipped with a message where it is not allowed.
set -euo pipefail

TOOL=${1:?usage: ckpt_faults.sh path/to/ckpt_tool}
TRIALS=${TRIALS:-20}
RANKS=${RANKS:-3}

work=$(mktemp -d)
mounts=()
cleanup() {
  for m in "${mounts[@]:-}"; do [ -n "$m" ] && umount "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }

# 1. SIGKILL during saves
ck="$work/ck.h5"
run "$RANKS" "$TOOL" stress "$ck" 1 > /dev/null
killed=0
for trial in $(seq 1 "$TRIALS"); do
  run "$RANKS" "$TOOL" stress "$ck" 100000 > /dev/null 2>&1 &
  mpirun_pid=$!
  sleep "$(awk -v s="$trial" 'BEGIN { srand(s); printf "%.3f", 0.3 + rand() * 1.2 }')"
  # the ranks' command lines start with the tool's path; mpirun's does not
  victim=$(pgrep -f "^$TOOL stress $ck" | shuf -n 1 || true)
  what="no rank left to kill"
  if [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null; then killed=$((killed + 1)); what="killed rank pid $victim"; fi
  wait "$mpirun_pid" 2>/dev/null || true
  out=$(run 2 "$TOOL" verify "$ck" 2>&1) || { echo "FAIL: trial $trial: the checkpoint does not verify: $out"; exit 1; }
  echo "trial $trial: $what; $(echo "$out" | grep 'ckpt_tool verify')"
done
echo "ok: $killed ranks killed during saves in $TRIALS trials; the checkpoint always loaded and verified"

# 2. full disk
if mkdir -p "$work/small" && mount -t tmpfs -o size=1200k tmpfs "$work/small" 2>/dev/null; then
  mounts+=("$work/small")
  run "$RANKS" "$TOOL" stress "$work/small/ck.h5" 1 > /dev/null
  if run "$RANKS" "$TOOL" stress "$work/small/ck.h5" 3 > "$work/full.txt" 2>&1; then
    echo "FAIL: a save into a full filesystem succeeded"; exit 1
  fi
  grep -q "disk is full" "$work/full.txt" || { echo "FAIL: message was:"; cat "$work/full.txt"; exit 1; }
  run 2 "$TOOL" verify "$work/small/ck.h5" | grep -q "generation 1 ok" || { echo "FAIL: the previous checkpoint was damaged"; exit 1; }
  [ ! -e "$work/small/ck.h5.adampi-tmp" ] || { echo "FAIL: a temporary file was left on the full disk"; exit 1; }
  echo "ok: full disk refused ($(grep -o 'the disk is full[^)]*)' "$work/full.txt" | head -1)); previous checkpoint intact"
else
  echo "skipped: full-disk test (cannot mount a small tmpfs here)"
fi

# 3. no write permission
mkdir -p "$work/ro"
if [ "$(id -u)" -ne 0 ]; then
  chmod 555 "$work/ro"
elif mount -t tmpfs -o ro,size=1m tmpfs "$work/ro" 2>/dev/null; then
  mounts+=("$work/ro")
else
  echo "skipped: read-only directory test (root without mount)"; exit 0
fi
if run "$RANKS" "$TOOL" stress "$work/ro/ck.h5" 1 > "$work/ro.txt" 2>&1; then
  echo "FAIL: a save into a read-only directory succeeded"; exit 1
fi
grep -q "cannot create" "$work/ro.txt" || { echo "FAIL: message was:"; cat "$work/ro.txt"; exit 1; }
echo "ok: read-only directory: $(grep -o 'cannot create[^(]*' "$work/ro.txt" | head -1)"
