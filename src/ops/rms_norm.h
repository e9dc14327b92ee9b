// RMS normalisation (Llama's RMSNorm).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llamarun {

// out[r, i] = w[i] * (x[r, i] / sqrt(mean_i(x[r, :]^2) + eps)), computed in f32 as transformers'
// LlamaRMSNorm does. x, out: rows x D f32 row-major (out may equal x). w: D values of dtype
// F32/F16/BF16 (a 1 x D or D x 1 view). Throws Error on another dtype or a size mismatch.
void rms_norm(const float* x, const WeightView& w, float eps, int64_t rows, int64_t D, float* out);

}  // namespace llamarun
