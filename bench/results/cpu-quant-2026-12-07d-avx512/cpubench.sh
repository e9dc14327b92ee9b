#!/bin/bash
# interleaved: llamarun and llama-bench per type, ROUNDS rounds
cd /work/main
for r in $(seq ${ROUNDS:-3}); do
for t in ${TYPES:-Q4_K_M Q8_0 Q6_K Q5_K_M IQ4_XS Q4_1 Q4_0 F16}; do
  ./build-cuda/llamarun bench -m /tmp/m-$t.gguf --pp 512 --tg 64 -r 3 --json > /tmp/cb-lr-$t-$r.json 2>/dev/null
  python3 -c "import json;d=json.load(open('/tmp/cb-lr-$t-$r.json'));print('llamarun $t r$r pp %.1f tg %.1f'%(d['pp']['tok_per_s_median'],d['tg']['tok_per_s_median']))"
  /tmp/llama.cpp-build/bin/llama-bench -m /tmp/m-$t.gguf -t 2 -p 512 -n 64 -r 3 -o jsonl 2>/dev/null > /tmp/cb-lc-$t-$r.jsonl
  python3 -c "import json;ds=[json.loads(l) for l in open('/tmp/cb-lc-$t-$r.jsonl')];print('llama.cpp $t r$r', ' '.join('%s %.1f'%('pp' if d['n_prompt'] else 'tg', d['avg_ts']) for d in ds))"
done; done
