#!/bin/bash
# The same files at the AVX-512 level the same day: llamarun's default dispatch against llama.cpp built with
# -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON (/tmp/llama.cpp-build).
cd "$(dirname "$0")/../../.." || exit 1
LB=/tmp/llama.cpp-build/bin/llama-bench OUT=${OUT:-/tmp/avx512level} LEVEL=native exec \
  bash "$(dirname "$0")/cpubench-avx2.sh"
