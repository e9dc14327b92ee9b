// Activation functions of the MLP.
#pragma once

#include <cstdint>

namespace llamarun {

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i], i < n (Llama's SwiGLU).
// out may equal gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

}  // namespace llamarun
