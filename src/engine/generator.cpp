#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "core/error.h"
#include "engine/token_postprocessor.h"
#include "sampling/sampler.h"

namespace llamarun {

namespace {
double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

double GenerationResult::prompt_tok_per_s() const {
  int n = int(prompt_ids.size()) - cached_prompt_tokens;
  return prompt_seconds > 0 ? n / prompt_seconds : 0;
}

double GenerationResult::gen_tok_per_s() const {
  return gen_seconds > 0 && token_ids.size() > 1 ? (token_ids.size() - 1) / gen_seconds : 0;
}

Generator::Generator(Model& model, int max_ctx) : model_(model) {
  LLAMARUN_CHECK(max_ctx >= 1, "context size must be at least 1, got ", max_ctx);
  kv_ = model.llama->make_cache(max_ctx);
  logits_.resize(model.cfg.vocab_size);
}

void Generator::prefill(const std::vector<int32_t>& ids, int from) {
  const int chunk = model_.llama->max_batch();
  for (int p = from; p < int(ids.size()); p += chunk) {
    int n = std::min<int>(chunk, int(ids.size()) - p);
    model_.llama->forward(ids.data() + p, n, p, kv_, logits_.data());
  }
  cached_.assign(ids.begin(), ids.end());
}

std::vector<float> Generator::prompt_logits(const std::vector<int32_t>& prompt) {
  const int V = model_.cfg.vocab_size;
  LLAMARUN_CHECK(!prompt.empty() && int(prompt.size()) <= kv_.max_ctx(), "prompt of ", prompt.size(),
                 " tokens does not fit the context of ", kv_.max_ctx());
  std::vector<float> out(prompt.size() * size_t(V));
  const int chunk = model_.llama->max_batch();
  for (int p = 0; p < int(prompt.size()); p += chunk) {
    int n = std::min<int>(chunk, int(prompt.size()) - p);
    model_.llama->forward(prompt.data() + p, n, p, kv_, out.data() + size_t(p) * V, true);
  }
  cached_.assign(prompt.begin(), prompt.end());
  return out;
}

GenerationResult Generator::generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                                     const TextCallback& on_text) {
  const int V = model_.cfg.vocab_size;
  validate(params, V);
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (int(prompt.size()) > kv_.max_ctx())
    fail("the prompt has ", prompt.size(), " tokens but the context is ", kv_.max_ctx(),
         " tokens (raise it with --ctx, up to the model's ", model_.cfg.max_position, ")");
  GenerationResult r;
  r.prompt_ids = prompt;

  // Reuse the cached prefix; at least the last prompt token is recomputed to get its logits.
  size_t common = 0;
  while (common < cached_.size() && common < prompt.size() && cached_[common] == prompt[common]) ++common;
  common = std::min(common, prompt.size() - 1);
  r.cached_prompt_tokens = int(common);

  Sampler sampler(params, V);
  sampler.reset(prompt);
  TokenPostprocessor post(model_.tokenizer.get(), model_.cfg.eos_ids, params);

  bool cancelled = false;
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text && !on_text(s)) cancelled = true;
  };

  double t0 = now_s();
  prefill(prompt, int(common));
  r.prompt_seconds = now_s() - t0;

  double t1 = now_s();
  int pos = int(prompt.size());
  r.finish_reason = "length";
  for (int i = 0; i < params.max_tokens; ++i) {
    int32_t id = sampler.sample(logits_.data());
    sampler.accept(id);
    r.token_ids.push_back(id);
    TokenPostprocessor::Step st = post.push(id);
    emit(st.text);
    if (st.stop) {
      r.finish_reason = "stop";
      break;
    }
    if (cancelled) {
      r.finish_reason = "cancelled";
      break;
    }
    if (i + 1 == params.max_tokens) break;
    if (pos >= kv_.max_ctx()) break;  // context full: "length"
    model_.llama->forward(&id, 1, pos, kv_, logits_.data());
    cached_.push_back(id);
    ++pos;
  }
  TokenPostprocessor::Step fin = post.finish();
  emit(fin.text);
  if (fin.stop) r.finish_reason = "stop";
  r.gen_seconds = now_s() - t1;
  // Keep cached_ consistent with kv_: the last sampled token was never fed.
  return r;
}

}  // namespace llamarun
