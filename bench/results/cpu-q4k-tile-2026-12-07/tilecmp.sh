#!/bin/bash
# 1B-shape Q4_K_M prefill: llamarun without the Q4_K tile (lr-rows), with it (lr-tile), llama-bench; 3 rounds
for r in 1 2 3; do
  for b in rows tile; do
    /tmp/lr-$b bench -m /tmp/1b-q4km.gguf --pp 128 --tg 16 -r 3 -t 2 2>&1 | grep -E "^pp|^tg" | sed "s/^/llamarun-$b r$r /"
  done
  /tmp/llama.cpp-build/bin/llama-bench -m /tmp/1b-q4km.gguf -t 2 -p 128 -n 16 -r 3 2>&1 | grep -E "pp128|tg16" | sed "s/^/llama.cpp r$r /"
done
