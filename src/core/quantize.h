// Quantisers for GGML's block formats beyond Q8_0/Q4_0/Q4_1 (which live in dtype.cpp): Q5_0, Q5_1 and
// the k-quants Q4_K, Q5_K, Q6_K. quantize_row() in dtype.cpp dispatches here; call that, not these.
//
// Each writes n / block_size blocks (layouts in dtype.h) from n f32 values; n must be a multiple of the
// block size (32 for Q5_0/Q5_1, 256 for the k-quants). The results are what GGML's reference quantisers
// (ggml-quants.c, used by llama-quantize without an importance matrix) produce:
//   Q5_0 / Q5_1: the same rounding as GGML (bit-exact against the `gguf` package, tests/fixtures/quant);
//   Q4_K / Q5_K: per 32-value sub-block, an asymmetric (scale, min) fit by weighted least squares over a
//     small grid of candidate scales (weights |x| + rms(x)), then the 8 scales and 8 mins quantised to
//     6 bits against the super-block's f16 d and dmin, and the values re-quantised with those;
//   Q6_K: per 16-value sub-block a symmetric scale fitted by least squares weighted with x^2 over a grid,
//     the 16 scales quantised to int8 against the f16 d, values re-quantised to [-32, 31].
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace llamarun {

void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n);
void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n);
void quantize_row_q4_k(const float* x, BlockQ4_K* y, int64_t n);
void quantize_row_q5_k(const float* x, BlockQ5_K* y, int64_t n);
void quantize_row_q6_k(const float* x, BlockQ6_K* y, int64_t n);

// The 6-bit (scale, min) pair j (0..7) of a Q4_K / Q5_K block's 12 scale bytes.
void kquant_scale_min(const uint8_t* scales, int j, int* scale, int* min);

}  // namespace llamarun
