#!/bin/bash
# 1B-shape Q4_K_M: llamarun bench then llama-bench, 3 rounds interleaved, 2 threads
cd /work/main
for r in 1 2 3; do
  ./build-cuda/llamarun bench -m /tmp/1b-q4km.gguf --pp 128 --tg 32 -r 3 -t 2 2>&1 | tail -3 | sed "s/^/llamarun r$r /"
  /tmp/llama.cpp-build/bin/llama-bench -m /tmp/1b-q4km.gguf -t 2 -p 128 -n 32 -r 3 2>&1 | grep -E "pp128|tg32" | sed "s/^/llama.cpp r$r /"
done
