#!/usr/bin/env bash
# Quick start, part 2: sets up, builds and runs every test.
#   SOURCERY_BUILD_DIR=build-asan SOURCERY_SANITIZERS=address scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd "${SOURCERY_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 -j"$(nproc)"
