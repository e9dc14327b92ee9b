#!/usr/bin/env bash
# `llamarun quantize HF_DIR OUT TYPE` checked with independent readers: a random Llama model with SmolLM2's
# tokenizer written as a sharded float16 Hugging Face directory by the `safetensors` package
# (tools/make_hf_test_model.py) is quantized to Q8_0 and Q4_K_M, and tools/check_hf_quantized_gguf.py reads
# the files with the `gguf` package: llama.cpp's tensor names, llama-quantize's types, values within each
# type's error after convert_hf_to_gguf's Q/K permutation, the llama.* metadata, and the vocabulary against
# gguf's SpecialVocab and (when the default model is present) the vocabulary llama.cpp's converter wrote
# into the default model. Quantizing the directory must also give the same bytes as `llamarun convert`
# to an F16 GGUF followed by `llamarun quantize` of that file.
# Installs gguf, numpy and safetensors into a virtual environment on first use
# ($LLAMARUN_GGUF_VENV, default /tmp/llamarun-venv-gguf).
# Usage: scripts/test-quantize-hf.sh [path/to/llamarun]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
VENV=${LLAMARUN_GGUF_VENV:-/tmp/llamarun-venv-gguf}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import gguf, numpy, safetensors" 2>/dev/null; then
  echo "test-quantize-hf: preparing $VENV (gguf, numpy, safetensors)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "gguf>=0.17" numpy safetensors
fi
PY="$VENV/bin/python"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ref=()
tmpl=()
if [ -f "$MODEL" ]; then
  ref=(--reference "$MODEL")
  tmpl=(--chat-template-from "$MODEL")
else
  echo "test-quantize-hf: $MODEL not present; the vocabulary is checked against SpecialVocab only"
fi
"$PY" tools/make_hf_test_model.py "$TMP/hf" "${tmpl[@]}"
for scheme in Q8_0 Q4_K_M; do
  "$BIN" quantize "$TMP/hf" "$TMP/$scheme.gguf" "$scheme" --quiet
  "$PY" tools/check_hf_quantized_gguf.py "$TMP/hf" "$TMP/$scheme.gguf" "$scheme" "${ref[@]}"
done
"$BIN" convert "$TMP/hf" "$TMP/f16.gguf"
"$PY" tools/check_hf_quantized_gguf.py "$TMP/hf" "$TMP/f16.gguf" F16 "${ref[@]}"
"$BIN" quantize "$TMP/f16.gguf" "$TMP/two-step.gguf" Q4_K_M --quiet
cmp "$TMP/Q4_K_M.gguf" "$TMP/two-step.gguf"
echo "test-quantize-hf: ok"
