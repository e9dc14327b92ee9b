#!/usr/bin/env bash
# Serving benchmark on a GPU machine (issue 4's targets): `llamarun serve --device cuda` with a random-weight
# Llama-2-7B-shaped model (fp16) and the Llama 2 tokenizer, driven over HTTP by bench/bench_serve.py
# (streaming, 128 prompt / 128 output tokens, ignore_eos, greedy), at 64 and 256 concurrent clients, plus a
# shared 1,000-token system prompt run; the engine's own time split from /metrics; and the PyTorch CUDA-graph
# decode peer at batch 64 and 256 in the same run. Results (JSON + logs) go to $OUT (or ./gpu-results).
# Environment:
#   BUILD_DIR  directory with the llamarun binary built with -DLLAMARUN_CUDA=ON (default build-cuda)
#   TOKENIZER  the Llama 2 tokenizer.model (default: tests/fixtures/assets/llama2-tokenizer.model, else
#              .cudawork/tok/llama2-tokenizer.model)
#   PY         python with httpx (and torch for the peer) (default python3)
#   QUICK=1    fewer requests, no peers
#   SKIP_PEERS=1
#   SKIP_PREFIX=1  no shared-prefix run
#   SERVE_ARGS  extra server options (e.g. "--quantize fp8"); TAG  names the runs' files (serve-TAGc256.json)
#   BENCH_ARGS  extra bench_serve.py options (e.g. "--prompts random": prompts that share no prefix)
#   ONLY_C256=1    only the 256-client run (no 64-client run)
#   MAX_BATCH_TOKENS  the server's --max-batch-tokens (default: the server's, 2048 on a GPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-results}"
LOGS="${LOGS:-/tmp/llamarun-serve-logs}"  # server and client logs (kept out of $OUT: few files come back)
mkdir -p "$OUT" "$LOGS"
BUILD_DIR="${BUILD_DIR:-build-cuda}"
PY="${PY:-python3}"
TOKENIZER="${TOKENIZER:-tests/fixtures/assets/llama2-tokenizer.model}"
[ -f "$TOKENIZER" ] || TOKENIZER=.cudawork/tok/llama2-tokenizer.model
PORT="${PORT:-8321}"
URL="http://127.0.0.1:$PORT"
for d in /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
N64=256 N256=1024
[ "${QUICK:-0}" = 1 ] && N64=128 N256=512
summary="$OUT/serve-${TAG:-}summary.txt"  # per TAG, so that a second call does not overwrite the first
{
  date -u
  if [ -f "$BUILD_DIR/COMMIT" ]; then echo "binaries built from $(cat "$BUILD_DIR/COMMIT")"; else
    git rev-parse --short HEAD 2>/dev/null || true; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
} >"$summary"
status=0

