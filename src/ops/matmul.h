// Matrix multiplication against stored weights: the hot op of the forward pass.
#pragma once

#include <cstdint>

#include "backends/cpu/simd_level.h"
#include "core/tensor.h"

namespace llamarun {

struct MatmulOptions {
  // BF16 weights only, prefill-sized M (> 8) only, CPUs with AVX512_BF16 only: round the
  // activations to bf16 (round to nearest even, as PyTorch's bf16 matmul does) and multiply with
  // vdpbf16ps, accumulating in f32. About 2x the f32 throughput; relative error ~1e-2 of
  // sum|x||w| instead of ~1e-6. false keeps f32 activations everywhere.
  bool bf16_activations = true;
  // Per-row results independent of M (the batch size) and of the other rows: every output is
  // computed with the GEMV's reduction order whatever M is (large M reuses f32 panels of the weights
  // instead of the blocked GEMM, whose summation order differs). The serving engine sets this so that
  // a sequence gives bit-identical results alone and batched. bf16_activations is ignored. Prefill-
  // sized M runs somewhat slower than the GEMM.
  bool batch_invariant = false;
  // Q8_0 / Q4_0 / Q4_1 weights (the block types that have both paths): quantise the activations to int8
  // per 32 values and take the integer dot (backends/cpu/qdot.h), as llama.cpp does, where it is the
  // faster path: GEMV-sized M (<= 8) and batch-invariant matmuls. Error ~ sum_k |w_k| amax(block of x) / 254
  // instead of f32 rounding. false: f32 activations for these types (the other quantised types have only
  // the int8 path).
  bool int8_activations = false;
};

// y[m, n] = sum_k x[m, k] * W[n, k] for m < M, n < W.rows, k < W.cols.
// x: M x W.cols f32 row-major; y: M x W.rows f32 row-major (overwritten; must not alias x).
// W stays in its stored dtype; it is never converted as a whole. F32/F16/BF16/Q8_0/Q4_0/Q4_1: weights
// are dequantised in registers, activations stay f32 (except the bf16 option above), accumulation is
// f32. Q5_0/Q5_1/IQ4_NL/Q2_K..Q6_K/IQ4_XS: the int8-activation path (backends/cpu/qdot.h): each
// activation row is quantised per block to int8 (Q8_K or 32-value blocks, as llama.cpp), block dots
// are exact integers scaled in f32; error ~ sum_k |w_k| amax(block of x_k) / 254. That path is batch
// invariant for every M. K-quant and IQ4_XS weights need K % 256 == 0.
// M <= 8 runs a bandwidth-bound GEMV, larger M a blocked GEMM. Multithreaded (OpenMP); SIMD picked
// at run time (AVX-512/AVX512-BF16 where present, else AVX2, else scalar).
// Throws llamarun::Error if W.cols is not a multiple of the dtype's block size.
void matmul(const WeightView& w, const float* x, int64_t M, float* y, const MatmulOptions& opt);
void matmul(const WeightView& w, const float* x, int64_t M, float* y);

// matmul at a given SIMD level (<= cpu::detected_simd_level(), else Error): for parity tests and
// benchmarks.
void matmul_at_level(cpu::SimdLevel level, const WeightView& w, const float* x, int64_t M, float* y,
                     const MatmulOptions& opt = {});

// The plain scalar reference (dequantise a row, dot in f64, round to f32). Used by parity tests.
void matmul_ref(const WeightView& w, const float* x, int64_t M, float* y);

// out[0..cols) = row `r` of W converted to f32 (embedding lookup).
void weight_row_f32(const WeightView& w, int64_t r, float* out);

// Which SIMD path matmul uses on this CPU: "avx512bf16", "avx512", "avx2" or "scalar".
// The environment variable LLAMARUN_SIMD (same names) lowers it, for tests and benchmarks; it is
// read once, on first use.
const char* simd_level_name();

}  // namespace llamarun
