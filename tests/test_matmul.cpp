// Parity of the matmul kernels (every SIMD level this CPU has, every dtype) against matmul_ref.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/qdot.h"
#include "backends/cpu/simd_level.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/matmul.h"

using namespace llamarun;
using cpu::SimdLevel;

namespace {

std::vector<SimdLevel> available_levels() {
  std::vector<SimdLevel> v;
  for (int l = 0; l <= int(cpu::detected_simd_level()); ++l) v.push_back(SimdLevel(l));
  return v;
}

// N x K weights of dtype t from N(0, 1) values; `deq` is the dequantised matrix.
struct TestWeights {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;
  WeightView view;
};

TestWeights make_weights(DType t, int64_t N, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  TestWeights w;
  const size_t rb = dtype_row_bytes(t, K);
  w.bytes.resize(rb * size_t(N));
  w.deq.resize(size_t(N * K));
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    for (auto& v : row) v = nd(rng);
    quantize_row(t, row.data(), w.bytes.data() + rb * size_t(n), K);
    dequantize_row(t, w.bytes.data() + rb * size_t(n), w.deq.data() + n * K, K);
  }
  w.view = WeightView{t, N, K, w.bytes.data()};
  return w;
}

std::vector<float> random_x(int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(M * K));
  for (auto& v : x) v = nd(rng);
  return x;
}

// s[m, n] = sum_k |x[m, k]| |w[n, k]|: the scale of the rounding error of one output.
std::vector<double> abs_sums(const std::vector<float>& x, const std::vector<float>& w, int64_t M, int64_t N,
                             int64_t K) {
  std::vector<double> s(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double a = 0;
      for (int64_t k = 0; k < K; ++k) a += std::fabs(double(x[m * K + k]) * w[n * K + k]);
      s[m * N + n] = a;
    }
  return s;
}

// Runs the matmul at `level` and checks every output against ref within rel * s (+ guard cells).
void check_level(SimdLevel level, const TestWeights& w, const std::vector<float>& x, int64_t M,
                 const std::vector<float>& ref, const std::vector<double>& s, double rel, bool bf16_act,
                 const std::string& what) {
  const int64_t N = w.view.rows;
  const size_t n_out = size_t(M * N);
  const float guard = 12345.f;
  std::vector<float> y(n_out + 16, guard);
  for (size_t i = 0; i < n_out; ++i) y[i] = std::numeric_limits<float>::quiet_NaN();
  MatmulOptions opt;
  opt.bf16_activations = bf16_act;
  matmul_at_level(level, w.view, x.data(), M, y.data(), opt);
  int bad = 0;
  for (size_t i = 0; i < n_out && bad < 5; ++i) {
    const double err = std::fabs(double(y[i]) - ref[i]);
    if (!(err <= rel * s[i] + 1e-30)) {
      ++bad;
      ADD_FAILURE() << what << " level=" << cpu::simd_level_str(level) << " m=" << i / N << " n=" << i % N
                    << " got " << y[i] << " want " << ref[i] << " err " << err << " > " << rel << " * "
                    << s[i];
    }
  }
  for (size_t i = n_out; i < y.size(); ++i) ASSERT_EQ(y[i], guard) << what << ": wrote past the end of y";
}

