#!/usr/bin/env bash
# shm_full.sh - adampi_alloc_step_buffers when /dev/shm is too small: every rank returns
# ADAMPI_ERR_NOMEM with a message naming the rank and the bytes, no rank waits forever, nothing is
# left in /dev/shm, and the handle still steps with the caller's buffers. Then the same program
# with buffers that fit. Runs in a private mount namespace with a 48 MiB tmpfs on /dev/shm (the
# machine's /dev/shm is not touched); exits 77 (skipped) where that cannot be made.
set -euo pipefail
TOOL=${1:?usage: shm_full.sh path/to/shm_tool}
if [ "$(id -u)" -ne 0 ] || ! command -v unshare > /dev/null; then
  echo "skipped: needs root and unshare (a private /dev/shm)"; exit 77
fi
if ! unshare -m true 2> /dev/null; then echo "skipped: cannot make a mount namespace here"; exit 77; fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Inside the namespace: 2 ranks x 4,000 x 1000 floats x 2 buffers = 64 MB > 48 MiB; 2 x 8 MB fits.
unshare -m bash -c '
  set -u
  mount -t tmpfs -o size=48m tmpfs /dev/shm || exit 77
  run() { timeout 120 mpirun --oversubscribe -np 2 "$1" "$2"; }
  echo "== too big"; run "$0" 4000; echo "exit $?"
  echo "left in /dev/shm: $(ls /dev/shm | grep -c "^adampi-" || true)"
  echo "== fits"; run "$0" 1000; echo "exit $?"
  echo "left in /dev/shm: $(ls /dev/shm | grep -c "^adampi-" || true)"
' "$TOOL" > "$out" 2>&1 || { rc=$?; cat "$out"; [ $rc -eq 77 ] && exit 77; exit 1; }
cat "$out"
fail() { echo "FAIL: $*"; exit 1; }
big=$(sed -n '/== too big/,/== fits/p' "$out")
fit=$(sed -n '/== fits/,$p' "$out")
[ "$(grep -c 'buffers out of memory: .*rank [01]: cannot reserve [0-9]* bytes of shared memory' <<< "$big")" -eq 2 ] ||
  fail "too big: not ADAMPI_ERR_NOMEM, naming the rank and the bytes, on both ranks"
grep -q 'No space left on device' <<< "$big" || fail "too big: the message does not say why"
[ "$(grep -c 'step ok' <<< "$big")" -eq 2 ] || fail "too big: the handle did not step with the caller's buffers"
grep -q '^exit 0' <<< "$big" || fail "too big: the program failed or hung"
[ "$(grep -c 'buffers success' <<< "$fit")" -eq 2 ] || fail "fits: buffers refused"
[ "$(grep -c 'step ok' <<< "$fit")" -eq 2 ] || fail "fits: step failed"
grep -q '^exit 0' <<< "$fit" || fail "fits: the program failed or hung"
[ "$(grep -c 'left in /dev/shm: 0' "$out")" -eq 2 ] || fail "shared-memory objects left in /dev/shm"
echo "shm_full: a full /dev/shm is refused on every rank, nothing leaks, the handle goes on"
