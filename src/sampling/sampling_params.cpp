#include "sampling/sampling_params.h"

#include <cmath>
#include <string_view>

#include "core/error.h"
#include "core/utf8.h"

namespace llamarun {

void validate(const SamplingParams& p, int vocab_size) {
  LLAMARUN_CHECK(vocab_size > 0, "sampling: vocab_size must be > 0 (got ", vocab_size, ")");
  LLAMARUN_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f,
                 "sampling: temperature must be a finite number >= 0 (got ", p.temperature, ")");
  LLAMARUN_CHECK(p.top_k >= -1, "sampling: top_k must be >= 1, or 0 or -1 for off (got ", p.top_k, ")");
  LLAMARUN_CHECK(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f,
                 "sampling: top_p must be in (0, 1] (got ", p.top_p, ")");
  LLAMARUN_CHECK(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f,
                 "sampling: min_p must be in [0, 1] (got ", p.min_p, ")");
  LLAMARUN_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f,
                 "sampling: repetition_penalty must be a finite number > 0 (got ", p.repetition_penalty, ")");
  const float kp = SamplingParams::kMaxPenalty;
  LLAMARUN_CHECK(std::isfinite(p.presence_penalty) && p.presence_penalty >= -kp && p.presence_penalty <= kp,
                 "sampling: presence_penalty must be in [-2, 2] (got ", p.presence_penalty, ")");
  LLAMARUN_CHECK(
      std::isfinite(p.frequency_penalty) && p.frequency_penalty >= -kp && p.frequency_penalty <= kp,
      "sampling: frequency_penalty must be in [-2, 2] (got ", p.frequency_penalty, ")");
  LLAMARUN_CHECK(p.penalty_last_n >= -1, "sampling: penalty_last_n must be -1 (all), 0 (off) or > 0 (got ",
                 p.penalty_last_n, ")");
  LLAMARUN_CHECK(p.max_tokens >= 1, "sampling: max_tokens must be >= 1 (got ", p.max_tokens, ")");
  LLAMARUN_CHECK(p.stop.size() <= static_cast<size_t>(SamplingParams::kMaxStopStrings), "sampling: stop has ",
                 p.stop.size(), " strings; at most ", SamplingParams::kMaxStopStrings, " are allowed");
  for (size_t i = 0; i < p.stop.size(); ++i) {
    const std::string& s = p.stop[i];
    LLAMARUN_CHECK(!s.empty(), "sampling: stop[", i, "] is an empty string");
    LLAMARUN_CHECK(s.size() <= SamplingParams::kMaxStopBytes, "sampling: stop[", i, "] is ", s.size(),
                   " bytes long; at most ", SamplingParams::kMaxStopBytes, " are allowed");
    LLAMARUN_CHECK(utf8_is_valid(s), "sampling: stop[", i, "] is not valid UTF-8");
  }
  for (const auto& [id, bias] : p.logit_bias) {
    LLAMARUN_CHECK(id >= 0 && id < vocab_size, "sampling: logit_bias token id ", id,
                   " is outside the vocabulary [0, ", vocab_size, ")");
    LLAMARUN_CHECK(std::isfinite(bias) && bias >= -SamplingParams::kMaxLogitBias &&
                       bias <= SamplingParams::kMaxLogitBias,
                   "sampling: logit_bias for token ", id, " must be in [-100, 100] (got ", bias, ")");
  }
  LLAMARUN_CHECK(p.top_logprobs >= 0 && p.top_logprobs <= SamplingParams::kMaxTopLogprobs,
                 "sampling: top_logprobs must be in [0, ", SamplingParams::kMaxTopLogprobs, "] (got ",
                 p.top_logprobs, ")");
}

}  // namespace llamarun
