// FP8 (E4M3) building blocks for GPUs with FP8 tensor cores (compute capability 8.9 and up: Ada, Hopper):
// per-row quantization with an fp32 scale per row, and the rescale epilogue of LtGemm::run_fp8's fallback
// (gemm.h). E4M3: 4 exponent bits, 3 mantissa bits, finite range +-448, no infinities. Plain C++ header
// (the CUDA runtime header for cudaStream_t); all pointers are device pointers, launches are asynchronous
// on `stream`, and argument or launch errors throw llamarun::Error.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/fp8_scale.h"
#include "core/dtype.h"

namespace llamarun::cuda {

// Largest finite E4M3 value.
constexpr float kFp8E4M3Max = 448.f;

// True when device `device` has FP8 tensor cores (compute capability >= 8.9). False when it cannot be
// queried (no driver, no such device). Never throws.
bool fp8_supported(int device);

// Per-row quantization to E4M3: for each row r of src [rows, cols] (act: F16 or BF16),
//   scale[r] = max_c |src[r, c]| / 448   (1 for a row of zeros, so that nothing divides by zero and the
//                                          row dequantizes to zeros)
//   q[r, c]  = E4M3(src[r, c] / scale[r]), rounded to nearest even, saturated to +-448
// (cuda_fp8.h's __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3) of the fp32 quotient), so that
// src[r, c] ~ scale[r] * q[r, c]. q [rows, cols] row-major, one byte per value. Serves weights (a scale per
// output channel: rows = N) and activations (a scale per token: rows = M). cols: a positive multiple of 16
// (any length; a row is read twice, the second time from cache); src and q 16-byte aligned; scale [rows]
// fp32. Any number of rows.
// With how == Fp8Scale::kSearch, scale[r] is instead the candidate s = (max / 448) * kFp8ScaleSteps[k] whose
// codes give the least sum over the row of (s * E4M3(src / s) - src)^2 (the smallest k among equal sums; the
// sum in fp32, in the kernel's order), and q holds the codes for that s. On the default model (SmolLM2-135M
// from a Q4_1 file) this took FP8 weights' emulated perplexity cost from +1.42% to about +0.4%
// (tools/fp8_kv_perplexity.py): per-row max scales round many weights that a slightly larger scale hits.
void fp8_quantize_rows(DType act, const void* src, int rows, int cols, void* q, float* scale,
                       cudaStream_t stream, Fp8Scale how = Fp8Scale::kMax);

// The FP8 GEMM's inputs quantized where they are produced (one kernel instead of two, and no act copy of
// the row): add_rmsnorm_fp8 is add_rmsnorm (kernels.h: x += residual when residual is non-null, stored in
// act) followed by fp8_quantize_rows (Fp8Scale::kMax) of the normalised rows, which are not stored;
// silu_mul_fp8 is silu_mul of gu [M, 2 I] followed by fp8_quantize_rows of its [M, I] output. x / the codes
// q, the scales [M]: bit-identical to the two kernels'. H at most 12224.
void add_rmsnorm_fp8(DType act, void* x, const void* residual, const void* w, int M, int H, float eps,
                     void* q, float* scale, cudaStream_t stream);
void silu_mul_fp8(DType act, const void* gu, int M, int I, void* q, float* scale, cudaStream_t stream);

// Epilogue of the unit-scale FP8 GEMM: y[m, n] = acc[m, n] * xscale[m] * wscale[n] for acc [M, N] fp32
// row-major; y [M, N] fp32 when y_f32 (then y may alias acc) else act (one rounding). N a multiple of 4;
// acc and y 16-byte aligned.
void fp8_rescale(DType act, const float* acc, const float* xscale, const float* wscale, void* y, bool y_f32,
                 int M, int N, cudaStream_t stream);

}  // namespace llamarun::cuda
