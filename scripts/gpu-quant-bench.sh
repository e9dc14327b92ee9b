#!/usr/bin/env bash
# Quantized weights on the GPU against llama.cpp, on the lent GPU machine, same files and same run:
# llama.cpp's CUDA build from the source tarball carried in .gpurun/llama.cpp.tar.xz (the llama.cpp inside
# the llama-cpp-python 0.3.36 sdist, models/ docs/ tests/ left out), a random Llama-2-7B-shaped F16 GGUF
# (bench/cuda/make_random_gguf.py), its Q8_0 / Q4_K_M / Q6_K quantizations by llama-quantize, then
# llama-bench -fa 1 and `llamarun bench --device cuda` on each file.
# Phases, each well under the machine's 10-minute call limit (/tmp survives while the machine stays warm):
#   start   unpack and build llama.cpp in the background; write the F16 GGUF in the background (with AWQ=1
#           also a random AWQ int4 checkpoint of the same shape, bench/cuda/make_random_awq.py: FILES=awq)
#   tests   the quantized kernels' and models' CUDA tests, compute-sanitizer over the kernel tests, and
#           llamarun_bench_cuda --qgemv (each GEMV alone, staged vs input quantized once); logs in $OUT
#   wait    wait (up to 9 minutes) for both; then llama-quantize the variants (TYPES, default Q8_0 Q4_K_M)
#   bench   the comparison: prints one line per (engine, file, test)
#   ppl     perplexity of a real model's quantized GGUF on the CPU and on the GPU (same binary, same file):
#           the file arrives in pieces .gpp1/ .. .gpp4/ (one per call: the transfer limit), joined in /tmp
# LLAMARUN_BIN: the llamarun binary (default: the one `start` copies from .cudawork/b, scripts/pack-gpu-bins.sh).
# LCPP_PREBUILT=1: no llama.cpp build here; its binaries come built on the development machine
# (scripts/pack-llamacpp-cuda.sh) in three parts, .gpp1/ .. .gpp3/ in three calls, and gguf-py from
# .gpurun/gguf-py.tar.xz.
set -euo pipefail
PHASE=${1:?start|tests|wait|bench|ppl}
W=/tmp/qb
mkdir -p "$W"
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
LB=${LLAMARUN_BIN:-$W/b/llamarun}
for d in .gpp1 .gpp2 .gpp3 .gpp4; do [ -d "$d" ] && mkdir -p "$W/parts" && cp "$d"/* "$W/parts/"; done
LB_DIR="$W/lcpp/build/bin"
# The prebuilt llama.cpp, once every part is here: joined, checked, unpacked; a stand-in libnccl.so.2
# where the machine has none (one GPU: ggml-cuda never calls NCCL, and its symbols bind lazily).
lcpp_unpack() {
  [ -x "$LB_DIR/llama-bench" ] && return 0
  for p in aa ab ac; do [ -s "$W/parts/lcpp-bin.tar.xz.part-$p" ] || return 1; done
  cat "$W/parts/lcpp-bin.tar.xz.part-"a[abc] >"$W/lcpp-bin.tar.xz"
  [ "$(sha256sum "$W/lcpp-bin.tar.xz" | cut -d' ' -f1)" = "$(cat "$W/parts/lcpp-bin.sha256")" ] || {
    echo "lcpp-bin: checksum mismatch"
    return 1
  }
  mkdir -p "$LB_DIR" && tar -xJf "$W/lcpp-bin.tar.xz" -C "$LB_DIR"
  if ! ldconfig -p | grep -q libnccl.so.2 && [ ! -e /usr/local/cuda/lib64/libnccl.so.2 ] && [ ! -e /usr/local/cuda/lib/libnccl.so.2 ]; then
    echo 'void llamarun_nccl_stand_in(void) {}' >"$W/nccl.c" && gcc -shared -fPIC -Wl,-soname,libnccl.so.2 -o "$LB_DIR/libnccl.so.2" "$W/nccl.c"
  fi
  echo rc=0 >"$W/lcpp-build.log"
}
export LD_LIBRARY_PATH="$LB_DIR:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -n "${LCPP_PREBUILT:-}" ] && lcpp_unpack && echo "llama.cpp (prebuilt): unpacked"
case "$PHASE" in
  start)
    if [ -f .cudawork/unpack.sh ]; then bash .cudawork/unpack.sh && rm -rf "$W/b" && cp -r .cudawork/b "$W/b"; fi
    if [ ! -d "$W/lcpp/gguf-py" ] && [ -f .gpurun/gguf-py.tar.xz ]; then
      mkdir -p "$W/lcpp" && tar -xJf .gpurun/gguf-py.tar.xz -C "$W/lcpp"
    elif [ ! -d "$W/lcpp/gguf-py" ]; then
      mkdir -p "$W/lcpp" && tar -xJf .gpurun/llama.cpp.tar.xz -C "$W/lcpp" --strip-components=1
    fi
    if [ -z "${NO_LLAMACPP:-}" ] && [ -z "${LCPP_PREBUILT:-}" ] && [ ! -x "$W/lcpp/build/bin/llama-bench" ] && [ ! -e "$W/lcpp-build.log" ]; then
      setsid nice -n ${LCPP_NICE:-19} bash -c "cd $W/lcpp && cmake -S . -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
        -DCMAKE_BUILD_TYPE=Release >$W/lcpp-build.log 2>&1 && \
        cmake --build build -j ${LCPP_JOBS:-10} --target llama-bench llama-quantize llama-perplexity >>$W/lcpp-build.log 2>&1; \
        echo rc=\$? >>$W/lcpp-build.log" </dev/null >/dev/null 2>&1 &
    fi
    if [ ! -s "$W/7b-f16.gguf" ]; then
      mkdir -p "$W/py/tools" "$W/py/bench/cuda"
      cp tools/hf_to_gguf.py "$W/py/tools/" && cp bench/cuda/make_random_gguf.py "$W/py/bench/cuda/"
      setsid bash -c "until [ -d $W/lcpp/gguf-py ]; do sleep 1; done; \
        PYTHONPATH=$W/lcpp/gguf-py python3 $W/py/bench/cuda/make_random_gguf.py $W/7b-f16.tmp >$W/gen.log 2>&1 \
        && mv $W/7b-f16.tmp $W/7b-f16.gguf; echo rc=\$? >>$W/gen.log" </dev/null >/dev/null 2>&1 &
    fi
    if [ -n "${AWQ:-}" ] && [ ! -s "$W/awq7b/config.json" ]; then  # a random AWQ int4 checkpoint, 7B shape
      mkdir -p "$W/py/bench/cuda" "$W/py/tests/fixtures/meta"
      cp bench/cuda/make_random_awq.py "$W/py/bench/cuda/"
      cp tests/fixtures/meta/tokenizer.model "$W/py/tests/fixtures/meta/"
      setsid bash -c "python3 $W/py/bench/cuda/make_random_awq.py $W/awq7b.tmp >$W/awq.log 2>&1 \
        && rm -rf $W/awq7b && mv $W/awq7b.tmp $W/awq7b; echo rc=\$? >>$W/awq.log" </dev/null >/dev/null 2>&1 &
    fi
    echo started
    ;;
  tests)
    T="$W/b/tests/llamarun_cuda_tests"
    F='Types/QuantKernel*:QuantKernels*:*KQuant*:*Gguf*:*Quantized*:Fixtures/CudaHfInt4*:*ConvertToActivationType*:*Fp8*'
    "$T" --gtest_filter="$F" >"$OUT/cuda-quant-tests.log" 2>&1 && echo "tests: passed" || echo "tests: FAILED"
    grep -E "^\[  (PASSED|FAILED) " "$OUT/cuda-quant-tests.log" | head -20
    if [ -z "${NO_SANITIZER:-}" ]; then
      timeout "${SAN_TIMEOUT:-150}" compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --gtest_filter='Types/QuantKernel*:QuantKernels*:CudaFp8.*:Dtypes/CudaFp8Gemv.*' \
        >"$OUT/compute-sanitizer-quant.log" 2>&1; echo "memcheck rc=$?"
      tail -2 "$OUT/compute-sanitizer-quant.log"
    fi
    "$W/b/bench/cuda/llamarun_bench_cuda" --qgemv --json "$OUT/qgemv.json" >"$OUT/qgemv.txt" 2>&1
    cat "$OUT/qgemv.txt"
    ;;
  wait)
    # The F16 file; llama.cpp's build too unless NO_LLAMACPP (then llamarun's own quantizer, whose blocks are
    # byte-identical to llama.cpp's, makes the variants).
    for _ in $(seq 540); do
      grep -q '^rc=' "$W/gen.log" 2>/dev/null && { [ -n "${NO_LLAMACPP:-}" ] || [ -n "${LCPP_PREBUILT:-}" ] ||
        grep -q '^rc=' "$W/lcpp-build.log" 2>/dev/null; } && break
      sleep 1
    done
    tail -2 "$W/lcpp-build.log" || true
    tail -2 "$W/gen.log"
    Q="$W/lcpp/build/bin/llama-quantize"
    for t in ${TYPES:-Q8_0 Q4_K_M}; do
      [ -s "$W/7b-$t.gguf" ] && continue
      if [ -x "$Q" ]; then
        "$Q" "$W/7b-f16.gguf" "$W/7b-$t.gguf" "$t" 8 >"$W/quant-$t.log" 2>&1 &
      else
        "$LB" quantize "$W/7b-f16.gguf" "$W/7b-$t.gguf" "$t" --quiet >"$W/quant-$t.log" 2>&1 &
      fi
    done
    wait
    ls -la "$W"/*.gguf
    ;;
  bench)
    # LR_VARIANTS: llamarun's option sets, separated by '|' (an empty set: the default, weights kept quantized
    # since 2026-12-07, as --gpu-quant; --gpu-dequant the dequantized load; bash's read drops a trailing empty
    # field, so put an empty set first). Results: $OUT/lr-FILE-N-TAG.json,
    # TAG naming the call (BENCH_TAG, default the time), so that later calls do not overwrite them.
    B="$W/lcpp/build/bin/llama-bench"
    nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
    IFS='|' read -r -a VARS <<<"${LR_VARIANTS:---gpu-quant|--gpu-quant --gpu-quant-staged|--gpu-quant --gpu-quant-no-pdl}"
    for f in ${FILES:-f16 Q8_0 Q4_K_M Q6_K}; do
      m="$W/7b-$f.gguf"
      [ "$f" = awq ] && m="$W/awq7b"  # AWQ=1 at start: the random AWQ checkpoint (llamarun only)
      [ -s "$m" ] || [ -s "$m/config.json" ] || continue
      i=0
      for v in "${VARS[@]}"; do
        i=$((i + 1))
        j="$OUT/lr-$f-$i-${BENCH_TAG:-$(date +%H%M%S)}.json"
        # shellcheck disable=SC2086
        if "$LB" bench -m "$m" --device cuda $v --pp 512 --tg 128 -r "${REPS:-5}" --json >"$j" 2>"$W/lr-$f-$i.err"; then
          python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('llamarun', sys.argv[2], repr(sys.argv[3]), \
            'pp512 %.0f tg128 %.1f mem %.2f GB' % (d['pp']['tok_per_s_median'], d['tg']['tok_per_s_median'], \
            d['memory']['total_bytes'] / 1e9))" "$j" "$f" "$v"
        else
          echo "llamarun $f '$v' failed"; tail -3 "$W/lr-$f-$i.err"
        fi
      done
    done
    # llama.cpp after llamarun: its build may still be running (up to LCPP_WAIT seconds more).
    if [ -z "${SKIP_LLAMACPP:-}" ]; then
      for _ in $(seq "${LCPP_WAIT:-0}"); do grep -q '^rc=' "$W/lcpp-build.log" 2>/dev/null && break; sleep 1; done
      for f in ${FILES:-f16 Q8_0 Q4_K_M Q6_K}; do
        m="$W/7b-$f.gguf"
        [ -s "$m" ] && [ -x "$B" ] || continue
        "$B" -m "$m" -fa 1 -ngl 99 -p 512 -n 128 -r 3 -o jsonl 2>/dev/null | tee "$OUT/llama-bench-$f.jsonl" | \
          python3 -c "import sys,json; [print('llama.cpp', sys.argv[1], 'n_prompt', d['n_prompt'], 'n_gen', d['n_gen'], '%.1f tok/s' % d['avg_ts']) for d in map(json.loads,sys.stdin)]" "$f"
      done
    fi
    ;;
  ppl)
    P="$W/parts"
    [ -s "$W/ppl.gguf" ] || cat "$P"/smolpart.* >"$W/ppl.gguf"
    md5sum "$W/ppl.gguf"
    IFS='|' read -r -a VARS <<<"${PPL_VARIANTS:---device cpu|--device cuda|--device cuda --gpu-quant}"
    i=0
    for v in "${VARS[@]}"; do
      i=$((i + 1))
      echo "== perplexity $v"
      # shellcheck disable=SC2086
      "$LB" perplexity -m "$W/ppl.gguf" -f "$P/GPL-3" --chunks "${CHUNKS:-8}" $v --json 2>"$W/ppl-$i.err" | tail -1 | tee "$OUT/ppl-$i.json" || tail -3 "$W/ppl-$i.err"
    done
    ;;
esac
