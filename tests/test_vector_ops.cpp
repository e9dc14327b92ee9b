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
  float s = 0;
  dot_rows_f32(a, 1, b, 3, 1, 0.5f, &s, 1);
  EXPECT_EQ(s, 16.f);
  float y[3] = {1, 1, 1};
  axpy_f32(2.f, a, y, 3);
  EXPECT_EQ(y[2], 7.f);
}

// Attention over a run of keys / values for R query rows, every level against the scalar reference (fp64
// dot products); and each result the same bits whatever R and the run length are (the batch-invariance the
// forward pass promises: a query row's attention cannot depend on the rows or keys computed beside it).
TEST(DotAxpyRows, MatchesReferenceAndIsIndependentOfRowsAndRunLength) {
  for (int64_t d : {8, 16, 64, 72, 128, 7}) {
    for (int64_t R : {1, 2, 3, 5}) {
      const int64_t n = 13;
      const std::vector<float> q = randn(R * d, uint32_t(d + R)), k = randn(n * d, uint32_t(d + 7)),
                               v = randn(n * d, uint32_t(d + 9)), p = randn(R * n, uint32_t(R + 11), 0.3f);
      const float scale = 0.125f;
      for (const cpu::CpuKernels* kt : all_tables()) {
        std::vector<float> s(R * n, -1.f);
        kt->dot_rows(q.data(), R, k.data(), d, n, scale, s.data(), n);
        std::vector<float> out(R * d, 0.5f);
        kt->axpy_rows(p.data(), n, R, v.data(), d, n, out.data());
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < d; ++i) {
              ref += double(q[r * d + i]) * k[j * d + i];
              mag += std::fabs(double(q[r * d + i]) * k[j * d + i]);
            }
            EXPECT_NEAR(s[r * n + j], ref * scale, 1e-6 * mag * scale + 1e-30) << "d " << d << " R " << R;
          }
          for (int64_t i = 0; i < d; ++i) {
            double ref = 0.5, mag = 0.5;
            for (int64_t j = 0; j < n; ++j) {
              ref += double(p[r * n + j]) * v[j * d + i];
              mag += std::fabs(double(p[r * n + j]) * v[j * d + i]);
            }
            EXPECT_NEAR(out[r * d + i], ref, 1e-6 * mag) << "d " << d << " R " << R;
          }
          // Row r alone, over keys 5.. only, and in two runs (5 then 8 keys): the same bits.
          std::vector<float> s1(n);
          kt->dot_rows(q.data() + r * d, 1, k.data() + 5 * d, d, n - 5, scale, s1.data(), n);
          for (int64_t j = 5; j < n; ++j) ASSERT_EQ(s1[j - 5], s[r * n + j]) << "d " << d << " R " << R;
          std::vector<float> o1(d, 0.5f);
          kt->axpy_rows(p.data() + r * n, n, 1, v.data(), d, 5, o1.data());
          kt->axpy_rows(p.data() + r * n + 5, n, 1, v.data() + 5 * d, d, n - 5, o1.data());
          for (int64_t i = 0; i < d; ++i) ASSERT_EQ(o1[i], out[r * d + i]) << "d " << d << " R " << R;
        }
      }
    }
  }
}

// Softmax, every level against an fp64 reference, on rows of every tail length (the vector tail is masked);
// a huge value just past the row must be neither read (it would take the max and zero the row) nor written.
TEST(Softmax, MatchesReferenceForEveryLength) {
  for (int64_t n : {1, 2, 7, 8, 9, 16, 31, 100, 513}) {
    std::vector<float> x = randn(n, uint32_t(n + 3), 4.f);
    x[size_t(n / 2)] = 30.f;  // one dominant score, as attention has
    std::vector<double> ref(static_cast<size_t>(n));
    double mx = -1e300, sum = 0;
    for (float v : x) mx = std::max(mx, double(v));
    for (int64_t j = 0; j < n; ++j) sum += ref[size_t(j)] = std::exp(double(x[size_t(j)]) - mx);
    for (double& r : ref) r /= sum;
    for (const cpu::CpuKernels* kt : all_tables()) {
      std::vector<float> s = x;
      s.push_back(1e30f);  // past the row: neither read into the max nor written
      kt->softmax(s.data(), n);
      double total = 0;
      for (int64_t j = 0; j < n; ++j) {
        // x - max is rounded to f32 first: a relative error up to |x - max| * 2^-24 before exp's own.
        const double tol = (4e-7 + 1.2e-7 * (mx - x[size_t(j)])) * ref[size_t(j)] + 1e-37;
        EXPECT_NEAR(s[size_t(j)], ref[size_t(j)], tol) << "n " << n << " j " << j;
        total += s[size_t(j)];
      }
      EXPECT_NEAR(total, 1.0, 1e-6) << "n " << n;
      EXPECT_EQ(s[size_t(n)], 1e30f) << "n " << n;
    }
  }
}

}  // namespace
