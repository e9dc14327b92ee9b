#!/usr/bin/env bash
# A/B of llamarun_bench_cuda on a GPU machine: a baseline source tree (e.g. `git archive <commit>` of main,
# unpacked into BASE_DIR) against this tree, built on the same machine and run alternately, so the two
# numbers share the machine (tg varies by about 1% from machine to machine).
#
#   scripts/gpu-ab.sh build BASE_DIR     both builds (the baseline's in the background: /tmp/ab-base.done)
#   scripts/gpu-ab.sh bench ROUNDS ARGS  ROUNDS x (baseline, this tree) of `llamarun_bench_cuda ARGS`
#
# Build folders: /tmp/ab-base and /tmp/ab-new (they last while the machine stays warm). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
configure() {  # configure SRC BUILD
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMARUN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DLLAMARUN_BENCH=ON -DLLAMARUN_TESTS=ON >"$2.configure.log" 2>&1
}
case "${1:-}" in
  build)
    base="$(cd "$2" && pwd)"
    mkdir -p /tmp/ab-base /tmp/ab-new
    rm -f /tmp/ab-base.done
    (
      cd "$base" && source scripts/gpu-env.sh 2>/dev/null
      configure "$base" /tmp/ab-base && cmake --build /tmp/ab-base -j6 --target llamarun_bench_cuda >/tmp/ab-base.log 2>&1
      echo $? >/tmp/ab-base.done
    ) </dev/null &
    configure . /tmp/ab-new || { cat /tmp/ab-new.configure.log; exit 1; }
    cmake --build /tmp/ab-new -j12 --target llamarun_cuda_tests llamarun_bench_cuda >"$OUT/build-new.log" 2>&1
    rc=$?
    grep -E "warning|error" "$OUT/build-new.log" | grep -v "^ninja" | head -40
    echo "build (this tree) rc=$rc"
    exit $rc
    ;;
  bench)
    rounds=$2
    shift 2
    for r in $(seq "$rounds"); do
      for which in base new; do
        echo "== round $r: $which" | tee -a "$OUT/bench-ab.log"
        "/tmp/ab-$which/bench/cuda/llamarun_bench_cuda" "$@" 2>&1 | tee -a "$OUT/bench-ab.log" |
          grep -E "^(pp|tg|decode batch)" || echo "($which failed)"
      done
    done
    ;;
  *)
    echo "usage: scripts/gpu-ab.sh build BASE_DIR | bench ROUNDS ARGS..." >&2
    exit 2
    ;;
esac
