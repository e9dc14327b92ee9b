// Log-probabilities for the `logprobs` / `top_logprobs` outputs.
//
// Convention (as vLLM's default "raw" logprobs): they are the log_softmax of the RAW model logits,
// before logit_bias, penalties, temperature and top-k/top-p/min-p filtering. So they describe what
// the model predicted, and the chosen token's logprob is finite even when sampling was filtered.
// Non-finite logits (NaN, +-inf) count as -inf, as in the sampler.
#pragma once

#include <cstdint>
#include <vector>

namespace llamarun {

struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.0f;  // natural log
};

struct SampleLogprobs {
  TokenLogprob chosen;            // the sampled token
  std::vector<TokenLogprob> top;  // most likely first (ties: lower id first); size <= top_logprobs
};

// log(sum_i exp(logits[i])) over the finite logits of logits[0..n), computed stably (max-shifted,
// fast_expf, double accumulation of blocks). -inf when no logit is finite.
float log_sum_exp(const float* logits, int n);

// Writes the top_n most likely tokens of logits[0..n) into out (cleared first), ordered by
// logit descending, ties by lower id; non-finite logits are never listed.
// out[i].logprob = logits[id] - lse. Does not allocate when out.capacity() >= top_n.
void top_logprobs(const float* logits, int n, int top_n, float lse, std::vector<TokenLogprob>& out);

}  // namespace llamarun
