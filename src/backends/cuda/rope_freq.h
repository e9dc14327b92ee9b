// RoPE inverse frequencies, computed on the host in float32 the way Hugging Face transformers does
// (default: 1 / theta^(2i/d); linear: divided by factor; llama3: transformers'
// _compute_llama3_parameters, i.e. low frequencies divided by factor, high kept, a smooth blend between).
#pragma once

#include <vector>

#include "model/config.h"

namespace llamarun::cuda {

// inv_freq[i] for i < head_dim / 2.
std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling);

}  // namespace llamarun::cuda
