#!/bin/bash
# Both engines held to AVX2 on the AVX-512 dev VM, interleaved per type, ROUNDS rounds: llamarun with
# LLAMARUN_SIMD=avx2 (its runtime dispatch at the AVX2 level), llama.cpp built from the llama-cpp-python
# 0.3.36 sdist with -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# -DGGML_AVX512=OFF (in /tmp/llama.cpp-avx2). Files: /tmp/m-TYPE.gguf (the default model requantized by
# llama-quantize --allow-requantize) and /tmp/1b-*.gguf (make_random_gguf.py --shape llama-1b, quantized).
cd "$(dirname "$0")/../../.." || exit 1
LB=${LB:-/tmp/llama.cpp-avx2/bin/llama-bench}
OUT=${OUT:-/tmp/avx2level}
mkdir -p "$OUT"
for r in $(seq "${ROUNDS:-1}"); do
  for t in ${TYPES:-m-Q4_K_M m-Q8_0 m-Q6_K m-Q5_K_M m-IQ4_XS m-Q4_1 m-Q4_0 m-F16 m-Q2_K 1b-q4km}; do
    lvl=${LEVEL-avx2}  # LEVEL=native: llamarun's own dispatch (cpubench-avx512.sh)
    env $([ "$lvl" != native ] && echo LLAMARUN_SIMD=$lvl) ./build-cuda/llamarun bench -m /tmp/$t.gguf --pp 512 --tg 64 -r 3 --json >"$OUT/lr-$t-$r.json" 2>/dev/null
    python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('llamarun  %-10s r%s pp %7.1f tg %6.1f'%(sys.argv[2],sys.argv[3],d['pp']['tok_per_s_median'],d['tg']['tok_per_s_median']))" "$OUT/lr-$t-$r.json" "$t" "$r"
    "$LB" -m /tmp/$t.gguf -t 2 -p 512 -n 64 -r 3 -o jsonl 2>/dev/null >"$OUT/lc-$t-$r.jsonl"
    python3 -c "import json,sys;ds=[json.loads(l) for l in open(sys.argv[1])];print('llama.cpp %-10s r%s '%(sys.argv[2],sys.argv[3])+' '.join('%s %7.1f'%('pp' if d['n_prompt'] else 'tg', d['avg_ts']) for d in ds))" "$OUT/lc-$t-$r.jsonl" "$t" "$r"
  done
done
