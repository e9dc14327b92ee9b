// RoPE inverse frequencies for the CUDA backend: the CPU path's rope_inv_freq (model/rope.h), which
// computes them in float32 the way transformers does, including GGUF per-dimension rope_freqs.
#pragma once

#include <vector>

#include "model/config.h"

namespace llamarun::cuda {

// inv_freq[i] for i < head_dim / 2 (no per-dimension factors).
std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling);

}  // namespace llamarun::cuda
