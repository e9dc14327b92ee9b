#!/bin/sh
# Converts golden models to GGUF fixtures (see tests/fixtures/golden/README.md). Run after tools/make_golden.py.
# Usage: tools/make_gguf_fixtures.sh [python]   (python defaults to python3; needs gguf, torch, transformers)
set -e
PY=${1:-python3}
cd "$(dirname "$0")/.."
G=tests/fixtures/golden
rm -f $G/*/model-*.gguf $G/*/golden-*.json
$PY tools/hf_to_gguf.py $G/mha_tied --outtype f32                    # same weights: golden.json applies
$PY tools/hf_to_gguf.py $G/linear_rope_bf16 --outtype bf16           # same weights: golden.json logits_f32compute
$PY tools/hf_to_gguf.py $G/llama3_rope --outtype f16 --golden        # rope_freqs tensor
$PY tools/hf_to_gguf.py $G/gqa_untied --outtype q8_0 --golden
$PY tools/hf_to_gguf.py $G/gqa_untied --outtype q4_0 --golden
$PY tools/hf_to_gguf.py $G/gqa_untied --outtype q4_1 --golden
$PY tools/hf_to_gguf.py $G/mqa8_theta500k --outtype q4_1 --embd-type q8_0 --golden  # like the default model
$PY tools/hf_to_gguf.py $G/headdim32_vocab1001 --outtype q8_0 --golden              # key_length/value_length
