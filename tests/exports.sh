#!/bin/sh
# exports.sh LIBADAMPI HEADER - the shared library exports exactly the functions the header
# declares with ADAMPI_API: none of the header's is missing (a declaration without its definition,
# or one left hidden) and nothing else is exported (an internal function, or a target_clones
# resolver, that a program could link against by accident; src/libadampi.map). A static library
# has no dynamic symbols to check (exit 77, skipped).
set -eu
lib=$1 header=$2
fail() { echo "FAIL: $*"; exit 1; }
case $lib in *.so | *.so.*) ;; *) echo "not a shared library: $lib"; exit 77 ;; esac
[ -r "$header" ] || fail "no header $header"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The name before the first "(" on every line that declares an ADAMPI_API function.
grep -E '^ADAMPI_API .*\(' "$header" | sed -E 's/\(.*//; s/.*[ *]([A-Za-z_][A-Za-z0-9_]*)$/\1/' | sort -u >"$tmp/declared"
nm -D --defined-only "$lib" | awk '{ print $NF }' | sort -u >"$tmp/exported"
n=$(wc -l <"$tmp/declared")
[ "$n" -ge 40 ] || fail "found only $n ADAMPI_API declarations in $header (the pattern no longer fits it)"
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
[ -z "$extra" ] || fail "exported but not declared in $(basename "$header"): $(printf "%s" "$extra" | tr "\n" " ")"
[ -z "$missing" ] || fail "declared in $(basename "$header") but not exported: $(printf "%s" "$missing" | tr "\n" " ")"
echo "libadampi exports the $n functions of $(basename "$header") and nothing else"
