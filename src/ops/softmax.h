// Softmax over a vector (attention scores).
#pragma once

#include <cstdint>

namespace llamarun {

// x[0..n) = exp(x - max) / sum(exp(x - max)). -inf entries (masked positions) become 0; if every
// entry is -inf the result is all zeros.
void softmax_inplace(float* x, int64_t n);

}  // namespace llamarun
