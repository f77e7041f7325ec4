#!/usr/bin/env bash
# Quick start, part 1: sets up, builds and runs the main demo on the embedded
# LMDB store in ./sourcery-data (run it again to continue where it stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh bank-demo
exec "${SOURCERY_BUILD_DIR:-build}/bin/bank-demo" --data-dir "${SOURCERY_DATA_DIR:-sourcery-data}" "$@"
