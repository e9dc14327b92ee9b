#!/usr/bin/env bash
# Runs the whole (CPU) test suite: installs what is missing, builds, runs ctest; then rebuilds
# with AddressSanitizer + UndefinedBehaviorSanitizer and runs the bad-input tests (model files,
# tokenizers, command line) under them, as ../shared/ROBUSTNESS.md asks.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI builds with warnings as errors; every C++/CUDA file must be clang-formatted.
export LLAMARUN_CMAKE_ARGS="${LLAMARUN_CMAKE_ARGS:--DLLAMARUN_WERROR=ON}"
bash scripts/setup.sh
bash scripts/check-format.sh
BUILD_DIR=${BUILD_DIR:-build}
# Spinning OpenMP workers are ruinous on a shared 2-core machine (tests run two at a time).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j"$(nproc)" --timeout 900
# The chat page in a real (headless) browser, and the container / Kubernetes / Grafana checks against a
# live server (each installs its Debian packages when missing).
bash scripts/test-browser.sh "$BUILD_DIR/llamarun"
bash scripts/test-deploy.sh "$BUILD_DIR/llamarun"
# Every parser that takes outside input under libFuzzer (ASan + UBSan), 40 s each, two at a time.
FUZZ_JOBS=2 bash scripts/fuzz.sh 40

if [ "${LLAMARUN_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "test: sanitizer build (ASan + UBSan) of the bad-input tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMARUN_SANITIZE=ON -DLLAMARUN_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$(nproc)" --target llamarun llamarun_tests
  ASAN_OPTIONS=detect_leaks=1:exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87 \
    ctest --test-dir build-asan -L cpu --output-on-failure -j"$(nproc)" --timeout 900 \
      -R 'Gguf|Safetensors|ModelFiles|Config|Tokenizer|Spm|Bpe|CliBadInput|Sampling|StopMatcher|Golden|Pth|MetaCheckpoint|LlamaTensor'
fi

# The CUDA build must compile and link here too (there is no GPU in CI: its tests, labelled `cuda`,
# run on a GPU machine through scripts/gpu-check.sh).
if [ "${LLAMARUN_SKIP_CUDA_BUILD:-0}" != 1 ]; then
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "test: compiling and linking the CUDA build (default CMAKE_CUDA_ARCHITECTURES)"
    export PATH="$PATH:/usr/local/cuda/bin"
    cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMARUN_CUDA=ON $LLAMARUN_CMAKE_ARGS >/dev/null
    cmake --build build-cuda -j"$(nproc)" --target llamarun llamarun_cuda_tests llamarun_bench_cuda
    ./build-cuda/llamarun --help >/dev/null
    echo "test: CUDA build compiled and linked"
  else
    echo "test: nvcc not found; CUDA build not compiled"
  fi
fi
