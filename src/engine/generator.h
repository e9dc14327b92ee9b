// Single-sequence generation on the CPU: chunked prefill, then one token per step, with sampling,
// stop ids, stop strings, streaming UTF-8-safe text and timing. Used by `generate`, `chat`, `bench`.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "model/model.h"
#include "sampling/sampling_params.h"

namespace llamarun {

struct GenerationResult {
  std::vector<int32_t> prompt_ids;  // as fed to the model (BOS included when added)
  std::vector<int32_t> token_ids;   // generated ids (the stop id, if any, included)
  std::string text;                 // generated text (stop string excluded)
  std::string finish_reason;        // "stop" (EOS, stop id or stop string), "length", "cancelled"
  int cached_prompt_tokens = 0;     // prompt tokens reused from the KV cache
  double prompt_seconds = 0;        // prefill wall time (new prompt tokens only)
  double gen_seconds = 0;           // decode wall time (tokens after the first)
  double prompt_tok_per_s() const;
  double gen_tok_per_s() const;
};

// Receives streamed text; return false to stop generating.
using TextCallback = std::function<bool(const std::string& piece)>;

class Generator {
 public:
  // max_ctx: KV cache size in tokens (<= the model's max_position unless the caller knows better).
  Generator(Model& model, int max_ctx);

  // Generates from `prompt` (ids, BOS already included). Throws Error when the prompt is empty or
  // longer than the context. Reuses the KV cache for a prompt prefix equal to the last sequence.
  GenerationResult generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                            const TextCallback& on_text = {});

  // Logits of every prompt position (n x vocab), from an empty cache: for golden tests.
  std::vector<float> prompt_logits(const std::vector<int32_t>& prompt);

  int max_ctx() const { return kv_.max_ctx(); }
  void reset() { cached_.clear(); }

 private:
  // Feeds ids[from..) at positions from.. and leaves the last position's logits in logits_.
  void prefill(const std::vector<int32_t>& ids, int from);

  Model& model_;
  KVCache kv_;
  std::vector<int32_t> cached_;  // tokens whose K/V are in kv_ (positions 0..size-1)
  std::vector<float> logits_;    // [vocab]
};

}  // namespace llamarun
