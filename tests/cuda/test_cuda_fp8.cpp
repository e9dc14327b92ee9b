// FP8 (E4M3) parity tests: per-row quantization against cuda_fp8.h's host conversion (NVIDIA's reference
// implementation, independent of the kernel), and LtGemm::run_fp8 (outer-vector scales and the forced
// fallback) against an fp64 product of the dequantized operands. Skipped without FP8 tensor cores.
#include <cuda_fp8.h>

#include <cstdio>

#include "backends/cuda/fp8.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

uint8_t e4m3_code(float v) { return __nv_fp8_e4m3(v).__x; }  // RNE, saturating to +-448
float e4m3_value(uint8_t c) {
  __nv_fp8_e4m3 q;
  q.__x = c;
  return float(q);
}
uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The reference quantization of rows of x (the values as stored, already rounded to the activation type):
// scale = max|x| / 448 (1 for a zero row), code = E4M3(x / scale), in fp32 as the contract says.
void quantize_ref(const std::vector<float>& x, int rows, int cols, std::vector<uint8_t>& q,
                  std::vector<float>& scale) {
  q.resize(size_t(rows) * cols);
  scale.resize(rows);
  for (int r = 0; r < rows; ++r) {
    const float* row = x.data() + size_t(r) * cols;
    float amax = 0.f;
    for (int c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float s = amax > 0.f ? amax / 448.f : 1.f;
    scale[r] = s;
    for (int c = 0; c < cols; ++c) q[size_t(r) * cols + c] = e4m3_code(row[c] / s);
  }
}

class CudaFp8 : public ::testing::Test {
 protected:
  void SetUp() override {
    LLAMARUN_REQUIRE_GPU();
    int dev = 0;
    CUDA_OK(cudaGetDevice(&dev));
    if (!fp8_supported(dev)) GTEST_SKIP() << "no FP8 tensor cores (compute capability < 8.9)";
  }
  std::mt19937 gen{4242};
};

TEST_F(CudaFp8, QuantizeRowsMatchesHostConversion) {
  struct Case {
    int rows, cols;
  };
  // 70001 rows of 16: more rows than the grid (grid-stride loop).
  for (DType t : {DType::F16, DType::BF16}) {
    const bool f16 = t == DType::F16;
    const float huge = f16 ? 60000.f : 1e30f, tiny = f16 ? 3e-6f : 1e-30f;  // f16: subnormal range
    for (Case c : {Case{37, 16}, Case{13, 4096}, Case{7, 11008}, Case{3, 32768}, Case{70001, 16}}) {
      auto x = rand_vec(gen, size_t(c.rows) * c.cols, -1.f, 1.f);
      auto row = [&](int r) { return x.begin() + size_t(r) * c.cols; };
      std::fill(row(0), row(1), 0.f);  // a zero row: scale 1, codes 0
      if (c.rows > 1) std::transform(row(1), row(2), row(1), [&](float v) { return v * huge; });
      if (c.rows > 2) std::transform(row(2), row(3), row(2), [&](float v) { return v * tiny; });
      if (c.rows > 3) {
        // A negative outlier: the rest of the row lands among E4M3's subnormals or underflows to 0.
        std::transform(row(3), row(4), row(3), [](float v) { return v * 1e-4f; });
        x[size_t(3) * c.cols + c.cols / 2] = -7.f;
      }
      auto xb = quantize16(t, x);  // x now holds the stored values
      std::vector<uint8_t> qref;
      std::vector<float> sref;
      quantize_ref(x, c.rows, c.cols, qref, sref);
      DevBuf dx(xb.size() * 2), dq(qref.size()), ds(size_t(c.rows) * 4);
      dx.upload(xb.data(), xb.size() * 2);
      dq.poison();  // 0xff is an E4M3 NaN, which the saturating conversion never produces
      ds.poison();
      fp8_quantize_rows(t, dx.p, c.rows, c.cols, dq.p, ds.as<float>(), nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint8_t> q(qref.size());
      std::vector<float> s(c.rows);
      dq.download(q.data(), q.size());
      ds.download(s.data(), s.size() * 4);
      size_t bad_q = 0, bad_s = 0, first = SIZE_MAX;
      for (size_t i = 0; i < q.size(); ++i)
        if (q[i] != qref[i]) {
          ++bad_q;
          first = std::min(first, i);
        }
      for (int r = 0; r < c.rows; ++r) bad_s += float_bits(s[r]) != float_bits(sref[r]);
      EXPECT_EQ(bad_q, 0u) << dname(t) << " " << c.rows << " x " << c.cols << ": first mismatch at " << first
                           << " (row " << (first == SIZE_MAX ? 0 : first / c.cols) << ")";
      EXPECT_EQ(bad_s, 0u) << dname(t) << " " << c.rows << " x " << c.cols;
      EXPECT_EQ(s[0], 1.f) << "zero row";
      EXPECT_TRUE(std::all_of(q.begin(), q.begin() + c.cols, [](uint8_t v) { return v == 0; })) << "zero row";
      // The largest magnitude of each nonzero row maps to +-448 (0x7e / 0xfe).
      for (int r = 1; r < std::min(c.rows, 4); ++r) {
        bool has_max = false;
        for (int k = 0; k < c.cols; ++k) has_max |= (q[size_t(r) * c.cols + k] & 0x7f) == 0x7e;
        EXPECT_TRUE(has_max) << dname(t) << " row " << r;
      }
    }
  }
}

// Fp8Scale::kSearch against a host search over the same 16 candidates (cuda_fp8.h's host conversion, errors
// summed in fp64): the chosen scale is one of the row's candidates bit for bit, its error is the least within
// the fp32 summation's rounding, and the codes are the host's codes for that scale. Rows drawn from a
// 16-level grid (as weights dequantized from Q4_1 blocks are) must gain: some row picks k > 0 with less
// error.
TEST_F(CudaFp8, QuantizeRowsSearchPicksTheLeastSquaredError) {
  struct Case {
    int rows, cols;
    bool grid;
  };
  for (DType t : {DType::F16, DType::BF16}) {
    for (Case c : {Case{37, 16, false}, Case{13, 4096, false}, Case{7, 11008, false}, Case{2000, 16, false},
                   Case{64, 576, true}}) {
      std::vector<float> x(size_t(c.rows) * c.cols);
      if (c.grid) {
        std::uniform_int_distribution<int> level(0, 15);
        std::uniform_real_distribution<float> scale(0.001f, 0.05f), lo(-0.3f, 0.f);
        for (int r = 0; r < c.rows; ++r) {
          const float d = scale(gen), m = lo(gen);
          for (int k = 0; k < c.cols; ++k) x[size_t(r) * c.cols + k] = m + d * float(level(gen));
        }
      } else {
        x = rand_vec(gen, x.size(), -1.f, 1.f);
        std::fill(x.begin(), x.begin() + c.cols, 0.f);  // a zero row: scale 1, codes 0
        if (c.rows > 3) {                               // an outlier row
          std::transform(x.begin() + 3 * size_t(c.cols), x.begin() + 4 * size_t(c.cols),
                         x.begin() + 3 * size_t(c.cols), [](float v) { return v * 1e-3f; });
          x[size_t(3) * c.cols + c.cols / 3] = 5.f;
        }
      }
      auto xb = quantize16(t, x);  // x now holds the stored values
      DevBuf dx(xb.size() * 2), dq(x.size()), ds(size_t(c.rows) * 4);
      dx.upload(xb.data(), xb.size() * 2);
      dq.poison();
      ds.poison();
      fp8_quantize_rows(t, dx.p, c.rows, c.cols, dq.p, ds.as<float>(), nullptr, Fp8Scale::kSearch);
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint8_t> q(x.size());
      std::vector<float> s(c.rows);
      dq.download(q.data(), q.size());
      ds.download(s.data(), s.size() * 4);
      int gained = 0, bad_scale = 0, bad_err = 0;
      size_t bad_q = 0;
      for (int r = 0; r < c.rows; ++r) {
        const float* row = x.data() + size_t(r) * c.cols;
        float amax = 0.f;
        for (int k = 0; k < c.cols; ++k) amax = std::max(amax, std::fabs(row[k]));
        const float s0 = amax > 0.f ? amax / 448.f : 1.f;
        double err[kFp8ScaleCandidates];
        int pick = -1;
        for (int k = 0; k < kFp8ScaleCandidates; ++k) {
          const float sk = s0 * kFp8ScaleSteps[k];
          err[k] = 0;
          for (int i = 0; i < c.cols; ++i) {
            const double d = double(e4m3_value(e4m3_code(row[i] / sk)) * sk) - row[i];
            err[k] += d * d;
          }
          if (float_bits(sk) == float_bits(s[r])) pick = k;
        }
        if (pick < 0) {
          ++bad_scale;
          continue;
        }
        const double best = *std::min_element(err, err + kFp8ScaleCandidates);
        bad_err += err[pick] > best * (1 + 1e-4) + 1e-30;
        gained += pick > 0 && err[pick] < err[0] * 0.99;
        for (int i = 0; i < c.cols; ++i) bad_q += q[size_t(r) * c.cols + i] != e4m3_code(row[i] / s[r]);
      }
      const std::string what =
          std::string(dname(t)) + " " + std::to_string(c.rows) + " x " + std::to_string(c.cols);
      EXPECT_EQ(bad_scale, 0) << what << ": scales that are none of the row's candidates";
      EXPECT_EQ(bad_err, 0) << what << ": rows whose chosen scale is not the least squared error";
      EXPECT_EQ(bad_q, 0u) << what;
      if (c.grid) {
        EXPECT_GT(gained, 0) << what << ": no grid row found a better scale than max / 448";
      } else {
        EXPECT_EQ(s[0], 1.f) << what << ": zero row";
      }
    }
  }
}

// add_rmsnorm_fp8 / silu_mul_fp8 against the two kernels they fuse (add_rmsnorm or silu_mul, then
// fp8_quantize_rows): the residual stream, the codes and the scales bit for bit.
TEST_F(CudaFp8, FusedNormAndSiluQuantizationsMatchTheTwoKernels) {
  for (DType t : {DType::F16, DType::BF16}) {
    for (int M : {1, 9, 300}) {
      for (int H : {576, 4096}) {
        const int I = H == 576 ? 1536 : 11008;
        auto xf = rand_vec(gen, size_t(M) * H, -3.f, 3.f), rf = rand_vec(gen, size_t(M) * H, -1.f, 1.f);
        auto wf = rand_vec(gen, size_t(H), 0.5f, 1.5f), gf = rand_vec(gen, size_t(M) * 2 * I, -6.f, 6.f);
        auto xb = quantize16(t, xf), rb = quantize16(t, rf), wb = quantize16(t, wf), gb = quantize16(t, gf);
        DevBuf x1(xb.size() * 2), x2(xb.size() * 2), r(rb.size() * 2), w(wb.size() * 2), gu(gb.size() * 2);
        DevBuf xn(xb.size() * 2), mlp(size_t(M) * I * 2);
        DevBuf q1(size_t(M) * I), q2(size_t(M) * I), s1(size_t(M) * 4), s2(size_t(M) * 4);
        x1.upload(xb.data(), xb.size() * 2);
        x2.upload(xb.data(), xb.size() * 2);
        r.upload(rb.data(), rb.size() * 2);
        w.upload(wb.data(), wb.size() * 2);
        gu.upload(gb.data(), gb.size() * 2);
        auto same = [&](const DevBuf& a, const DevBuf& b, size_t n, const char* what) {
          std::vector<uint8_t> ha(n), hb(n);
          a.download(ha.data(), n);
          b.download(hb.data(), n);
          size_t bad = 0;
          for (size_t i = 0; i < n; ++i) bad += ha[i] != hb[i];
          EXPECT_EQ(bad, 0u) << dname(t) << " M=" << M << " H=" << H << ": " << what;
        };
        for (bool residual : {false, true}) {
          add_rmsnorm(t, x1.p, residual ? r.p : nullptr, w.p, xn.p, M, H, 1e-5f, nullptr);
          fp8_quantize_rows(t, xn.p, M, H, q1.p, s1.as<float>(), nullptr);
          add_rmsnorm_fp8(t, x2.p, residual ? r.p : nullptr, w.p, M, H, 1e-5f, q2.p, s2.as<float>(), nullptr);
          CUDA_OK(cudaDeviceSynchronize());
          same(x1, x2, xb.size() * 2, "residual stream");
          same(q1, q2, size_t(M) * H, "norm codes");
          same(s1, s2, size_t(M) * 4, "norm scales");
        }
        silu_mul(t, gu.p, mlp.p, M, I, nullptr);
        fp8_quantize_rows(t, mlp.p, M, I, q1.p, s1.as<float>(), nullptr);
        silu_mul_fp8(t, gu.p, M, I, q2.p, s2.as<float>(), nullptr);
        CUDA_OK(cudaDeviceSynchronize());
        same(q1, q2, size_t(M) * I, "SiLU codes");
        same(s1, s2, size_t(M) * 4, "SiLU scales");
      }
    }
  }
}

TEST_F(CudaFp8, QuantizeRowsRejectsBadArguments) {
  DevBuf src(4096), q(4096 + 16), s(64);
  EXPECT_THROW(fp8_quantize_rows(DType::F16, src.p, 2, 24, q.p, s.as<float>(), nullptr), Error);
  EXPECT_THROW(fp8_quantize_rows(DType::F16, src.p, 2, 16, q.as<uint8_t>() + 8, s.as<float>(), nullptr),
               Error);
  EXPECT_THROW(fp8_quantize_rows(DType::F32, src.p, 2, 16, q.p, s.as<float>(), nullptr), Error);
}

// E4M3 operands with per-row scales; rows of varied magnitude so that a scale applied to the wrong row or
// column shows.
struct Fp8Operand {
  std::vector<uint8_t> q;
  std::vector<float> scale;
  std::vector<float> deq;  // E4M3 values of q (without the scale)
};
Fp8Operand make_operand(std::mt19937& gen, int rows, int cols) {
  auto v = rand_vec(gen, size_t(rows) * cols);
  for (int r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.f, r % 7 - 3);
    for (int c = 0; c < cols; ++c) v[size_t(r) * cols + c] *= mag;
  }
  Fp8Operand o;
  quantize_ref(v, rows, cols, o.q, o.scale);
  o.deq.resize(o.q.size());
  for (size_t i = 0; i < o.q.size(); ++i) o.deq[i] = e4m3_value(o.q[i]);
  return o;
}

// ref[m, n] = xscale[m] wscale[n] sum_k x[m, k] w[n, k] (fp64) and the same sum of |products| (the scale of
// the accumulation-order error) for the rows in `rows`.
void gemm_ref(const Fp8Operand& x, const Fp8Operand& w, int N, int K, const std::vector<int>& rows,
              std::vector<double>& ref, std::vector<double>& sum_abs) {
  ref.assign(rows.size() * N, 0);
  sum_abs.assign(rows.size() * N, 0);
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* xr = x.deq.data() + size_t(rows[i]) * K;
    for (int n = 0; n < N; ++n) {
      const float* wr = w.deq.data() + size_t(n) * K;
      double s = 0, a = 0;
      for (int k = 0; k < K; ++k) {
        double p = double(xr[k]) * wr[k];
        s += p;
        a += std::fabs(p);
      }
      double sc = double(x.scale[rows[i]]) * w.scale[n];
      ref[i * N + n] = s * sc;
      sum_abs[i * N + n] = a * std::fabs(sc);
    }
  }
}

