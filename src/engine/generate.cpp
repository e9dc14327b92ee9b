#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "core/clock.h"
#include "core/error.h"
#include "model/model.h"

namespace llamarun {

double GenerationResult::prompt_tok_per_s() const {
  const int n = int(prompt_ids.size()) - cached_prompt_tokens;
  return prompt_seconds > 0 ? n / prompt_seconds : 0;
}

double GenerationResult::gen_tok_per_s() const {
  return gen_seconds > 0 && token_ids.size() > 1 ? double(token_ids.size() - 1) / gen_seconds : 0;
}

GenerationResult generate(Engine& engine, const std::vector<int32_t>& prompt, SamplingParams params,
                          const TextCallback& on_text) {
  const int max_len = engine.max_model_len();
  if (!prompt.empty() && int(prompt.size()) >= max_len)
    fail("the prompt has ", prompt.size(), " tokens but the context is ", max_len,
         " tokens (raise it with --ctx, up to the model's ", engine.model().cfg.max_position, ")");
  params.max_tokens = std::min(params.max_tokens, max_len - int(prompt.size()));

  GenerationResult r;
  r.prompt_ids = prompt;
  bool finished = false, stop_asked = false;
  std::string error;
  double t_first = 0, t_last = 0;
  GenerationRequest req;
  req.prompt = prompt;
  req.params = params;
  req.on_output = [&](const RequestOutput& o) {
    const double t = now_seconds();
    for (const TokenOutput& tk : o.tokens) {
      if (r.token_ids.empty()) t_first = t;
      t_last = t;
      r.token_ids.push_back(tk.id);
      if (tk.text.empty()) continue;
      r.text += tk.text;
      if (on_text && !stop_asked && !on_text(tk.text)) stop_asked = true;
    }
    if (o.finished) {
      finished = true;
      r.finish_reason = o.finish_reason;
      r.cached_prompt_tokens = o.cached_prompt_tokens;
      error = o.error;
    }
  };
  const double t0 = now_seconds();
  const uint64_t id = engine.submit(std::move(req));
  bool cancel_sent = false;
  while (!finished) {
    if (stop_asked && !cancel_sent) {
      engine.cancel(id);
      cancel_sent = true;
    }
    // A cancel is handled by the next step() before it looks for work.
    if (!engine.step() && !finished)
      fail("generate: the engine has no work but request ", id, " did not finish");
  }
  if (r.finish_reason == "error") fail(error);
  if (!r.token_ids.empty()) {
    r.prompt_seconds = t_first - t0;
    r.gen_seconds = t_last - t_first;
  }
  return r;
}

}  // namespace llamarun
