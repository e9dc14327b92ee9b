// Helpers for the CUDA parity tests: skipping without a GPU, device buffers, fp16/bf16 host rounding,
// random data and dtype-aware comparisons against fp32/fp64 CPU references.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_device.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "model/config.h"

namespace llamarun::cuda::test {

#define LLAMARUN_REQUIRE_GPU()                                              \
  do {                                                                      \
    if (!::llamarun::cuda::cuda_available()) GTEST_SKIP() << "no CUDA GPU"; \
  } while (0)

#define CUDA_OK(call) \
  ASSERT_EQ((call), cudaSuccess) << #call << ": " << cudaGetErrorString(cudaGetLastError())

// Device memory freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess)
      throw std::runtime_error("cudaMalloc failed in test");
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  // Fill with a byte pattern that decodes to NaN in f16, bf16 and f32 (0xFF bytes): unwritten outputs show.
  void poison() { cudaMemset(p, 0xff, n); }
  void upload(const void* src, size_t bytes) {
    if (cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("H2D failed");
  }
  void download(void* dst, size_t bytes) const {
    if (cudaMemcpy(dst, p, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("D2H failed");
  }
};

inline uint16_t to_bits(DType t, float f) { return t == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f); }
inline float from_bits(DType t, uint16_t b) { return t == DType::F16 ? f16_to_f32(b) : bf16_to_f32(b); }
inline float round_to(DType t, float f) { return from_bits(t, to_bits(t, f)); }

// Rounds `v` in place to dtype t and returns the 16-bit storage.
inline std::vector<uint16_t> quantize16(DType t, std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    b[i] = to_bits(t, v[i]);
    v[i] = from_bits(t, b[i]);
  }
  return b;
}

inline std::vector<float> to_floats(DType t, const std::vector<uint16_t>& b) {
  std::vector<float> f(b.size());
  for (size_t i = 0; i < b.size(); ++i) f[i] = from_bits(t, b[i]);
  return f;
}

inline std::vector<float> rand_vec(std::mt19937& g, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Download n 16-bit values from a device buffer as floats.
inline std::vector<float> download16(DType t, const DevBuf& b, size_t n, size_t offset_elems = 0) {
  std::vector<uint16_t> h(n);
  if (cudaMemcpy(h.data(), static_cast<const uint16_t*>(b.p) + offset_elems, n * 2, cudaMemcpyDeviceToHost) !=
      cudaSuccess)
    throw std::runtime_error("D2H failed");
  return to_floats(t, h);
}

// Relative L2 error ||out - ref|| / ||ref||; NaN / inf anywhere in out fails (returns +inf).
inline double rel_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1e-30));
}

// Tolerance for a result rounded to dtype t once at the end after fp32 accumulation (a few ulps of t).
inline double tol_rel(DType t) { return t == DType::F16 ? 2e-3 : 1.5e-2; }

inline const char* dname(DType t) { return t == DType::F16 ? "f16" : "bf16"; }

// CPU attention for one query vector over positions 0..len-1 of kv head kvh (fp64 softmax); kc, vc hold
// [nkv, max_ctx, hd] values.
inline void attend_ref(const float* q, const std::vector<float>& kc, const std::vector<float>& vc, int kvh,
                       int max_ctx, int hd, int len, float scale, float* out) {
  std::vector<double> s(len);
  double mx = -1e300;
  for (int p = 0; p < len; ++p) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * kc[(size_t(kvh) * max_ctx + p) * hd + i];
    s[p] = d * scale;
    mx = std::max(mx, s[p]);
  }
  double den = 0;
  for (auto& v : s) den += (v = std::exp(v - mx));
  for (int i = 0; i < hd; ++i) {
    double o = 0;
    for (int p = 0; p < len; ++p) o += s[p] * vc[(size_t(kvh) * max_ctx + p) * hd + i];
    out[i] = float(o / den);
  }
}

// CPU reference RoPE on one head vector (fp64 angles).
inline void rope_ref(std::vector<float>& v, size_t off, int hd, int p, const std::vector<float>& inv,
                     RopeLayout lay) {
  for (int i = 0; i < hd / 2; ++i) {
    int i0 = lay == RopeLayout::kInterleaved ? 2 * i : i;
    int i1 = lay == RopeLayout::kInterleaved ? 2 * i + 1 : i + hd / 2;
    double a = double(p) * double(inv[i]);
    double c = std::cos(a), s = std::sin(a);
    double x0 = v[off + i0], x1 = v[off + i1];
    v[off + i0] = float(x0 * c - x1 * s);
    v[off + i1] = float(x1 * c + x0 * s);
  }
}

}  // namespace llamarun::cuda::test
