// Sampling parameters of one request, and their validation. These are plain native values: the HTTP
// edge turns OpenAI JSON into a SamplingParams and calls validate() before the request is queued.
//
// Processing order inside Sampler (as in HF transformers / vLLM):
//   logit_bias -> repetition penalty -> frequency/presence penalties ->
//   temperature == 0 ? argmax : (temperature -> top-k -> top-p -> min-p -> seeded draw)
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace llamarun {

struct SamplingParams {
  // Divides the logits before softmax. 0 means greedy (argmax; ties go to the lowest id).
  float temperature = 1.0f;
  // Keep only the k most likely tokens. 0 or -1 = off; values above the vocabulary size act as off.
  int top_k = 0;
  // Nucleus sampling: keep the smallest set of most likely tokens whose probability (after top-k,
  // renormalised) reaches top_p; at least one token is always kept. In (0, 1]; 1 = off.
  float top_p = 1.0f;
  // Drop tokens whose probability is below min_p times the probability of the most likely token.
  // In [0, 1]; 0 = off; 1 keeps only the most likely token(s).
  float min_p = 0.0f;
  // Hugging Face semantics, over the distinct tokens of prompt + generated text (inside the window):
  // logit > 0 ? logit / p : logit * p. > 0; 1 = off.
  float repetition_penalty = 1.0f;
  // OpenAI semantics, over GENERATED tokens only (inside the window):
  //   logit -= frequency_penalty * count(token) + presence_penalty * (count(token) > 0)
  // Each in [-2, 2]; 0 = off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Window of the penalties, counted in tokens of prompt + generated text, most recent last:
  // -1 = all tokens, 0 = penalties disabled, n > 0 = the last n tokens.
  int penalty_last_n = -1;
  // Same seed + same params + same logits -> same tokens. No seed -> seeded from std::random_device.
  std::optional<uint64_t> seed;
  // Generation stops before the first occurrence of any of these (see StopMatcher). At most
  // kMaxStopStrings, each non-empty, valid UTF-8 and at most kMaxStopBytes bytes.
  std::vector<std::string> stop;
  // Upper bound on generated tokens (>= 1). The engine also checks prompt + max_tokens <= context.
  int max_tokens = 256;
  // Added to the logit of each token id before anything else. Ids in [0, vocab); values in [-100, 100].
  std::map<int32_t, float> logit_bias;
  // Engine-level flag: do not end the sequence on EOS / stop ids. The sampler does not read it.
  bool ignore_eos = false;
  // Report the chosen token's log-probability (see Sampler::last_logprobs()).
  bool logprobs = false;
  // Also report the N most likely alternatives, N in [0, kMaxTopLogprobs]. N > 0 implies logprobs.
  int top_logprobs = 0;

  bool greedy() const { return temperature == 0.0f; }
  bool wants_logprobs() const { return logprobs || top_logprobs > 0; }
  // True when any penalty can change a logit.
  bool has_penalties() const {
    return penalty_last_n != 0 &&
           (repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f);
  }

  static constexpr int kMaxStopStrings = 16;
  static constexpr size_t kMaxStopBytes = 1024;
  static constexpr int kMaxTopLogprobs = 20;
  static constexpr float kMaxLogitBias = 100.0f;
  static constexpr float kMaxPenalty = 2.0f;
};

// Throws llamarun::Error naming the parameter, the allowed range and the value when anything is out
// of range or NaN. vocab_size (> 0) bounds the logit_bias ids.
void validate(const SamplingParams& p, int vocab_size);

}  // namespace llamarun
