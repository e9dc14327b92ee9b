#include "sampling/logprobs.h"

#include <cmath>
#include <limits>

#include "sampling/vocab_kernels.h"

namespace llamarun {

float log_sum_exp(const float* logits, int n) { return log_sum_exp_fast(logits, n); }

void top_logprobs(const float* logits, int n, int top_n, float lse, std::vector<TokenLogprob>& out) {
  out.clear();
  if (top_n <= 0) return;
  // out holds raw logits in descending order while scanning (a small insertion-sorted list; top_n is
  // at most a few dozen, and most tokens are rejected by the first comparison).
  for (int i = 0; i < n; ++i) {
    const float l = logits[i];
    if (!std::isfinite(l)) continue;
    const bool full = static_cast<int>(out.size()) == top_n;
    // Ids arrive in increasing order, so equal logits keep the earlier (lower) id ahead.
    if (full && !(l > out.back().logprob)) continue;
    if (!full) out.push_back({});
    size_t j = out.size() - 1;
    while (j > 0 && out[j - 1].logprob < l) {
      out[j] = out[j - 1];
      --j;
    }
    out[j] = {i, l};
  }
  for (auto& t : out) t.logprob -= lse;
}

}  // namespace llamarun