TEST_F(CudaFp8, GemmMatchesDequantizedReference) {
  struct Case {
    int M, N, K;
    bool all_rows;  // else a sample of rows is checked (all are checked to be finite)
  };
  std::vector<Case> cases;
  for (int M : {1, 9, 37, 64, 512}) cases.push_back({M, 256, 512, true});
  cases.push_back({37, 11008, 4096, true});
  cases.push_back({512, 4096, 4096, false});

  DevBuf ws(32u << 20);
  LtGemm lt(ws.p, ws.n);
  bool noted = false;
  for (const Case& c : cases) {
    Fp8Operand w = make_operand(gen, c.N, c.K), x = make_operand(gen, c.M, c.K);
    std::vector<int> rows;
    for (int m = 0; m < c.M; ++m)
      if (c.all_rows || m < 2 || m % 97 == 0 || m == c.M - 1) rows.push_back(m);
    std::vector<double> ref, sum_abs;
    gemm_ref(x, w, c.N, c.K, rows, ref, sum_abs);
    DevBuf dw(w.q.size()), dws(size_t(c.N) * 4), dx(x.q.size()), dxs(size_t(c.M) * 4);
    DevBuf dy(size_t(c.M) * c.N * 4), scratch(size_t(c.M) * c.N * 4);
    dw.upload(w.q.data(), w.q.size());
    dws.upload(w.scale.data(), w.scale.size() * 4);
    dx.upload(x.q.data(), x.q.size());
    dxs.upload(x.scale.data(), x.scale.size() * 4);
    for (DType t : {DType::F16, DType::BF16})
      for (bool f32 : {true, false})
        for (bool fallback : {false, true}) {
          dy.poison();
          scratch.poison();
          lt.force_fp8_fallback(fallback);
          lt.run_fp8(t, dw.p, dws.as<float>(), dx.p, dxs.as<float>(), dy.p, f32, c.M, c.N, c.K, nullptr,
                     scratch.as<float>());
          CUDA_OK(cudaDeviceSynchronize());
          const bool outer = lt.fp8_outer_vec_used();
          if (fallback) {
            EXPECT_FALSE(outer) << "forced fallback";
          }
          if (!fallback && !outer && !noted) {
            std::printf(
                "[   NOTE   ] cuBLASLt rejected the outer-vector scale mode (M=%d N=%d K=%d %s%s): the "
                "fallback ran\n",
                c.M, c.N, c.K, dname(t), f32 ? " f32 out" : "");
            noted = true;
          }
          std::vector<float> y(size_t(c.M) * c.N);
          if (f32)
            dy.download(y.data(), y.size() * 4);
          else
            y = download16(t, dy, y.size());
          const std::string what = std::string(dname(t)) + (f32 ? " f32-out" : " act-out") +
                                   (outer ? " outer-vec" : " fallback") + " M=" + std::to_string(c.M) +
                                   " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K);
          EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](float v) { return std::isfinite(v); })) << what;
          // Per element: the output rounding (half an ulp of f16 / bf16) plus the fp32 (and the tensor
          // cores' partial-sum) accumulation-order slack, relative to the sum of |products|.
          const double out_rel = f32 ? 1e-6 : t == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
          const double acc_rel = 5e-4;
          std::vector<float> got, want;
          size_t bad = 0;
          std::string first_bad;
          for (size_t i = 0; i < rows.size(); ++i)
            for (int n = 0; n < c.N; ++n) {
              const double r = ref[i * c.N + n], g = y[size_t(rows[i]) * c.N + n];
              const double tol = out_rel * std::fabs(r) * 1.01 + 2 * acc_rel * sum_abs[i * c.N + n] + 1e-30;
              if (!(std::fabs(g - r) <= tol) && bad++ == 0)
                first_bad = "m=" + std::to_string(rows[i]) + " n=" + std::to_string(n) + " got " +
                            std::to_string(g) + " want " + std::to_string(r);
              got.push_back(float(g));
              want.push_back(float(r));
            }
          EXPECT_EQ(bad, 0u) << what << ": " << first_bad;
          EXPECT_LT(rel_l2(got, want), (f32 || t == DType::F16) ? 5e-3 : tol_rel(t)) << what;
        }
  }
  lt.force_fp8_fallback(false);
}

