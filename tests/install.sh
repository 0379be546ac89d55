#!/usr/bin/env bash
# install.sh - the installed package as a user meets it. `cmake --install` into a scratch prefix,
# which is then moved (so nothing may point back into the build or the first prefix), and with it:
#   1. a consumer project with find_package(adampi) and adampi::adampi (tests/consumer), built and
#      run on 2 ranks;
#   2. the same program built with `pkg-config --cflags --libs adampi`, run on 2 ranks;
#   3. the installed tools run without LD_LIBRARY_PATH (RPATH $ORIGIN/../lib): adampi-replay on a
#      fixture, bitwise equal to the build tree's, and adampi-train for one synthetic epoch.
#
#   install.sh BUILD_DIR FIXTURES_DIR          # installs BUILD_DIR as it is
#   install.sh --static SOURCE_DIR             # builds a static libadampi from scratch first, then 1:
#                                              # the package config must find MPI, HDF5 and OpenMP
set -euo pipefail
usage="usage: install.sh BUILD_DIR FIXTURES_DIR | install.sh --static SOURCE_DIR"
HERE=$(cd "$(dirname "$0")" && pwd)
EXAMPLE=$HERE/example_readme.c
EXPECT='fc1.weight: \|w\| = [0-9.]+, \|g\| = [0-9.]+, view [012], step 10'
consumer_cflags=${ADAMPI_CONSUMER_CFLAGS:-} # the library's own flags, e.g. its sanitizers
unset LD_LIBRARY_PATH
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { mpirun --oversubscribe -np "$1" "${@:2}"; }

STATIC=0
if [ "${1:-}" = "--static" ]; then
  STATIC=1
  SOURCE=${2:?$usage}
  BUILD=$work/static-build
  cmake -S "$SOURCE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DADAMPI_BUILD_TESTS=OFF \
    -DADAMPI_BUILD_BENCHMARKS=OFF -DADAMPI_BUILD_TOOLS=OFF > "$work/static.log" 2>&1 || { cat "$work/static.log"; fail "configure (static)"; }
  cmake --build "$BUILD" -j 2 > "$work/static.log" 2>&1 || { cat "$work/static.log"; fail "build (static)"; }
else
  BUILD=${1:?$usage}
  FIXTURES=${2:?$usage}
fi

cmake --install "$BUILD" --prefix "$work/first" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "cmake --install"; }
mv "$work/first" "$work/prefix"
prefix=$work/prefix
libdir=$(dirname "$(find "$prefix" -name 'libadampi.*' | head -1)")
[ -f "$prefix/include/adampi.h" ] || fail "adampi.h was not installed"

# 1. find_package(adampi)
cmake -S "$HERE/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_SOURCE="$EXAMPLE" \
  -DCMAKE_C_FLAGS="$consumer_cflags" > "$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; fail "configuring a find_package(adampi) project"; }
cmake --build "$work/consumer" > "$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; fail "building a find_package(adampi) project"; }
run 2 "$work/consumer/consumer" > "$work/consumer.txt" 2>&1 || { cat "$work/consumer.txt"; fail "the find_package(adampi) program failed"; }
grep -Eq "$EXPECT" "$work/consumer.txt" || { cat "$work/consumer.txt"; fail "the find_package(adampi) program printed the wrong thing"; }
kind=shared
if [ "$STATIC" = 1 ]; then
  ! ldd "$work/consumer/consumer" | grep -q libadampi || fail "the static consumer loads a shared libadampi"
  grep -q 'HDF5::HDF5' "$libdir"/cmake/adampi/adampiTargets.cmake || fail "the static export does not name HDF5::HDF5"
  kind="static (its export names HDF5::HDF5; adampiConfig.cmake found MPI, HDF5 and OpenMP)"
fi
echo "ok: find_package(adampi) against the moved prefix, $kind: $(grep -Eo "$EXPECT" "$work/consumer.txt")"
[ "$STATIC" = 1 ] && exit 0

# 2. pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
flags=$(pkg-config --cflags --libs adampi) || fail "pkg-config does not know adampi"
# shellcheck disable=SC2086
cc -std=c11 $consumer_cflags -o "$work/pc_consumer" "$EXAMPLE" $flags -Wl,-rpath,"$libdir" || fail "building with pkg-config's flags ($flags)"
run 2 "$work/pc_consumer" > "$work/pc.txt" 2>&1 || { cat "$work/pc.txt"; fail "the pkg-config program failed"; }
grep -Eq "$EXPECT" "$work/pc.txt" || { cat "$work/pc.txt"; fail "the pkg-config program printed the wrong thing"; }
echo "ok: pkg-config --cflags --libs adampi: $flags"

# 3. the installed tools, from the moved prefix, without LD_LIBRARY_PATH
replay=$prefix/bin/adampi-replay
[ -x "$replay" ] || fail "adampi-replay was not installed"
found=$(ldd "$replay" | awk '/libadampi/ { print $3 }')
[ -n "$found" ] && [ "$(realpath "$(dirname "$found")")" = "$(realpath "$libdir")" ] || fail "installed adampi-replay resolves libadampi to '$found', not into $libdir"
in=$FIXTURES/adamp_basic.in.h5
run 2 "$replay" "$in" "$work/installed.h5" > "$work/replay.txt" 2>&1 || { cat "$work/replay.txt"; fail "the installed adampi-replay failed"; }
run 2 "$BUILD/bin/adampi-replay" "$in" "$work/built.h5" > /dev/null
h5diff -q "$work/built.h5" "$work/installed.h5" /params /params || fail "installed and built adampi-replay differ"
rpath=$(readelf -d "$replay" | sed -n 's/.*(\(R[A-Z]*PATH\)).*\[\(.*\)\]/\1 \2/p')
echo "ok: installed adampi-replay ($rpath) replays $(basename "$in") on 2 ranks, bitwise the build tree's"
if [ -x "$prefix/bin/adampi-train" ]; then
  run 1 "$prefix/bin/adampi-train" --synthetic --epochs 1 --hidden 16,16 > "$work/train.txt" 2>&1 || { cat "$work/train.txt"; fail "the installed adampi-train failed"; }
  grep -q "done in" "$work/train.txt" || { cat "$work/train.txt"; fail "the installed adampi-train did not finish"; }
  echo "ok: installed adampi-train: $(grep -o 'test loss.*' "$work/train.txt" | tail -1)"
fi
