set -u
export LD_LIBRARY_PATH=/tmp/llama.cpp-build/bin OMP_WAIT_POLICY=passive
LB=/tmp/llama.cpp-build/bin/llama-bench; LR=/tmp/llamarun-cmp; O=/tmp/cmp2
cd /work/main
if [ ! -s /tmp/q1b/1b-f16.gguf ]; then
  PYTHONPATH=/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py /usr/bin/env python3 bench/cuda/make_random_gguf.py /tmp/q1b/1b-f16.tmp --shape llama-1b > $O/gen.log 2>&1 && mv /tmp/q1b/1b-f16.tmp /tmp/q1b/1b-f16.gguf
fi
for t in Q4_K_M Q6_K; do
  [ -s /tmp/q1b/1b-$t.gguf ] || /tmp/llama.cpp-build/bin/llama-quantize /tmp/q1b/1b-f16.gguf /tmp/q1b/1b-$t.gguf $t 2 > $O/quant-$t.log 2>&1
done
run() {  # name file pp tg
  date -u +%H:%M:%S > $O/$1.time; cat /proc/loadavg >> $O/$1.time
  $LB -m $2 -p $3 -n $4 -r 3 -t 2 -o jsonl > $O/$1.lcpp.jsonl 2>$O/$1.lcpp.err
  $LR bench -m $2 --pp $3 --tg $4 -r 3 -t 2 --json > $O/$1.lr.json 2>$O/$1.lr.err
  cat /proc/loadavg >> $O/$1.time
}
for t in Q4_K_M Q6_K; do run 1b-$t /tmp/q1b/1b-$t.gguf 512 64; done
for t in Q4_K_M Q5_K_M Q6_K Q8_0 IQ4_XS Q4_0; do run smol-$t /tmp/quant-files/SmolLM2-135M-Instruct.$t.gguf 512 64; done
echo done > $O/done
