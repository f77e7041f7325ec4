#!/usr/bin/env bash
# A build made with -DSOURCERY_WITH_POSTGRES=OFF links no libpq: checks every
# program and shared library in BUILD_DIR, and that a PostgreSQL store is
# refused with a clear error.
#   scripts/check-no-libpq.sh BUILD_DIR
set -euo pipefail
build_dir="${1:?usage: check-no-libpq.sh BUILD_DIR}"
grep -q "define SOURCERY_WITH_POSTGRES 0" "$build_dir/generated/include/sourcery/config.hpp" \
  || { echo "$build_dir was not built with SOURCERY_WITH_POSTGRES=OFF" >&2; exit 1; }
checked=0
for f in "$build_dir"/bin/* "$build_dir"/lib/*.so*; do
  [ -f "$f" ] || continue
  if readelf -d "$f" 2>/dev/null | grep -q 'libpq\.so'; then
    echo "$f links libpq" >&2
    exit 1
  fi
  checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "nothing built in $build_dir" >&2; exit 1; }
# The tool says what this build lacks, with the status of a bad argument.
set +e
out="$("$build_dir/bin/sourcery" streams --store "postgresql:///x" 2>&1)"
status=$?
set -e
[ "$status" -eq 2 ] && grep -q "SOURCERY_WITH_POSTGRES=OFF" <<<"$out" \
  || { echo "the tool did not refuse a PostgreSQL store clearly (status $status): $out" >&2; exit 1; }
echo "no libpq in $checked programs and libraries of $build_dir"