// Device quantization feeding the GEMM: the scales of fp8_quantize_rows line up with run_fp8's (weights per
// output channel, activations per token). Compared with the unquantized product: E4M3 keeps 3 mantissa
// bits, so a few percent.
TEST_F(CudaFp8, QuantizedLinearEndToEnd) {
  const int M = 37, N = 256, K = 512;
  DevBuf ws(32u << 20);
  LtGemm lt(ws.p, ws.n);
  for (DType t : {DType::F16, DType::BF16}) {
    auto W = rand_vec(gen, size_t(N) * K), x = rand_vec(gen, size_t(M) * K);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) W[size_t(n) * K + k] *= std::ldexp(1.f, n % 5 - 2);
    auto wb = quantize16(t, W), xb = quantize16(t, x);
    std::vector<float> ref(size_t(M) * N);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += double(x[size_t(m) * K + k]) * W[size_t(n) * K + k];
        ref[size_t(m) * N + n] = float(s);
      }
    DevBuf dW(wb.size() * 2), dx(xb.size() * 2), dWq(wb.size()), dxq(xb.size()), dws(N * 4), dxs(M * 4),
        dy(size_t(M) * N * 2), scratch(size_t(M) * N * 4);
    dW.upload(wb.data(), wb.size() * 2);
    dx.upload(xb.data(), xb.size() * 2);
    fp8_quantize_rows(t, dW.p, N, K, dWq.p, dws.as<float>(), nullptr);
    fp8_quantize_rows(t, dx.p, M, K, dxq.p, dxs.as<float>(), nullptr);
    for (bool fallback : {false, true}) {
      dy.poison();
      lt.force_fp8_fallback(fallback);
      lt.run_fp8(t, dWq.p, dws.as<float>(), dxq.p, dxs.as<float>(), dy.p, false, M, N, K, nullptr,
                 scratch.as<float>());
      CUDA_OK(cudaDeviceSynchronize());
      EXPECT_LT(rel_l2(download16(t, dy, ref.size()), ref), 0.08) << dname(t) << " fallback=" << fallback;
    }
  }
}

