#!/usr/bin/env bash
# The perplexity fixture: llama.cpp's llama-perplexity on the default model and /usr/share/common-licenses/GPL-3
# (on every Debian machine), with llama-perplexity's default context of 512 and the first 6 windows (1530 scored tokens). llama.cpp is the one vendored in the
# PyPI sdist of llama-cpp-python 0.3.36, built for this machine with
#   cmake -B /tmp/llama.cpp-build -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
#         -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/llama.cpp-build --target llama-perplexity
# (nothing of it is committed). Writes tests/fixtures/quant/perplexity_reference.json with the value, the
# settings and the exact command.
# Usage: tools/make_perplexity_reference.sh [path/to/llama-perplexity]
set -euo pipefail
cd "$(dirname "$0")/.."
PPL_BIN=${1:-/tmp/llama.cpp-build/bin/llama-perplexity}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
TEXT=/usr/share/common-licenses/GPL-3
CTX=512
CHUNKS=6
cmd=("$PPL_BIN" -m "$MODEL" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t 2)
log=$("${cmd[@]}" 2>&1)
ppl=$(printf '%s\n' "$log" | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
if [ -z "$ppl" ]; then printf '%s\n' "$log" | tail -20; echo "no 'Final estimate' line"; exit 1; fi
cat > tests/fixtures/quant/perplexity_reference.json <<JSON
{
 "ppl": $ppl,
 "ctx": $CTX,
 "chunks": $CHUNKS,
 "model": "$MODEL",
 "text": "$TEXT",
 "made_by": "llama-perplexity, llama.cpp vendored in llama-cpp-python 0.3.36 (tools/make_perplexity_reference.sh)",
 "command": "llama-perplexity -m $MODEL -f $TEXT -c $CTX --chunks $CHUNKS -t 2"
}
JSON
echo "llama-perplexity: PPL = $ppl"
