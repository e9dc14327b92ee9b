#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with -fsanitize=fuzzer,address,undefined) in
# build-fuzz/ and runs each for SECONDS (default 60): first every committed regression input
# (fuzz/regressions/<target>/, crashes found earlier) once, then fuzzing from the seed corpus
# (fuzz/corpus/<target>/, copied to build-fuzz/corpus/ so the repository's seeds stay small).
# Prints executions per target; exits non-zero on any crash, leak or sanitizer report (the input
# is saved as build-fuzz/artifacts/<target>-crash-*: add it to fuzz/regressions/<target>/).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (env: FUZZ_JOBS, default 1, parallel targets;
#        FUZZ_RUNS=N stops each target after N executions or SECONDS, whichever comes first)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(fuzz_gguf fuzz_safetensors fuzz_tokenizer_json fuzz_tokenizer_model
                                     fuzz_chat_template fuzz_http fuzz_openai fuzz_pth)
B=${FUZZ_BUILD_DIR:-build-fuzz}
# clang with libFuzzer and the sanitizer runtimes, and clang's OpenMP: Debian packages, installed when missing.
missing=()
for p in clang libclang-rt-14-dev libomp-14-dev; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "fuzz: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)"; exit 2; }
if [ ! -f "$B/build.ninja" ] && [ ! -f "$B/Makefile" ]; then
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  LAUNCH=()
  command -v ccache >/dev/null && LAUNCH=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  CC=clang CXX=clang++ cmake -S . -B "$B" "${GEN[@]}" "${LAUNCH[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLLAMARUN_FUZZ=ON -DLLAMARUN_TESTS=OFF -DLLAMARUN_BENCH=OFF >/dev/null
fi
cmake --build "$B" -j"$(nproc)" --target "${TARGETS[@]}"
mkdir -p "$B/artifacts" "$B/logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
run_one() {
  local t=$1 bin="$B/fuzz/$1" log="$B/logs/$1.log"
  local regs=(fuzz/regressions/"$t"/*)
  if [ -e "${regs[0]}" ]; then
    if ! "$bin" -runs=1 "${regs[@]}" >"$B/logs/$t.regressions.log" 2>&1; then
      echo "fuzz: $t FAILED on a regression input (see $B/logs/$t.regressions.log)"
      return 1
    fi
  fi
  mkdir -p "$B/corpus/$t"
  cp -n fuzz/corpus/"$t"/* "$B/corpus/$t/" 2>/dev/null || true
  local rc=0 runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
  "$bin" "$B/corpus/$t" "${runs[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$B/artifacts/$t-" >"$log" 2>&1 || rc=$?
  local execs secs
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1)
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} executions; see $log and $B/artifacts/"
    return 1
  fi
  echo "fuzz: $t ok: ${execs:-?} executions in ${secs:-$SECONDS_EACH}s, corpus $(ls "$B/corpus/$t" | wc -l) inputs"
}
JOBS=${FUZZ_JOBS:-1}
pids=()
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
