// The engine's synchronous client (as nano-vllm's LLM.generate): submits one request and steps the
// engine on the calling thread until it finishes, streaming its text. `generate`, `chat`, `bench` and the
// tests run through it, so the command line exercises the code that serves.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace llamarun {

struct GenerationResult {
  std::vector<int32_t> prompt_ids;  // as submitted (BOS included when added)
  std::vector<int32_t> token_ids;   // generated ids (the stop id, if any, included)
  std::string text;                 // generated text (stop string excluded)
  std::string finish_reason;        // "stop" (EOS, stop id or stop string), "length", "cancelled"
  int cached_prompt_tokens = 0;     // prompt tokens served from the engine's prefix cache
  double prompt_seconds = 0;        // submit -> first generated token (prefill of the uncached prompt)
  double gen_seconds = 0;           // first -> last generated token
  double prompt_tok_per_s() const;  // uncached prompt tokens / prompt_seconds
  double gen_tok_per_s() const;     // tokens after the first / gen_seconds
};

// Receives streamed text; return false to stop generating (finish_reason "cancelled").
using TextCallback = std::function<bool(const std::string& piece)>;

// Runs `prompt` to completion on `engine`, which must not be start()ed (this thread steps it).
// params.max_tokens is lowered to what the engine's context leaves after the prompt. Throws Error when
// the request is refused (empty prompt, prompt as long as the context, bad params) or fails.
GenerationResult generate(Engine& engine, const std::vector<int32_t>& prompt, SamplingParams params,
                          const TextCallback& on_text = {});

}  // namespace llamarun
