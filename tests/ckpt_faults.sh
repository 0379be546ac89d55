#!/usr/bin/env bash
# ckpt_faults.sh - checkpoints under faults, with ckpt_tool. PART selects one (ctest runs each as
# its own test), or all three in turn:
#   kill       SIGKILL of one rank at a random moment during repeated saves, TRIALS times: the file
#              at the path always loads (on another rank count) and is exactly some complete
#              earlier save. A trial whose ranks never appear, or that finds no rank to kill, or
#              whose job outlives the killed rank by WAIT_S seconds, fails at once, saying so;
#   full-disk  a full disk (a small tmpfs): the save fails with a message, the previous file stays
#              intact and no temporary file is left;
#   read-only  a directory without write permission (a read-only tmpfs as root, chmod otherwise).
# full-disk and read-only (as root) need mount: where it is not allowed they are skipped, and the
# script exits 77 (ctest's "Skipped") if any part was skipped and none failed.
#
#   ckpt_faults.sh path/to/ckpt_tool [kill|full-disk|read-only|all]
set -euo pipefail

TOOL=${1:?usage: ckpt_faults.sh path/to/ckpt_tool [kill|full-disk|read-only|all]}
PART=${2:-all}
TRIALS=${TRIALS:-20}
RANKS=${RANKS:-3}
WAIT_S=${WAIT_S:-60}

case "$PART" in kill | full-disk | read-only | all) ;; *) echo "unknown part '$PART'" >&2; exit 2 ;; esac
work=$(mktemp -d)
mounts=()
job=""
cleanup() {
  [ -n "$job" ] && kill "$job" 2>/dev/null || true
  for m in "${mounts[@]:-}"; do [ -n "$m" ] && umount "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }
skipped=0
want() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
fail() { echo "FAIL: $*"; exit 1; }
# Stop the background job: mpirun passes SIGTERM on to its ranks; SIGKILL if it lingers.
stop_job() {
  kill "$job" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$job" 2>/dev/null || true
  wait "$job" 2>/dev/null || true
  job=""
}

# 1. SIGKILL during saves
if want kill; then
  ck="$work/ck.h5"
  run "$RANKS" "$TOOL" stress "$ck" 1 > /dev/null
  # the ranks' command lines start with the tool's path; mpirun's does not
  ranks() { pgrep -f "^$TOOL stress $ck" || true; }
  for trial in $(seq 1 "$TRIALS"); do
    mpirun --oversubscribe -np "$RANKS" "$TOOL" stress "$ck" 100000 > /dev/null 2>&1 &
    job=$! # mpirun itself, not a subshell, so that stop_job reaches it
    # The random moment counts from when every rank exists, however long a loaded machine takes
    # to start them (bounded: WAIT_S seconds).
    for _ in $(seq 1 $((WAIT_S * 10))); do
      [ "$(ranks | wc -l)" -ge "$RANKS" ] && break
      kill -0 "$job" 2>/dev/null || break
      sleep 0.1
    done
    if [ "$(ranks | wc -l)" -lt "$RANKS" ]; then
      kill -0 "$job" 2>/dev/null && why="did not all appear within $WAIT_S s" || why="were never all seen: the run ended first"
      stop_job
      fail "trial $trial: nothing to kill: the $RANKS ranks of the stress run $why"
    fi
    sleep "$(awk -v s="$trial" 'BEGIN { srand(s); printf "%.3f", 0.3 + rand() * 1.2 }')"
    victim=$(ranks | shuf -n 1)
    if [ -z "$victim" ] || ! kill -9 "$victim" 2>/dev/null; then
      stop_job
      fail "trial $trial: no rank of the stress run was left to kill (it ended early, or its ranks were not found)"
    fi
    # Open MPI ends the job when a rank dies; a job that outlives it is a hang.
    for _ in $(seq 1 $((WAIT_S * 10))); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then stop_job; fail "trial $trial: the job still ran $WAIT_S s after rank pid $victim was killed"; fi
    wait "$job" 2>/dev/null || true
    job=""
    out=$(run 2 "$TOOL" verify "$ck" 2>&1) || fail "trial $trial: the checkpoint does not verify: $out"
    echo "trial $trial: killed rank pid $victim; $(echo "$out" | grep 'ckpt_tool verify')"
  done
  echo "ok: $TRIALS ranks killed during saves in $TRIALS trials; the checkpoint always loaded and verified"
fi

# 2. full disk
if want full-disk; then
  if mkdir -p "$work/small" && mount -t tmpfs -o size=1200k tmpfs "$work/small" 2>/dev/null; then
    mounts+=("$work/small")
    run "$RANKS" "$TOOL" stress "$work/small/ck.h5" 1 > /dev/null
    if run "$RANKS" "$TOOL" stress "$work/small/ck.h5" 3 > "$work/full.txt" 2>&1; then
      fail "a save into a full filesystem succeeded"
    fi
    grep -q "disk is full" "$work/full.txt" || { echo "FAIL: message was:"; cat "$work/full.txt"; exit 1; }
    run 2 "$TOOL" verify "$work/small/ck.h5" | grep -q "generation 1 ok" || fail "the previous checkpoint was damaged"
    [ ! -e "$work/small/ck.h5.adampi-tmp" ] || fail "a temporary file was left on the full disk"
    echo "ok: full disk refused ($(grep -o 'the disk is full[^)]*)' "$work/full.txt" | head -1)); previous checkpoint intact"
  else
    echo "skipped: full-disk test (cannot mount a small tmpfs here)"
    skipped=1
  fi
fi

# 3. no write permission
if want read-only; then
  mkdir -p "$work/ro"
  ro=1
  if [ "$(id -u)" -ne 0 ]; then
    chmod 555 "$work/ro"
  elif mount -t tmpfs -o ro,size=1m tmpfs "$work/ro" 2>/dev/null; then
    mounts+=("$work/ro")
  else
    echo "skipped: read-only directory test (root without mount)"
    skipped=1
    ro=0
  fi
  if [ "$ro" = 1 ]; then
    if run "$RANKS" "$TOOL" stress "$work/ro/ck.h5" 1 > "$work/ro.txt" 2>&1; then
      fail "a save into a read-only directory succeeded"
    fi
    grep -q "cannot create" "$work/ro.txt" || { echo "FAIL: message was:"; cat "$work/ro.txt"; exit 1; }
    echo "ok: read-only directory: $(grep -o 'cannot create[^(]*' "$work/ro.txt" | head -1)"
  fi
fi
[ "$skipped" = 0 ] || exit 77
