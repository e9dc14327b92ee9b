#!/usr/bin/env bash
# Reads `llamarun quantize` output with the `gguf` PyPI package (an independent GGUF reader and dequantizer):
# the default model quantized to Q8_0, Q6_K, Q5_K_M, Q4_K_M and Q4_0 must carry the source's metadata,
# tensors, shapes, the mixing rules' types, and values within each type's error bound
# (tools/check_quantized_gguf.py). Installs gguf + numpy into a virtual environment on first use
# ($LLAMARUN_GGUF_VENV, default /tmp/llamarun-venv-gguf).
# Usage: scripts/test-quantize-gguf.sh [path/to/llamarun]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$MODEL" ]; then echo "test-quantize-gguf: $MODEL not present, skipped"; exit 0; fi
VENV=${LLAMARUN_GGUF_VENV:-/tmp/llamarun-venv-gguf}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import gguf, numpy" 2>/dev/null; then
  echo "test-quantize-gguf: creating $VENV (gguf, numpy)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "gguf>=0.17" numpy
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for scheme in Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0; do
  "$BIN" quantize "$MODEL" "$TMP/$scheme.gguf" "$scheme" --quiet
  extra=()
  if [ "$scheme" = Q4_K_M ]; then
    extra=(--expect token_embd.weight=Q8_0 --expect blk.0.ffn_down.weight=Q6_K --expect blk.3.ffn_down.weight=Q4_K
           --expect blk.3.attn_v.weight=Q5_0 --expect blk.29.attn_v.weight=Q8_0)
  fi
  "$VENV/bin/python" tools/check_quantized_gguf.py "$MODEL" "$TMP/$scheme.gguf" "$scheme" "${extra[@]}"
  rm -f "$TMP/$scheme.gguf"
done
echo "test-quantize-gguf: ok"
