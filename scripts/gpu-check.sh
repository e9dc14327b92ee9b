#!/usr/bin/env bash
# GPU check for the CUDA backend, meant for a machine with an NVIDIA GPU (H100/H200), in < 10 minutes:
#   1. configure + build (Ninja, LLAMARUN_CUDA=ON) the CUDA tests and the CUDA bench
#   2. ctest -L cuda
#   3. compute-sanitizer memcheck (and racecheck on the attention kernels) on a subset of the tests
#   4. llamarun_bench_cuda (random-weight llama2-7b fp16) -> bench_cuda.json
#   5. the peers: transformers generate() and a CUDA-graph PyTorch decode loop -> peers.jsonl
# Results go to $OUT (or ./gpu-results). Every step runs even if an earlier one fails; the exit status
# is non-zero if any failed. Environment:
#   BUILD_DIR   build directory (default build-gpu)
#   PREBUILT=1  skip configure/build and use the binaries already in BUILD_DIR (e.g. built elsewhere)
#   PREBUILT_DIR  used when configuring here fails (the lent GPU machines lack libpcre2-dev, nlohmann-json
#               and gtest): binaries built on the dev machine and carried along (default build-cuda)
# On the lent GPU machines (no build dependencies there), build on the dev machine first:
#   cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMARUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a
#   cmake --build build-cuda -j2 --target llamarun_cuda_tests llamarun_bench_cuda
# then run this script there with build-cuda carried: PREBUILT=1 BUILD_DIR=build-cuda bash scripts/gpu-check.sh
#   CUDA_ARCHS  CMAKE_CUDA_ARCHITECTURES (default 90a: H100/H200 only, builds fastest)
#   QUICK=1     fewer repetitions, no peers
#   SKIP_TESTS=1  benchmarks only (no tests, golden or compute-sanitizer)
#   ONLY_TESTS=1  tests, golden and compute-sanitizer only (no benchmarks or peers)
#   ABLATIONS   '|'-separated flag sets for the decode ablations; "none" skips them
#   LLAMARUN_MODEL  the default model's GGUF (for CudaDefaultModel.*), if not in models/
set -uo pipefail
cd "$(dirname "$0")/.."
# Build dependencies carried as .debs (scripts/fetch-gpu-deps.sh), unpacked into .deps/prefix.
source scripts/gpu-env.sh
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
CUDA_ARCHS="${CUDA_ARCHS:-90a}"
REPS=5
[ "${QUICK:-0}" = 1 ] && REPS=2
status=0
summary="$OUT/summary.txt"
: >"$summary"
log() { echo "$*" >>"$summary"; }
step() {  # step NAME LOGFILE CMD...: runs CMD, output to LOGFILE, records pass/fail and time
  local name=$1 logf=$2
  shift 2
  local t0=$SECONDS
  "$@" >>"$logf" 2>&1
  local rc=$?
  log "$(printf '%-22s rc=%-3s %4ss  (%s)' "$name" "$rc" "$((SECONDS - t0))" "$(basename "$logf")")"
  [ $rc -ne 0 ] && status=1
  return $rc
}

{
  date -u
  if [ -f "$BUILD_DIR/COMMIT" ]; then echo "binaries built from $(cat "$BUILD_DIR/COMMIT")"; else
    git rev-parse --short HEAD 2>/dev/null || true; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 || true
  nvcc --version 2>&1 | tail -1 || true
} >>"$summary"

# libcudart / libcublas(Lt) .so.13 for binaries built elsewhere: the toolkit's, else the pip-installed ones.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
if [ "${PREBUILT:-0}" != 1 ]; then
  if step configure "$OUT/build.log" cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMARUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS"; then
    step build "$OUT/build.log" cmake --build "$BUILD_DIR" -j"$(nproc)" --target llamarun_cuda_tests llamarun_bench_cuda \
      llamarun
  elif [ -x "${PREBUILT_DIR:-build-cuda}/tests/llamarun_cuda_tests" ]; then
    log "configure failed here (see build.log); using the prebuilt binaries in ${PREBUILT_DIR:-build-cuda}"
    BUILD_DIR="${PREBUILT_DIR:-build-cuda}"
    PREBUILT=1
  fi
