// The CPU backend's kernel table: one set of function pointers per SIMD level, picked once.
// The op front-ends in src/ops/ check shapes and dtypes, then call through this table; the
// per-level entry points are visible here so parity tests can run every level the CPU has.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/cpu/qdot.h"
#include "backends/cpu/simd_level.h"
#include "core/dtype.h"

namespace llamarun::cpu {

// y[m, n] = sum_k x[m, k] * W[n, k]  (m < M, n < N, k < K).
struct MatmulArgs {
  DType dtype = DType::F32;
  const uint8_t* w = nullptr;  // N rows of w_row_bytes bytes; K % block size == 0
  size_t w_row_bytes = 0;
  int64_t N = 0, K = 0;
  const float* x = nullptr;  // M x K, row-major
  int64_t M = 0;
  float* y = nullptr;  // M x N, row-major
  // BF16 weights only, large M only, AVX512_BF16 only: round x to bf16 and use vdpbf16ps.
  bool bf16_dot = false;
  // Per-row results independent of M (see MatmulOptions::batch_invariant).
  bool batch_invariant = false;
};

struct CpuKernels {
  SimdLevel level;
  bool has_bf16_dot;  // matmul honours MatmulArgs::bf16_dot
  void (*matmul)(const MatmulArgs& a);
  // out[i] = silu(gate[i]) * up[i]; out may equal gate or up.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y[i] += a * x[i]
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // Attention of R query rows (q [R][d], e.g. the query heads sharing one KV head) over a run of n keys /
  // values stored one row of d floats after another (a KV-cache block):
  //   s[r * lds + j] = scale * sum_i q[r * d + i] * k[j * d + i]            (r < R, j < n)
  //   out[r * d + i] += sum_j p[r * ldp + j] * v[j * d + i]                 (j in order)
  // The keys / values are loaded once for all R rows. Each result depends only on its own inputs (not on
  // R, n or where the run starts), so attention stays independent of the batch.
  void (*dot_rows)(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                   int64_t lds);
  void (*axpy_rows)(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n, float* out);
  // Softmax of s[0..n) in place: exp(s[j] - max) / sum. Each value depends only on the row and n.
  void (*softmax)(float* s, int64_t n);
  // The int8-activation dot for weight dtype w (qdot.h); matmul uses it where qdot_uses_int8(w).
  QDot (*qdot)(DType w);
};

// The table for `level`; level must not exceed detected_simd_level() (checked: throws Error).
const CpuKernels& kernels_for(SimdLevel level);
// The table for active_simd_level().
const CpuKernels& active_kernels();

// Per-ISA implementations (kernels_*.cpp / matmul_*.cpp).
void matmul_scalar(const MatmulArgs& a);
void matmul_avx2(const MatmulArgs& a);
void matmul_avx512(const MatmulArgs& a);

// The RMSNorm the forward pass uses (ops::rms_norm calls it): out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) +
// eps) * w[:], the sum of squares in f64; w: D values of wt (F32/F16/BF16); out may equal x. A norm is O(D)
// per row next to the O(D^2) projections: no SIMD version.
void rms_norm_scalar(const float* x, DType wt, const void* w, float eps, int64_t rows, int64_t D, float* out);
void silu_mul_scalar(const float* gate, const float* up, float* out, int64_t n);
float dot_scalar(const float* a, const float* b, int64_t n);
void axpy_scalar(float a, const float* x, float* y, int64_t n);
void dot_rows_scalar(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                     int64_t lds);
void softmax_scalar(float* s, int64_t n);
void softmax_avx2(float* s, int64_t n);
void axpy_rows_scalar(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n,
                      float* out);

void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n);
float dot_avx2(const float* a, const float* b, int64_t n);
void axpy_avx2(float a, const float* x, float* y, int64_t n);
void dot_rows_avx2(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                   int64_t lds);
void axpy_rows_avx2(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n, float* out);

}  // namespace llamarun::cpu
