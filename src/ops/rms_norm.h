// RMS normalisation (Llama's RMSNorm), as the CPU forward pass runs it.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llamarun {

// out[r, i] = w[i] * (x[r, i] / sqrt(mean_i(x[r, :]^2) + eps)) as transformers' LlamaRMSNorm computes it in
// f32, with the sum of squares accumulated in f64 (so long rows lose nothing to the order of the sum).
// emulate_bf16: the normalised value and the product with w are rounded to bf16, as a bf16 PyTorch model
// rounds them. x, out: rows x D f32 row-major (out may equal x). w: D values of dtype F32/F16/BF16 (a 1 x D
// or D x 1 view). Throws Error on another dtype or a size mismatch.
void rms_norm(const float* x, const WeightView& w, float eps, int64_t rows, int64_t D, float* out,
              bool emulate_bf16 = false);

}  // namespace llamarun
