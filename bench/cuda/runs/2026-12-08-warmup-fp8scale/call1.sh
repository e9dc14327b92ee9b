#!/usr/bin/env bash
# Call 1 on the GPU machine (carry .cudawork and .gpux1: the first part of the default model): the binaries kept under /tmp/cw for later calls,
# the new tests, then fresh servers (one per configuration) at 256 clients: fp16 with and without --warmup,
# FP8 + FP8 KV (warmed up) with and without --gpu-fp8-fused.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT" /tmp/cw
bash .cudawork/unpack.sh >/dev/null 2>&1 && cp -r .cudawork/b /tmp/cw/
cp .gpux1/part-* /tmp/cw/ 2>/dev/null  # the default model travels in three parts (call1-3)
B=/tmp/cw/b
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cat $B/COMMIT
timeout 200 $B/tests/llamarun_cuda_tests \
  --gtest_filter='CudaFp8.*:*WarmUp*:*GraphReplay*:*Fp8Weights*:*FastDecodePath*:*Fp8KvCache*' >"$OUT/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED)|Failure|Expected|actual|Which is|FAILED  \]" "$OUT/tests.log" | head -30
SKIP_TESTS=1 BUILD_DIR=$B OUT=$OUT ROUND=r1 CONFIGS="${CONFIGS:-\"f16|\" \"f16-warm|--warmup\" \"fp8kv8-warm|--quantize fp8 --kv-cache-dtype fp8 --warmup\" \"fp8kv8-fused-warm|--quantize fp8 --kv-cache-dtype fp8 --warmup --gpu-fp8-fused\"}" \
  bash scripts/gpu-serve-fp8-compare.sh
grep -h '"ready"' "$OUT"/serve-*summary.txt | sed 's/.*"warmup_s":\([0-9.]*\).*/warmup_s \1/' | head
