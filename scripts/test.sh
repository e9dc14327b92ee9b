#!/usr/bin/env bash
# Runs the whole (CPU) test suite: installs what is missing, builds, then ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir "${BUILD_DIR:-build}" -L cpu --output-on-failure -j"$(nproc)" --timeout 600
