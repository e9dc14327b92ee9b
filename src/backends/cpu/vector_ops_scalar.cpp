// Scalar reference versions of the small forward-pass ops (see kernels.h for contracts).
// Written to be obviously right; sums are accumulated in double.
#include <cmath>
#include <limits>

#include "backends/cpu/kernels.h"
#include "core/fp16.h"

namespace llamarun::cpu {
namespace {

float weight_at(DType wt, const void* w, int64_t i) {
  switch (wt) {
    case DType::F16:
      return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::BF16:
      return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    default:
      return static_cast<const float*>(w)[i];
  }
}

}  // namespace

void rms_norm_scalar(const float* x, DType wt, const void* w, float eps, int64_t rows, int64_t D,
                     float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(xr[i]) * xr[i];
    // As transformers' LlamaRMSNorm in f32: x * rsqrt(mean(x^2) + eps), then * weight.
    const float inv = 1.0f / std::sqrt(float(ss / double(D)) + eps);
    for (int64_t i = 0; i < D; ++i) out[r * D + i] = weight_at(wt, w, i) * (xr[i] * inv);
  }
}

void silu_mul_scalar(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

float dot_scalar(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return float(s);
}

void axpy_scalar(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void dot_rows_scalar(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                     int64_t lds) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j) s[r * lds + j] = dot_scalar(q + r * d, k + j * d, d) * scale;
}

void axpy_rows_scalar(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n,
                      float* out) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j) axpy_scalar(p[r * ldp + j], v + j * d, out + r * d, d);
}

void softmax_scalar(float* s, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) mx = std::fmax(mx, s[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

}  // namespace llamarun::cpu
