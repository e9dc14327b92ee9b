// The serving engine: a request queue and an iteration-level scheduler over a paged KV cache
// (continuous batching, chunked prefill, preemption by recompute, automatic prefix caching).
// The engine never sees JSON: the HTTP edge turns requests into these native types.
//
// Threading: one engine thread runs step() in a loop (start()/stop()); submit() and cancel() may be
// called from any thread. Output callbacks run on the engine thread and must not block: they hand
// data to the connection's own queue and return.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/step_model.h"
#include "sampling/logprobs.h"
#include "sampling/sampling_params.h"

namespace llamarun {

struct Model;

struct EngineConfig {
  int block_size = 16;                 // tokens per KV block, in [1, 1024]
  int num_blocks = 0;                  // 0: derived from kv_cache_bytes (f32 K and V of every layer)
  size_t kv_cache_bytes = 1ull << 30;  // 0: the backend chooses (CPU: 1 GiB; GPU: what free memory allows)
  int max_num_seqs = 256;              // most sequences running at once (capped at max_batch_tokens)
  int max_batch_tokens = 512;          // per-step token budget (prefill chunks + decodes; decodes first)
  int max_queue = 1024;                // waiting requests beyond which submit() refuses (HTTP 429)
  bool enable_prefix_caching = true;
  int max_model_len = 0;  // 0: the model's max_position
  // Bit-identical results for a request whatever it is batched with (batch-invariant matmuls; prefill
  // runs slower than the blocked GEMM). false: faster prefill, last-bit differences between batches.
  bool batch_invariant = true;
};

// One generated token, as delivered to the request's callback. A stop id (EOS, <|im_end|>, ...)
// that ends the sequence is delivered too (counted in completion_tokens) with empty text.
struct TokenOutput {
  int32_t id = -1;
  std::string text;               // UTF-8-safe text delta (may be empty while bytes are held back)
  TokenLogprob logprob;           // when params.wants_logprobs()
  std::vector<TokenLogprob> top;  // params.top_logprobs alternatives
};

// Each choice gets exactly one output with finished == true, and nothing after it. The final output
// may carry the last token(s) and the text held back until then (a partial stop-string match, an
// incomplete UTF-8 character).
struct RequestOutput {
  uint64_t request_id = 0;
  int choice = 0;                   // index among the request's n choices
  std::vector<TokenOutput> tokens;  // new tokens since the last callback (usually one)
  bool finished = false;
  std::string finish_reason;  // "stop", "length", "cancelled", "error" when finished
  std::string error;          // message when finish_reason == "error"
  // Totals, valid when finished:
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
};

using OutputCallback = std::function<void(const RequestOutput&)>;

struct GenerationRequest {
  std::vector<int32_t> prompt;  // ids, BOS included when the model wants it
  SamplingParams params;        // validated by submit()
  int n = 1;                    // independent choices (seeds params.seed + i when seeded)
  OutputCallback on_output;     // required
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  double kv_usage = 0;  // fraction of KV blocks in use
  uint64_t prompt_tokens_total = 0;
  uint64_t generation_tokens_total = 0;
  uint64_t preemptions_total = 0;
  uint64_t prefix_cache_queries = 0;  // prompt tokens looked up
  uint64_t prefix_cache_hits = 0;     // prompt tokens found
  uint64_t steps_total = 0;
  uint64_t requests_finished_total = 0;
  // Engine-thread wall time, cumulative: scheduling (admission, queues, batch building), the model's
  // forward passes, and postprocessing (sampling, detokenisation, stop checks, callbacks).
  double schedule_seconds = 0;
  double model_seconds = 0;
  double postprocess_seconds = 0;
  double backend_host_seconds = 0;  // part of model_seconds: the backend's host-side batch preparation
};

class Engine {
 public:
  // `backend`: what runs the forward passes (e.g. the CUDA backend's StepModel, built on model's weights);
  // null: the CPU forward pass of model.llama. The model supplies the config and the tokenizer either way.
  Engine(Model& model, const EngineConfig& cfg, std::unique_ptr<StepModel> backend = nullptr);
  ~Engine();

  // Queues a request; returns its id. Throws Error (a client error: empty prompt, ids outside the
  // vocabulary, bad params, n outside [1, 128], prompt + max_tokens beyond the context or beyond
  // the whole KV cache, with the numbers; or "shutting down" during stop()) or QueueFull when
  // max_queue requests are waiting. Thread-safe; the Sampler is built here, off the engine thread.
  uint64_t submit(GenerationRequest req);
  // Cancels a request (e.g. the client went away): its KV blocks are freed at the next step and its
  // callback gets a final "cancelled" output. Unknown/finished ids are ignored.
  void cancel(uint64_t request_id);

  // Runs one scheduler iteration (schedule -> run -> postprocess); false when there was no work.
  // Call it from one thread only, and not while start()'s thread runs (tests drive it directly).
  // A failing forward pass ends the step's sequences with finish_reason "error"; the engine goes on.
  bool step();
  // Engine thread: runs step() until stop(). stop(drain=true) refuses new submissions and lets
  // running and waiting requests finish first (up to timeout_s), then cancels the rest (their
  // callbacks run on the caller's thread). A forward pass still running then is abandoned (the CPU
  // forward polls BatchInput::abort twice a layer) and its sequences end "cancelled", so stop()
  // returns within about half a layer's compute after the deadline. The engine can be start()ed again
  // afterwards. The destructor calls stop(false).
  void start();
  void stop(bool drain, double timeout_s = 30);

  EngineStats stats() const;
  const Model& model() const;
  int max_model_len() const;
  std::string backend_name() const;
  BackendStats backend_stats() const;  // the backend's own figures (StepModel::backend_stats)
  int num_kv_blocks() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class QueueFull : public std::runtime_error {
 public:
  QueueFull() : std::runtime_error("the request queue is full") {}
};

}  // namespace llamarun
