#!/bin/bash
# interleaved: llamarun and llama-bench on the 1B-shape files (real k-quant matrices), ROUNDS rounds
cd /work/main
for r in $(seq ${ROUNDS:-2}); do
for f in ${FILES:-1b-q4km 1b-q6k}; do
  ./build-cuda/llamarun bench -m /tmp/$f.gguf --pp 512 --tg 64 -r 3 --json > /tmp/cb-lr-$f-$r.json 2>/dev/null
  python3 -c "import json;d=json.load(open('/tmp/cb-lr-$f-$r.json'));print('llamarun $f r$r pp %.1f tg %.1f read bw %.1f%%'%(d['pp']['tok_per_s_median'],d['tg']['tok_per_s_median'],d['tg']['pct_of_read_bandwidth']))"
  /tmp/llama.cpp-build/bin/llama-bench -m /tmp/$f.gguf -t 2 -p 512 -n 64 -r 3 -o jsonl 2>/dev/null > /tmp/cb-lc-$f-$r.jsonl
  python3 -c "import json;ds=[json.loads(l) for l in open('/tmp/cb-lc-$f-$r.jsonl')];print('llama.cpp $f r$r', ' '.join('%s %.1f'%('pp' if d['n_prompt'] else 'tg', d['avg_ts']) for d in ds))"
done; done
