#!/usr/bin/env bash
# Call 2 (carry .gpux2: the default model's second part): a second round of fresh servers, fp16 and FP8 +
# FP8 KV with the fused activation quantization (both warmed up), with the binaries call1 left under /tmp/cw.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
cp .gpux2/part-* /tmp/cw/ 2>/dev/null
B=/tmp/cw/b
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SKIP_TESTS=1 BUILD_DIR=$B OUT=$OUT ROUND=${ROUND:-r2} CONFIGS="${CONFIGS:-\"f16-warm|--warmup\" \"fp8kv8-fused-warm|--quantize fp8 --kv-cache-dtype fp8 --warmup --gpu-fp8-fused\"}" \
  bash scripts/gpu-serve-fp8-compare.sh
