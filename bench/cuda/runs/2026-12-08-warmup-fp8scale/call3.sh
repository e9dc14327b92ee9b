#!/usr/bin/env bash
# Call 3 (carry .gpux3: the default model's last part and GPL-3): the default model put together, and its
# perplexity on the GPU in fp16, FP8 weights (max / 448, the default, and the scale search), FP8 + FP8 KV, and
# on the CPU (same binary), 8 windows of 512 tokens of GPL-3 as in runs/2026-12-06-h200-quant-3.
set -uo pipefail
cd "$(dirname "$0")/../../../.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
B=/tmp/cw/b
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cat /tmp/cw/part-aa /tmp/cw/part-ab .gpux3/part-ac >/tmp/cw/smol.gguf
md5sum /tmp/cw/smol.gguf  # a1231443440b107ff29f02bdb38c9d0a
i=0
while IFS= read -r v; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  $B/llamarun perplexity -m /tmp/cw/smol.gguf -f .gpux3/GPL-3 --chunks 8 --json $v 2>"$OUT/ppl-$i.err" | tail -1 >"$OUT/ppl-$i.json"
  echo "$v: $(cat "$OUT/ppl-$i.json")"
done <<'VARIANTS'
--device cuda
--device cuda --quantize fp8
--device cuda --quantize fp8 --fp8-weight-scale search
--device cuda --quantize fp8 --fp8-weight-scale search --kv-cache-dtype fp8
--device cuda --kv-cache-dtype fp8
--device cpu
VARIANTS