fi
TESTS="$BUILD_DIR/tests/llamarun_cuda_tests"
BENCH="$BUILD_DIR/bench/cuda/llamarun_bench_cuda"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
if [ -f "$BUILD_DIR/CTestTestfile.cmake" ] && [ "${PREBUILT:-0}" != 1 ]; then
  step ctest-cuda "$OUT/tests.log" ctest --test-dir "$BUILD_DIR" -L cuda --output-on-failure --timeout 300
else
  step cuda-tests "$OUT/tests.log" "$TESTS"
fi

# GPU vs transformers / CPU on the golden fixtures, with its per-fixture error and drift lines.
step golden "$OUT/golden.log" "$TESTS" --gtest_filter='Dtypes/CudaGolden.*'

if command -v compute-sanitizer >/dev/null; then
  step memcheck "$OUT/sanitizer.log" compute-sanitizer --tool memcheck --error-exitcode 9 "$TESTS" \
    --gtest_filter='Dtypes/CudaKernel.*/f16:Dtypes/CudaLlamaTest.HfNames*/bf16:Dtypes/CudaLlamaTest.Graph*/f16:CudaSampling.*:Dtypes/CudaPaged.*/f16:CudaPagedArgmax.*:CudaServing.Paged*'
  step racecheck "$OUT/sanitizer.log" compute-sanitizer --tool racecheck --error-exitcode 9 "$TESTS" \
    --gtest_filter='Dtypes/CudaKernel.PrefillAttention*/f16:Dtypes/CudaLlamaTest.MhaHeadDim128*/f16:Dtypes/CudaPaged.PagedAttentionVarlen*/f16'
else
  log "compute-sanitizer not found: skipped"
fi
fi

[ "${ONLY_TESTS:-0}" = 1 ] && { cat "$summary"; exit $status; }
step bench "$OUT/bench.log" "$BENCH" --preset llama2-7b --dtype f16 --reps "$REPS" --json "$OUT/bench_cuda.json"
step bench-paged-attn "$OUT/bench.log" "$BENCH" --paged-attn --reps 20

# The CLI's GPU path (llamarun bench --device cuda).
if [ -x "$BUILD_DIR/llamarun" ]; then
  step cli-bench-cuda "$OUT/bench_ablation.log" "$BUILD_DIR/llamarun" bench --device cuda --random-weights llama2-7b \
    --dtype f16 --pp 512 --tg 64 --reps 2
fi

# Ablations of the decode step (what the batch-1 fast path and graph replay are worth).
ABLATIONS=${ABLATIONS:-"--no-fast|--no-graph|--no-fast --no-graph"}
ablation_list=()
[ "$ABLATIONS" != none ] && IFS='|' read -r -a ablation_list <<<"$ABLATIONS"
for flags in "${ablation_list[@]}"; do
  echo "== $flags" >>"$OUT/bench_ablation.log"
  # shellcheck disable=SC2086
  step "bench $flags" "$OUT/bench_ablation.log" "$BENCH" --preset llama2-7b --dtype f16 --reps 3 --pp 64 --tg 64 \
    --depths 0,512 --no-parts $flags
done

if [ "${QUICK:-0}" != 1 ]; then
  : >"$OUT/peers.jsonl"
  step peer-torch-graph "$OUT/peers.jsonl" python3 bench/peers/torch_graph_decode.py --reps 3
  step peer-hf-generate "$OUT/peers.jsonl" python3 bench/peers/hf_generate.py --reps 2
fi

log "---- bench ----"
grep -E "copy|GEMM|pp|tg|memory|model|decode:|paged" "$OUT/bench.log" >>"$summary" 2>/dev/null
log "---- golden (GPU vs transformers / CPU) ----"
grep -E "\[ golden \]|FAILED|Failure" "$OUT/golden.log" | head -60 >>"$summary" 2>/dev/null
grep -E "\[ (serving|default) \]" "$OUT/tests.log" | head -40 >>"$summary" 2>/dev/null
log "---- tests ----"
grep -E "PASSED|FAILED|tests passed|tests failed" "$OUT/tests.log" | tail -20 >>"$summary" 2>/dev/null
log "skipped tests (should be 0 on a GPU machine): $(grep -c 'SKIPPED \]' "$OUT/tests.log" 2>/dev/null)"
log "---- ablations (tg64 @ d0) ----"
grep -E "^==|tg64|^pp|^model" "$OUT/bench_ablation.log" >>"$summary" 2>/dev/null
log "---- peers ----"
cut -c1-400 "$OUT/peers.jsonl" >>"$summary" 2>/dev/null
cat "$summary"
exit $status
