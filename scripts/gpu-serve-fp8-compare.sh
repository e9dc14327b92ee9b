#!/usr/bin/env bash
# FP8 serving against fp16 in one run on the GPU machine (bench/cuda/runs/2026-12-07g-h100-fp8-kv/): the
# paged-KV CUDA tests, then scripts/gpu-serve-bench.sh at 256 clients (1,024 requests of 128 + 128) for fp16,
# --quantize fp8, --kv-cache-dtype fp8 and both, one server each. BUILD_DIR: the binaries (default
# .cudawork/b, unpacked from scripts/pack-gpu-bins.sh's .cudawork); ROUND names the files (default r1);
# SKIP_TESTS=1 skips the tests; CONFIGS: the servers to compare, each "tag|server options|max batch tokens"
# (an empty max batch tokens: the server's default, 2048 on a GPU).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ -f .cudawork/unpack.sh ] && [ ! -x .cudawork/b/llamarun ] && bash .cudawork/unpack.sh >/dev/null 2>&1
B=${BUILD_DIR:-.cudawork/b}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then
  "$B/tests/llamarun_cuda_tests" --gtest_filter='*CudaPaged*:*Fp8KvCache*' >"$OUT/kv8-tests.log" 2>&1
  echo "tests rc=$?"
  grep -E "^\[  (PASSED|FAILED)|Failure|Expected|actual|Which is" "$OUT/kv8-tests.log" | head -20
fi
default='"fp8kv8|--quantize fp8 --kv-cache-dtype fp8" "f16|" "fp8|--quantize fp8" "kv8|--kv-cache-dtype fp8"'
eval "configs=(${CONFIGS:-$default})"
for cfg in "${configs[@]}"; do
  IFS='|' read -r tag args mbt <<<"$cfg"
  BUILD_DIR=$B OUT=$OUT TAG=$tag-${ROUND:-r1}- SERVE_ARGS="$args" MAX_BATCH_TOKENS="$mbt" ONLY_C256=1 \
    SKIP_PREFIX=1 SKIP_PEERS=1 \
    timeout 100 bash scripts/gpu-serve-bench.sh 2>&1 | grep -E "ok,|engine per step|exited" | sed "s/^/$tag: /"
done
