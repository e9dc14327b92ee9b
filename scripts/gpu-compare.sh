#!/usr/bin/env bash
# One GPU-machine call that checks this tree and measures it against a baseline tree on the same machine:
#   1. builds the baseline's `llamarun` (CUDA, sm_90a) in the background;
#   2. runs this tree's CUDA tests (prebuilt: PREBUILT=1 BUILD_DIR=.cudawork/b, see scripts/pack-gpu-bins.sh;
#      else builds them here);
#   3. `llamarun bench --device cuda --random-weights llama2-7b` (pp512 and tg128 at depth 0, ROUNDS times; at depth
#      512 once), baseline and this tree alternately;
#   4. the serving benchmark (scripts/gpu-serve-bench.sh, QUICK, no peers) for both binaries.
# Usage: scripts/gpu-compare.sh BASE_SRC_DIR [ROUNDS]     results in $OUT (few files: the tool returns 8)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
BASE_SRC="$(cd "$1" && pwd)"
ROUNDS="${2:-2}"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
log="$OUT/compare.txt"
: >"$log"
for d in /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } >>"$log" 2>&1

# 1. the baseline's binary (its own tree and build options; tests and benches off)
(
  cmake -S "$BASE_SRC" -B /tmp/cmp-base -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMARUN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMARUN_TESTS=OFF -DLLAMARUN_BENCH=OFF >/tmp/cmp-base.log 2>&1 &&
    cmake --build /tmp/cmp-base -j10 --target llamarun >>/tmp/cmp-base.log 2>&1
  echo $? >/tmp/cmp-base.done
) </dev/null &

# 2. this tree's binaries and CUDA tests
if [ "${PREBUILT:-0}" != 1 ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMARUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    >"$OUT/build.log" 2>&1 && cmake --build "$BUILD_DIR" -j6 --target llamarun llamarun_cuda_tests >>"$OUT/build.log" 2>&1 ||
    { echo "build failed" >>"$log"; tail -30 "$OUT/build.log" >>"$log"; }
fi
echo "== CUDA tests ($(cat "$BUILD_DIR/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null))" >>"$log"
timeout 300 "$BUILD_DIR/tests/llamarun_cuda_tests" --gtest_brief=1 >"$OUT/cuda-tests.log" 2>&1
echo "cuda tests rc=$?" >>"$log"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran|FAILED" "$OUT/cuda-tests.log" | head -20 >>"$log"

# 3. single stream through `llamarun bench` (the engine), alternating
for _ in $(seq 1 600); do [ -f /tmp/cmp-base.done ] && break; sleep 1; done
echo "baseline build rc=$(cat /tmp/cmp-base.done 2>/dev/null || echo timeout)" >>"$log"
bench_one() {  # bench_one ROUND WHICH DEPTH
  local bin="$BUILD_DIR/llamarun"
  [ "$2" = base ] && bin=/tmp/cmp-base/llamarun
  local j
  j=$(timeout 120 "$bin" bench --device cuda --random-weights llama2-7b --pp 512 --tg 128 --depth "$3" -r 3 --json \
    2>>"$OUT/bench-stderr.log")
  echo "$j" >>"$OUT/bench.jsonl"
  python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(f\"round $1 $2 depth $3: pp512 {j['pp']['tok_per_s_median']:.0f} tok/s, tg128 {j['tg']['tok_per_s_median']:.1f} tok/s\")" \
    "$j" >>"$log" 2>&1 || echo "round $1 $2 depth $3: failed" >>"$log"
}
for r in $(seq "$ROUNDS"); do
  for which in base new; do bench_one "$r" "$which" 0; done
done
for which in base new; do bench_one 1 "$which" 512; done
if grep -q "new depth 0: failed" "$log"; then  # the kernels' own bench, to have this tree's numbers anyway
  timeout 90 "$BUILD_DIR/bench/cuda/llamarun_bench_cuda" --pp 512 --tg 128 --no-parts 2>&1 | grep -E "^(pp|tg)" >>"$log"
  tail -5 "$OUT/bench-stderr.log" >>"$log"
fi

# 4. serving, 64 and 256 clients, 128/128 streaming (QUICK: 128 / 512 requests), both binaries
if [ "${SKIP_SERVE:-0}" != 1 ]; then
  for which in new base; do
    b="$BUILD_DIR"
    [ $which = base ] && b=/tmp/cmp-base
    echo "== serving: $which" >>"$log"
    OUT=/tmp/cmp-serve-$which QUICK=1 SKIP_PEERS=1 SKIP_PREFIX=1 BUILD_DIR="$b" timeout 150 bash scripts/gpu-serve-bench.sh \
      >/dev/null 2>&1
    grep -E "serve-c(64|256)|host overhead" /tmp/cmp-serve-$which/serve-summary.txt >>"$log" 2>/dev/null
  done
fi
cat "$log"
