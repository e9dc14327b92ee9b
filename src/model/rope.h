// Rotary position embedding (RoPE) for Llama: frequencies (with linear / llama3 scaling) and the
// rotation in both pair layouts.
#pragma once

#include <vector>

#include "model/config.h"

namespace llamarun {

// inv_freq[i] for i < rot_dim/2, computed in f32 as transformers does:
//   1 / theta^(2i / rot_dim), then linear: / factor; llama3: per-wavelength scaling.
std::vector<float> rope_inv_freq(const LlamaConfig& cfg);

// Rotates `n_heads` heads of `head_dim` values at `x` (head-major, contiguous) for position `pos`.
// cos/sin are evaluated in f32 from pos * inv_freq (as transformers does). When round_bf16 is true
// the intermediate products are rounded to bf16 as a bf16 PyTorch model computes them.
void rope_apply(float* x, int n_heads, int head_dim, int pos, const std::vector<float>& inv_freq,
                RopeLayout layout, bool round_bf16);

}  // namespace llamarun
