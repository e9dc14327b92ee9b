// The small forward-pass ops: silu_mul, dot and axpy at every SIMD level this CPU has against the scalar
// reference; the RMSNorm front-end (scalar: f64 sum of squares, optional bf16 rounding); a few values by
// hand.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "core/fp16.h"
#include "ops/activation.h"
#include "ops/rms_norm.h"
#include "ops/vector_ops.h"

using namespace llamarun;
using cpu::SimdLevel;

namespace {

std::vector<const cpu::CpuKernels*> all_tables() {
  std::vector<const cpu::CpuKernels*> v;
  for (int l = 0; l <= int(cpu::detected_simd_level()); ++l) v.push_back(&cpu::kernels_for(SimdLevel(l)));
  return v;
}

std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

const int64_t kSizes[] = {1, 7, 8, 9, 16, 31, 64, 100, 576, 1001};

// ops::rms_norm is the forward pass's norm: within f32 rounding of the formula computed here in double,
// and with emulate_bf16 every output a bf16 value within bf16 rounding (two roundings) of it.
TEST(RmsNorm, MatchesTheFormulaAndRoundsToBf16) {
  const float eps = 1e-6f;
  for (int64_t D : kSizes) {
    const int64_t rows = 3;
    const std::vector<float> x = randn(rows * D, uint32_t(D) + 5, 3.f);
    const std::vector<float> wf = randn(D, uint32_t(D) + 6);
    std::vector<uint16_t> wb16(static_cast<size_t>(D));
    for (int64_t i = 0; i < D; ++i) wb16[i] = f32_to_bf16(wf[i]);
    for (auto [wt, wp] : {std::pair<DType, const void*>{DType::F32, wf.data()}, {DType::BF16, wb16.data()}}) {
      std::vector<double> ref(x.size());
      std::vector<float> out(x.size()), out_bf(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < D; ++i) ss += double(x[r * D + i]) * x[r * D + i];
        const double inv = 1.0 / std::sqrt(ss / double(D) + eps);
        for (int64_t i = 0; i < D; ++i) {
          const double wi = wt == DType::F32 ? wf[i] : bf16_to_f32(wb16[i]);
          ref[r * D + i] = wi * x[r * D + i] * inv;
        }
      }
      rms_norm(x.data(), WeightView{wt, 1, D, wp}, eps, rows, D, out.data());
      rms_norm(x.data(), WeightView{wt, 1, D, wp}, eps, rows, D, out_bf.data(), /*emulate_bf16=*/true);
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], 4e-7 * std::fabs(ref[i]) + 1e-30) << "D=" << D << " i=" << i;
        ASSERT_EQ(out_bf[i], bf16_to_f32(f32_to_bf16(out_bf[i])))
            << "not a bf16 value: D=" << D << " i=" << i;
        ASSERT_NEAR(out_bf[i], ref[i], 2 * std::ldexp(std::fabs(ref[i]), -8) + 1e-30)
            << "D=" << D << " i=" << i;
      }
    }
  }
}

TEST(RmsNorm, KnownValuesAndInPlace) {
  // x = (3, 4): mean square = 12.5; w = (1, 2).
  std::vector<float> x = {3.f, 4.f};
  const float w[2] = {1.f, 2.f};
  rms_norm(x.data(), WeightView{DType::F32, 1, 2, w}, 0.f, 1, 2, x.data());
  EXPECT_NEAR(x[0], 3.f / std::sqrt(12.5f), 1e-6);
  EXPECT_NEAR(x[1], 8.f / std::sqrt(12.5f), 1e-6);
  EXPECT_THROW(rms_norm(x.data(), WeightView{DType::F32, 1, 3, w}, 0.f, 1, 2, x.data()), Error);
  EXPECT_THROW(rms_norm(x.data(), WeightView{DType::Q8_0, 1, 32, w}, 0.f, 1, 32, x.data()), Error);
}

TEST(SiluMul, MatchesReferenceAllLevels) {
  for (int64_t n : kSizes) {
    std::vector<float> g = randn(n, uint32_t(n), 6.f), u = randn(n, uint32_t(n) + 7);
    if (n >= 9) g[0] = 100.f, g[1] = -100.f, g[2] = 0.f, g[3] = -88.f, g[4] = 89.f;
    std::vector<float> ref(static_cast<size_t>(n)), out(static_cast<size_t>(n));
    cpu::silu_mul_scalar(g.data(), u.data(), ref.data(), n);
    for (const cpu::CpuKernels* k : all_tables()) {
      k->silu_mul(g.data(), u.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(out[i], ref[i], 1e-6 * std::fabs(ref[i]) + 1e-30)
            << "n=" << n << " g=" << g[i] << " level=" << cpu::simd_level_str(k->level);
    }
  }
  const float g = 1.5f, u = 2.f;
  float o;
  silu_mul(&g, &u, &o, 1);
  EXPECT_NEAR(o, 1.5 / (1 + std::exp(-1.5)) * 2, 1e-6);
}

TEST(DotAxpy, MatchesReferenceAllLevels) {
  for (int64_t n : kSizes) {
    const std::vector<float> a = randn(n, uint32_t(n)), b = randn(n, uint32_t(n) + 3);
    double abs_sum = 0;
    for (int64_t i = 0; i < n; ++i) abs_sum += std::fabs(double(a[i]) * b[i]);
    const float ref = cpu::dot_scalar(a.data(), b.data(), n);
    std::vector<float> yref = b;
    cpu::axpy_scalar(0.37f, a.data(), yref.data(), n);
    for (const cpu::CpuKernels* k : all_tables()) {
      EXPECT_NEAR(k->dot(a.data(), b.data(), n), ref, 1e-6 * abs_sum + 1e-30) << "n=" << n;
      std::vector<float> y = b;
      k->axpy(0.37f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[i], yref[i], 1e-6 * (std::fabs(b[i]) + std::fabs(0.37f * a[i]))) << "n=" << n;
    }
  }
  const float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
  EXPECT_EQ(dot_f32(a, b, 3), 32.f);
  float y[3] = {1, 1, 1};
  axpy_f32(2.f, a, y, 3);
  EXPECT_EQ(y[2], 7.f);
}

}  // namespace