class MatmulParity : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulParity, AllLevelsAllShapes) {
  const DType t = GetParam();
  std::vector<int64_t> Ks = {32, 64, 576, 1536};
  if (!dtype_is_quantized(t)) Ks.insert(Ks.end(), {1, 37, 100});  // K tails for plain types
  uint32_t seed = 1;
  for (int64_t N : {67, 257}) {
    for (int64_t K : Ks) {
      const TestWeights w = make_weights(t, N, K, seed++);
      for (int64_t M : {1, 2, 3, 7, 8, 9, 17, 64, 129}) {
        const std::vector<float> x = random_x(M, K, seed++);
        std::vector<float> ref(size_t(M * N));
        matmul_ref(w.view, x.data(), M, ref.data());
        const std::vector<double> s = abs_sums(x, w.deq, M, N, K);
        const std::string what = std::string(dtype_name(t)) + " M=" + std::to_string(M) +
                                 " N=" + std::to_string(N) + " K=" + std::to_string(K);
        // The types with only the int8-activation path (backends/cpu/qdot.h): each x is rounded by at
        // most amax(block) / 254, a few times |x| / 254 for normal data (the tight comparison with the
        // scalar integer reference is in test_quant_formats.cpp). Q8_0/Q4_0/Q4_1 run on f32 activations
        // here (MatmulOptions::int8_activations off).
        const double rel = cpu::qdot_uses_int8(t, M, false, false, false) ? 4.0 / 127.0 : 1e-5;
        for (SimdLevel level : available_levels()) {
          check_level(level, w, x, M, ref, s, rel, /*bf16_act=*/false, what);
          if (t == DType::BF16 && level == SimdLevel::kAvx512Bf16) {
            // Activations rounded to bf16 (relative error <= 2^-9 each): error <= 2^-9 * s.
            check_level(level, w, x, M, ref, s, 4e-3, /*bf16_act=*/true, what + " bf16-activations");
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulParity,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0,
                                           DType::Q4_1),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Matmul, Bf16ActivationPathIsTakenForLargeM) {
  if (cpu::detected_simd_level() < SimdLevel::kAvx512Bf16) GTEST_SKIP() << "no AVX512_BF16";
  const int64_t M = 64, N = 67, K = 576;
  const TestWeights w = make_weights(DType::BF16, N, K, 7);
  const std::vector<float> x = random_x(M, K, 8);
  std::vector<float> y1(size_t(M * N)), y2(size_t(M * N));
  matmul_at_level(SimdLevel::kAvx512Bf16, w.view, x.data(), M, y1.data(), MatmulOptions{true});
  matmul_at_level(SimdLevel::kAvx512Bf16, w.view, x.data(), M, y2.data(), MatmulOptions{false});
  int differ = 0;
  for (size_t i = 0; i < y1.size(); ++i) differ += y1[i] != y2[i];
  EXPECT_GT(differ, int(y1.size()) / 2) << "bf16-activation option seems to have no effect";
}

TEST(Matmul, FrontEndMatchesActiveLevel) {
  const int64_t N = 67, K = 64;
  for (int64_t M : {1, 33}) {
    const TestWeights w = make_weights(DType::Q4_1, N, K, 3);
    const std::vector<float> x = random_x(M, K, 4);
    std::vector<float> a(size_t(M * N)), b(size_t(M * N));
    matmul(w.view, x.data(), M, a.data());
    matmul_at_level(cpu::active_simd_level(), w.view, x.data(), M, b.data());
    EXPECT_EQ(a, b);
  }
}

TEST(Matmul, DegenerateShapes) {
  const TestWeights w = make_weights(DType::F32, 5, 32, 5);
  std::vector<float> x(64, 1.f), y(10, 7.f);
  matmul(w.view, x.data(), 0, y.data());  // M = 0: nothing written
  EXPECT_EQ(y[0], 7.f);
  WeightView empty{DType::F32, 2, 0, nullptr};
  matmul(empty, x.data(), 3, y.data());  // K = 0: zeros
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], 0.f);
}

TEST(Matmul, RejectsBadShapes) {
  std::vector<uint8_t> buf(1024);
  std::vector<float> x(64), y(64);
  WeightView w{DType::Q4_0, 2, 33, buf.data()};  // 33 not a multiple of 32
  EXPECT_THROW(matmul(w, x.data(), 1, y.data()), Error);
  WeightView none{DType::F32, 2, 4, nullptr};
  EXPECT_THROW(matmul(none, x.data(), 1, y.data()), Error);
  WeightView ok{DType::F32, 2, 4, buf.data()};
  EXPECT_THROW(matmul(ok, x.data(), -1, y.data()), Error);
  EXPECT_THROW(weight_row_f32(ok, 2, y.data()), Error);
}

TEST(Matmul, WeightRowMatchesDequantize) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const TestWeights w = make_weights(t, 5, 64, 9);
    std::vector<float> row(64);
    weight_row_f32(w.view, 3, row.data());
    for (int k = 0; k < 64; ++k) EXPECT_EQ(row[k], w.deq[3 * 64 + k]) << dtype_name(t);
  }
}

TEST(SimdLevel, EnvOverride) {
  EXPECT_EQ(cpu::simd_level_from_env_value(nullptr, SimdLevel::kAvx512), SimdLevel::kAvx512);
  EXPECT_EQ(cpu::simd_level_from_env_value("", SimdLevel::kAvx512), SimdLevel::kAvx512);
  EXPECT_EQ(cpu::simd_level_from_env_value("avx2", SimdLevel::kAvx512Bf16), SimdLevel::kAvx2);
  EXPECT_EQ(cpu::simd_level_from_env_value("scalar", SimdLevel::kAvx2), SimdLevel::kScalar);
  EXPECT_EQ(cpu::simd_level_from_env_value("avx512bf16", SimdLevel::kAvx2),
            SimdLevel::kAvx2);  // never raised
  EXPECT_THROW(cpu::simd_level_from_env_value("avx9000", SimdLevel::kAvx2), Error);
  const std::string name = simd_level_name();
  EXPECT_TRUE(name == "scalar" || name == "avx2" || name == "avx512" || name == "avx512bf16") << name;
  EXPECT_THROW(cpu::kernels_for(SimdLevel(int(cpu::detected_simd_level()) + 1)), Error);
}

}  // namespace