TEST_F(CudaFp8, GemmRejectsBadArguments) {
  DevBuf ws(32u << 20);
  LtGemm lt(ws.p, ws.n);
  const int M = 9, N = 256;
  DevBuf w(size_t(N) * 1024), x(size_t(M) * 1024), s(4096), y(size_t(M) * N * 4), scratch(size_t(M) * N * 4);
  auto run = [&](int n, int k, bool f32, float* scr) {
    lt.run_fp8(DType::BF16, w.p, s.as<float>(), x.p, s.as<float>(), y.p, f32, M, n, k, nullptr, scr);
  };
  EXPECT_THROW(run(N, 520, true, scratch.as<float>()), Error);    // K not a multiple of 16
  EXPECT_THROW(run(N, 1000, false, scratch.as<float>()), Error);  // K not a multiple of 16
  EXPECT_THROW(run(250, 512, true, scratch.as<float>()), Error);  // N not a multiple of 16
  EXPECT_THROW(run(N, 512, false, nullptr), Error);               // act output without scratch
  EXPECT_THROW(lt.run_fp8(DType::F32, w.p, s.as<float>(), x.p, s.as<float>(), y.p, true, M, N, 512, nullptr,
                          scratch.as<float>()),
               Error);
  EXPECT_THROW(lt.run_fp8(DType::F16, w.as<uint8_t>() + 4, s.as<float>(), x.p, s.as<float>(), y.p, true, M, N,
                          512, nullptr, scratch.as<float>()),
               Error);  // misaligned weights
}

}  // namespace
}  // namespace llamarun::cuda::test
