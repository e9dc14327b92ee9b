// Matrix multiplication against stored weights: the hot op of the forward pass.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llamarun {

// y[m, n] = sum_k x[m, k] * W[n, k] for m < M, n < W.rows, k < W.cols.
// x: M x W.cols f32 row-major; y: M x W.rows f32 row-major (overwritten).
// W stays in its stored dtype (f32, f16, bf16, q8_0, q4_0, q4_1); accumulation is f32.
// Multithreaded; SIMD picked at run time (AVX-512/AVX512-BF16 where present, else AVX2, else scalar).
void matmul(const WeightView& w, const float* x, int64_t M, float* y);

// The plain scalar reference (dequantise a row, dot in f32). Used by parity tests.
void matmul_ref(const WeightView& w, const float* x, int64_t M, float* y);

// out[0..cols) = row `r` of W converted to f32 (embedding lookup).
void weight_row_f32(const WeightView& w, int64_t r, float* out);

// Which SIMD path matmul uses on this CPU: "avx512bf16", "avx512", "avx2" or "scalar".
// The environment variable LLAMARUN_SIMD (same names) lowers it, for tests and benchmarks.
const char* simd_level_name();

}  // namespace llamarun
