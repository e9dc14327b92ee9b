#!/usr/bin/env bash
# Runs the whole (CPU) test suite: installs what is missing, builds, runs ctest; then rebuilds
# with AddressSanitizer + UndefinedBehaviorSanitizer and runs the bad-input tests (model files,
# tokenizers, command line) under them, as ../shared/ROBUSTNESS.md asks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
# Spinning OpenMP workers are ruinous on a shared 2-core machine (tests run two at a time).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j"$(nproc)" --timeout 900

if [ "${LLAMARUN_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "test: sanitizer build (ASan + UBSan) of the bad-input tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMARUN_SANITIZE=ON -DLLAMARUN_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$(nproc)" --target llamarun llamarun_tests
  ASAN_OPTIONS=detect_leaks=1:exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87 \
    ctest --test-dir build-asan -L cpu --output-on-failure -j"$(nproc)" --timeout 900 \
      -R 'Gguf|Safetensors|ModelFiles|Config|Tokenizer|Spm|Bpe|CliBadInput|Sampling|StopMatcher|Golden'
fi