start_server() {  # start_server LOG ARGS...: starts llamarun serve and waits for /health
  local log=$1
  shift
  # shellcheck disable=SC2086
  "$BUILD_DIR/llamarun" serve --device cuda --random-weights llama2-7b --tokenizer "$TOKENIZER" --port "$PORT" \
    --quiet ${SERVE_ARGS:-} "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -sf "$URL/health" >/dev/null 2>&1; then return 0; fi
    kill -0 $SERVER_PID 2>/dev/null || { echo "server exited: $(tail -3 "$log")" >>"$summary"; return 1; }
    sleep 0.5
  done
  echo "server not ready after 300 s" >>"$summary"
  return 1
}
stop_server() {
  kill -TERM $SERVER_PID 2>/dev/null
  wait $SERVER_PID
  echo "server exit code $? (SIGTERM drain)" >>"$summary"
}
metric() { curl -s "$URL/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
bench() {  # bench NAME ARGS...
  local name=${TAG:-}$1
  shift
  local s0 m0 p0 n0 h0
  s0=$(metric llamarun_engine_schedule_seconds_total) m0=$(metric llamarun_engine_model_seconds_total)
  p0=$(metric llamarun_engine_postprocess_seconds_total) n0=$(metric llamarun_engine_steps_total)
  h0=$(metric llamarun_engine_backend_host_seconds_total)
  # shellcheck disable=SC2086
  "$PY" bench/bench_serve.py --url "$URL" --input-len 128 --output-len 128 --temperature 0 --json "$OUT/serve-$name.json" \
    ${BENCH_ARGS:-} "$@" >"$LOGS/serve-$name.log" 2>&1 || status=1
  local s1 m1 p1 n1 h1
  s1=$(metric llamarun_engine_schedule_seconds_total) m1=$(metric llamarun_engine_model_seconds_total)
  p1=$(metric llamarun_engine_postprocess_seconds_total) n1=$(metric llamarun_engine_steps_total)
  h1=$(metric llamarun_engine_backend_host_seconds_total)
  "$PY" - "$OUT/serve-$name.json" "$s0" "$s1" "$m0" "$m1" "$p0" "$p1" "$n0" "$n1" "${h0:-0}" "${h1:-0}" \
    >>"$summary" <<'PYEOF'
import json, sys
f = sys.argv[1]
s0, s1, m0, m1, p0, p1, n0, n1, h0, h1 = map(float, sys.argv[2:])
try:
    r = json.load(open(f))
except Exception as e:
    print(f"{f}: no report ({e})")
    sys.exit(0)
steps = max(n1 - n0, 1)
sched, model, post, host = (s1 - s0) / steps, (m1 - m0) / steps, (p1 - p0) / steps, (h1 - h0) / steps
gpu = model - host  # launches, the device's work and the result copies
ms = lambda x: "-" if x is None else f"{1000 * x:.1f}"
print(f"{f.split('/')[-1]}: {r['completed']}/{r['requests']} ok, {r['output_token_throughput_per_s']:.0f} out tok/s, "
      f"TTFT p50 {ms(r['ttft_s']['p50'])} p99 {ms(r['ttft_s']['p99'])} ms, ITL p50 {ms(r['itl_s']['p50'])} "
      f"p99 {ms(r['itl_s']['p99'])} ms, e2e p50 {ms(r['e2e_s']['p50'])} ms")
for k in ("first_request_ttft_ms", "later_ttft_p50_ms", "shared_prefix_ttft_ratio"):
    if k in r:
        print(f"  {k}: {r[k]}")
print(f"  engine per step ({int(steps)} steps): schedule {1e3 * sched:.3f} ms, batch staging {1e3 * host:.3f} ms, "
      f"GPU step {1e3 * gpu:.2f} ms, postprocess {1e3 * post:.3f} ms -> host overhead "
      f"{100 * (sched + host + post) / gpu if gpu > 0 else 0:.1f}% of the GPU step")
PYEOF
}

if start_server "$LOGS/server.log" --max-num-seqs 256 ${MAX_BATCH_TOKENS:+--max-batch-tokens "$MAX_BATCH_TOKENS"}; then
  grep -m1 '"ready"' "$LOGS/server.log" >>"$summary"
  [ "${ONLY_C256:-0}" = 1 ] || bench c64 --concurrency 64 --num-prompts "$N64" --warmup 2 --processes 4
  bench c256 --concurrency 256 --num-prompts "$N256" --warmup 1 --processes 8
  nvidia-smi --query-gpu=memory.used --format=csv,noheader >>"$summary" 2>&1
  stop_server
else
  status=1
fi
# Shared 1,000-token system prompt: the first request computes it, later ones hit the prefix cache.
if [ "${SKIP_PREFIX:-0}" = 1 ]; then
  :
elif start_server "$LOGS/server-prefix.log" --max-num-seqs 256 --max-batch-tokens 512; then
  bench prefix --concurrency 8 --num-prompts 64 --shared-prefix-len 1000 --input-len 32 --output-len 32 --warmup 0
  stop_server
else
  status=1
fi
if [ "${QUICK:-0}" != 1 ] && [ "${SKIP_PEERS:-0}" != 1 ]; then
  for b in 64 256; do
    "$PY" bench/peers/torch_graph_decode.py --batch $b --depths 192 --tg 64 --reps 3 >>"$OUT/peers-batch.jsonl" \
      2>>"$LOGS/peers-batch.log" || status=1
  done
  tail -n 4 "$OUT/peers-batch.jsonl" >>"$summary"
fi
cat "$summary"
exit $status
