#include "backends/cuda/cuda_generator.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

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

bool cuda_samples_on_gpu(const SamplingParams& p) {
  return p.min_p <= 0.f && !p.has_penalties() && p.logit_bias.empty() && !p.wants_logprobs();
}

CudaGenerator::CudaGenerator(Model& model, const CudaLlamaOptions& opt) : model_(model) {
  if (!model.weights) fail(model.path, ": no weights loaded");
  // The weights the CPU model bound (bind_llama_weights), else bound here by the same validator.
  llama_ = model.llama ? std::make_unique<CudaLlama>(model.cfg, model.llama->weights(), opt)
                       : std::make_unique<CudaLlama>(model.cfg, *model.weights, opt);
}

CudaGenerator::~CudaGenerator() = default;

GenerationResult CudaGenerator::generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                                         const TextCallback& on_text) {
  const int V = model_.cfg.vocab_size;
  validate(params, V);
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  const int max_ctx = llama_->max_context();
  if (int(prompt.size()) > max_ctx)
    fail("the prompt has ", prompt.size(), " tokens but the context is ", max_ctx,
         " tokens (raise it with --ctx, up to the model's ", model_.cfg.max_position, ")");
  GenerationResult r;
  r.prompt_ids = prompt;

  size_t common = 0;
  while (common < cached_.size() && common < prompt.size() && cached_[common] == prompt[common]) ++common;
  common = std::min(common, prompt.size() - 1);
  r.cached_prompt_tokens = int(common);

  Sampler sampler(params, V);
  sampler.reset(prompt);
  const bool gpu_sampling = cuda_samples_on_gpu(params);
  CudaSampling cs;
  cs.temperature = params.temperature;
  cs.top_k = params.top_k;
  cs.top_p = params.top_p;
  // GPU draws: a stream distinct from the host's (first token) draw; restarted per call: same seed, same
  // tokens.
  cs.seed = sampler.seed() ^ 0x9e3779b97f4a7c15ull;
  if (gpu_sampling && params.temperature > 0.f) llama_->reset_sample_counter();

  TokenPostprocessor post(model_.tokenizer.get(), model_.cfg.eos_ids, params);

  bool cancelled = false;
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text && !on_text(s)) cancelled = true;
  };

  double t0 = now_s();
  llama_->truncate(std::min<int>(int(common), llama_->position()));
  cached_.resize(llama_->position());
  std::vector<float> logits = llama_->prefill(prompt.data() + common, int(prompt.size() - common));
  cached_.assign(prompt.begin(), prompt.end());
  r.prompt_seconds = now_s() - t0;

  double t1 = now_s();
  r.finish_reason = "length";
  // Handles one generated token; false when the sequence ends with it.
  auto take = [&](int32_t tok) {
    sampler.accept(tok);
    r.token_ids.push_back(tok);
    TokenPostprocessor::Step st = post.push(tok);
    emit(st.text);
    if (st.stop) {
      r.finish_reason = "stop";
      return false;
    }
    if (cancelled) {
      r.finish_reason = "cancelled";
      return false;
    }
    return int(r.token_ids.size()) < params.max_tokens;  // else "length"
  };
  int32_t id = sampler.sample(logits.data());
  if (take(id) && llama_->position() < max_ctx) {
    if (gpu_sampling && params.temperature <= 0.f) {
      // Greedy: the GPU feeds each token to the next step itself; the host follows one step behind.
      llama_->decode_greedy(id, params.max_tokens - 1, [&](int32_t tok) {
        cached_.push_back(id);  // the step's input is in the cache now
        id = tok;
        return take(tok);
      });
    } else {
      for (;;) {
        int32_t next;
        if (gpu_sampling) {
          next = llama_->decode_step_sample(id, cs);
        } else {
          logits = llama_->decode_step_logits(id);
          next = sampler.sample(logits.data());
        }
        cached_.push_back(id);
        id = next;
        if (!take(id) || llama_->position() >= max_ctx) break;  // context full: "length"
      }
    }
  }
  TokenPostprocessor::Step fin = post.finish();
  emit(fin.text);
  if (fin.stop) r.finish_reason = "stop";
  r.gen_seconds = now_s() - t1;
  return r;
}

}  // namespace llamarun
