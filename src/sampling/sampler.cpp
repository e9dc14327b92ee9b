#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace llamarun {

namespace {

uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
}

// Strict total order: higher logit first, then lower id.
inline bool better(const SamplerWorkspace::Candidate& a, const SamplerWorkspace::Candidate& b) {
  return a.s > b.s || (a.s == b.s && a.id < b.id);
}

}  // namespace

void SamplerWorkspace::reserve(int vocab_size) {
  if (cand_.size() < static_cast<size_t>(vocab_size)) cand_.resize(vocab_size);
}

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params), vocab_size_(vocab_size), seed_(0) {
  validate(params_, vocab_size_);
  // Only pay for the per-token counts when a penalty can change something.
  penalties_ = PenaltyTracker(vocab_size_, params_.has_penalties() ? params_.penalty_last_n : 0);
  logprobs_.top.reserve(params_.top_logprobs);
  reset({});
}

void Sampler::reset(std::span<const int32_t> prompt) {
  penalties_.reset(prompt);
  seed_ = params_.seed ? *params_.seed : random_seed();
  rng_.seed(seed_);
  logprobs_.chosen = {};
  logprobs_.top.clear();
}

void Sampler::accept(int32_t id) { penalties_.accept(id); }

void Sampler::process_logits(float* logits) const {
  for (const auto& [id, bias] : params_.logit_bias) logits[id] += bias;
  penalties_.apply(logits, params_.repetition_penalty, params_.presence_penalty, params_.frequency_penalty);
}

double Sampler::uniform01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(float* logits) { return sample(logits, own_ws_); }

int32_t Sampler::sample(float* logits, SamplerWorkspace& ws) {
  const bool want_lp = params_.wants_logprobs();
  float lse = 0.0f;
  if (want_lp) {
    ws.raw_.assign(logits, logits + vocab_size_);  // reuses capacity after the first call
    lse = log_sum_exp(logits, vocab_size_);
    top_logprobs(logits, vocab_size_, params_.top_logprobs, lse, logprobs_.top);
  }
  process_logits(logits);
  const int32_t id = params_.temperature == 0.0f ? argmax(logits) : sample_random(logits, ws);
  if (want_lp) logprobs_.chosen = {id, ws.raw_[id] - lse};
  return id;
}

int32_t Sampler::argmax(const float* logits) const {
  int32_t best = -1;
  float best_l = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < vocab_size_; ++i) {
    const float l = logits[i];
    // Strict '>' keeps the lowest id on ties; NaN and -inf never win, +inf is excluded explicitly.
    if (l > best_l && std::isfinite(l)) {
      best_l = l;
      best = i;
    }
  }
  LLAMARUN_CHECK(best >= 0, "sampler: no finite logit among ", vocab_size_, " (all NaN or infinite)");
  return best;
}

int32_t Sampler::sample_random(const float* logits, SamplerWorkspace& ws) {
  using Candidate = SamplerWorkspace::Candidate;
  ws.reserve(vocab_size_);
  Candidate* c = ws.cand_.data();

  // Candidates: every finite logit.
  int n = 0;
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < vocab_size_; ++i) {
    const float l = logits[i];
    if (!std::isfinite(l)) continue;
    c[n++] = {l, 0.0f, i};
    mx = std::max(mx, l);
  }
  LLAMARUN_CHECK(n > 0, "sampler: no finite logit among ", vocab_size_, " (all NaN or infinite)");

  // Top-k on the unscaled logits: c[0..k) become the k best (unordered), O(n).
  const int k = params_.top_k;
  if (k > 0 && k < n) {
    std::nth_element(c, c + k, c + n, better);
    n = k;
  }

  // Temperature and unnormalised probabilities; the best token gets s = 0, w = 1.
  const float t = params_.temperature;
  double z = 0.0;
  for (int j = 0; j < n; ++j) {
    const float s = (c[j].s - mx) / t;
    c[j].s = s;
    c[j].w = std::exp(s);
    z += c[j].w;
  }

  // Top-p: sort only as long a prefix as needed (growing geometrically) to reach top_p of the mass.
  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * z;
    double cum = 0.0;
    int sorted = 0;
    int keep = n;
    bool found = false;
    while (!found && sorted < n) {
      const int next = std::min(n, std::max(64, 2 * sorted));
      if (next < n) std::nth_element(c + sorted, c + next, c + n, better);
      std::sort(c + sorted, c + next, better);
      for (int j = sorted; j < next; ++j) {
        cum += c[j].w;
        if (cum >= target) {
          keep = j + 1;
          found = true;
          break;
        }
      }
      sorted = next;
    }
    n = keep;
  }

  // Min-p: p / p_max = exp(s - 0) >= min_p  <=>  s >= log(min_p). Stable compaction; the best
  // token (s = 0) always stays.
  if (params_.min_p > 0.0f) {
    const float thr = std::log(params_.min_p);
    int m = 0;
    for (int j = 0; j < n; ++j) {
      if (c[j].s >= thr) c[m++] = c[j];
    }
    n = m;
  }

  // Draw.
  double total = 0.0;
  for (int j = 0; j < n; ++j) total += c[j].w;
  const double r = uniform01() * total;
  double cum = 0.0;
  for (int j = 0; j < n; ++j) {
    cum += c[j].w;
    if (r < cum) return c[j].id;
  }
  // Only reachable through rounding: fall back to the last token with non-zero weight.
  for (int j = n - 1; j > 0; --j) {
    if (c[j].w > 0.0f) return c[j].id;
  }
  return c[0].id;
}

}  // namespace llamarun
