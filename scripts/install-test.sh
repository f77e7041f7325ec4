#!/usr/bin/env bash
# Sourcery as others get it: installs a build into a fresh prefix, builds
# tests/install (a project outside the tree) against it with
# find_package(Sourcery), runs it, compiles a program with nothing but
# `pkg-config --cflags --libs sourcery`, and builds the Debian package.
#   scripts/install-test.sh [BUILD_DIR]   (default build-release; built first when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-release}"
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  SOURCERY_BUILD_DIR="$build_dir" SOURCERY_BUILD_TYPE=Release SOURCERY_BUILD_TESTS=OFF SOURCERY_BUILD_BENCH=OFF \
    bash scripts/build.sh
fi
work="$(mktemp -d /tmp/sourcery-install.XXXXXX)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake --install "$build_dir" --prefix "$prefix" >/dev/null
echo "installed into $prefix: $(find "$prefix" -type f | wc -l) files"
test -x "$prefix/bin/sourcery"
"$prefix/bin/sourcery" --help >/dev/null

cmake -S tests/install -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/build" -j"$(nproc)" >/dev/null
"$work/build/ledger" "$work/data"
if grep -q "define SOURCERY_WITH_POSTGRES 1" "$prefix/include/sourcery/config.hpp"; then
  test -x "$work/build/node_check" || { echo "a build with PostgreSQL installed no Sourcery::cluster" >&2; exit 1; }
  "$work/build/node_check"
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# shellcheck disable=SC2046 # the flags are words
g++ tests/install/pkgconfig_check.cpp -o "$work/pkgconfig_check" $(pkg-config --cflags --libs sourcery)
LD_LIBRARY_PATH="$prefix/lib" "$work/pkgconfig_check" # a shared build in a prefix of its own

(cd "$build_dir" && cpack -G DEB -B "$work/package" >/dev/null)
deb="$(ls "$work"/package/*.deb)"
echo "package $(basename "$deb"):"
dpkg-deb -f "$deb" Package Version Depends | sed 's/^/  /'
contents="$(dpkg-deb -c "$deb")"
for f in usr/lib/cmake/Sourcery/SourceryConfig.cmake usr/lib/pkgconfig/sourcery.pc usr/bin/sourcery \
         usr/include/sourcery/runtime/application.hpp usr/include/sourcery/version.hpp usr/include/sourcery/config.hpp; do
  grep -q "$f" <<<"$contents" || { echo "the package lacks $f" >&2; exit 1; }
done
echo "install test passed"
