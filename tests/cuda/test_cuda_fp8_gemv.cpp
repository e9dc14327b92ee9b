// Parity tests of the decode GEMV with FP8 (E4M3) weights (GemvFusion::w_fp8_scale): every code decoded
// exactly, all batch sizes and launch variants, the fused prologues, the residual and RoPE epilogues and
// PDL, against fp64 CPU references that decode the codes with cuda_fp8.h's host conversion (NVIDIA's
// implementation) and use x as the kernel sees it (rounded to the activation type).
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "backends/cuda/kernels.h"
#include "backends/cuda/rope_freq.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

class CudaFp8Gemv : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    LLAMARUN_REQUIRE_GPU();
    int dev = 0, major = 0, minor = 0;
    ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
    ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
    ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), cudaSuccess);
    if (major * 10 + minor < 89) GTEST_SKIP() << "FP8 (E4M3) needs compute capability 8.9 or newer";
  }
  DType t() const { return GetParam(); }
  std::mt19937 gen{8989};
};

// E4M3 code of v (round to nearest even, saturated to +-448: never a NaN code for a finite v) and the value
// of a code, by cuda_fp8.h's host conversions.
uint8_t e4m3_code(float v) {
  __nv_fp8_e4m3 q(v);
  return q.__x;
}
float e4m3_value(uint8_t c) {
  __nv_fp8_e4m3 q;
  q.__x = c;
  return float(q);
}
bool e4m3_nan(uint8_t c) { return (c & 0x7f) == 0x7f; }

// E4M3 weights [N, K] with an fp32 scale per row, on the host and on the device.
struct Fp8Weights {
  int N = 0, K = 0;
  std::vector<uint8_t> codes;
  std::vector<float> w;      // the decoded codes (unscaled)
  std::vector<float> scale;  // [N]
  std::unique_ptr<DevBuf> dcodes, dscale;
  Fp8Weights(int n, int k) : N(n), K(k), codes(size_t(n) * k), w(codes.size()), scale(n) {}
  void upload() {
    for (size_t i = 0; i < codes.size(); ++i) w[i] = e4m3_value(codes[i]);
    dcodes = std::make_unique<DevBuf>(codes.size());
    dscale = std::make_unique<DevBuf>(scale.size() * 4);
    dcodes->upload(codes.data(), codes.size());
    dscale->upload(scale.data(), scale.size() * 4);
  }
  const float* dev_scale() const { return dscale->as<float>(); }
};

// Random codes over the whole E4M3 range (zeros, subnormals, saturated +-448, both signs) from random
// floats, and scales around 1/256.
Fp8Weights random_fp8(std::mt19937& g, int N, int K) {
  Fp8Weights W(N, K);
  std::uniform_real_distribution<float> e(-11.f, 9.f), s(0.5f, 2.f);
  std::bernoulli_distribution neg(0.5);
  for (auto& c : W.codes) {
    const float v = std::exp2(e(g));
    c = e4m3_code(neg(g) ? -v : v);
  }
  for (auto& sc : W.scale) sc = s(g) / 256.f;
  W.upload();
  return W;
}

// y[m, n] = scale[n] * sum_k x[m, k] w[n, k] in fp64, and mag[m, n] = |scale[n]| * sum_k |x[m, k] w[n, k]|.
struct Ref {
  std::vector<double> y, mag;
};
Ref fp8_ref(const Fp8Weights& W, const std::vector<float>& x, int M) {
  Ref r;
  r.y.resize(size_t(M) * W.N);
  r.mag.resize(r.y.size());
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < W.N; ++n) {
      double s = 0, a = 0;
      const float* wr = &W.w[size_t(n) * W.K];
      const float* xr = &x[size_t(m) * W.K];
      for (int k = 0; k < W.K; ++k) {
        const double p = double(wr[k]) * double(xr[k]);
        s += p;
        a += std::fabs(p);
      }
      r.y[size_t(m) * W.N + n] = s * W.scale[n];
      r.mag[size_t(m) * W.N + n] = a * std::fabs(double(W.scale[n]));
    }
  return r;
}

// Unit roundoff of y's type.
double unit_out(DType t, bool f32) { return f32 ? 0x1p-24 : t == DType::F16 ? 0x1p-11 : 0x1p-8; }
// One ulp of act relative to the value (a prologue's x' may be one rounding step away from the reference's).
double ulp_act(DType t) { return t == DType::F16 ? 0x1p-10 : 0x1p-7; }

// Elementwise: |got - (add + ref.y)| <= the fp32 error of the kernel (each lane's K / 32 sequential FMAs, the
// 5-level warp tree, the scale multiply and the residual add, each at most 2^-24 relative to ref.mag), plus
// xrel ref.mag (x' differences), plus the rounding into y's type, plus a floor for fp16 subnormal outputs.
// NaN (an unwritten, poisoned output) always fails.
::testing::AssertionResult close_to(const std::vector<float>& got, const Ref& r, int K, double u_out,
                                    const std::vector<float>* add = nullptr, double xrel = 0) {
  if (got.size() != r.y.size()) return ::testing::AssertionFailure() << "size " << got.size();
  const double acc = (K / 32 + 8) * 0x1p-24;
  size_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double want = r.y[i] + (add ? double((*add)[i]) : 0.0);
    const double err = (acc + xrel) * r.mag[i];
    const double tol = err + (u_out + 0x1p-24) * (std::fabs(want) + err) + 1e-7;
    if (!(std::fabs(double(got[i]) - want) <= tol)) {
      if (!bad)
        first = "at " + std::to_string(i) + ": got " + std::to_string(got[i]) + " want " +
                std::to_string(want) + " tol " + std::to_string(tol);
      ++bad;
    }
  }
  if (bad)
    return ::testing::AssertionFailure()
           << bad << " of " << got.size() << " outside tolerance, first " << first;
  return ::testing::AssertionSuccess();
}

std::vector<uint8_t> download_raw(const DevBuf& b, size_t bytes) {
  std::vector<uint8_t> h(bytes);
  b.download(h.data(), bytes);
  return h;
}
// y's raw bytes as floats (fp32, or act's 16-bit values).
std::vector<float> to_values(DType t, bool f32, const std::vector<uint8_t>& raw) {
  std::vector<float> v(raw.size() / (f32 ? 4 : 2));
  if (f32) {
    std::memcpy(v.data(), raw.data(), raw.size());
  } else {
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t b;
      std::memcpy(&b, raw.data() + 2 * i, 2);
      v[i] = from_bits(t, b);
    }
  }
  return v;
}

// x [M, K] as act on the device; `x` is rounded in place to what the kernel sees.
std::unique_ptr<DevBuf> upload_act(DType t, std::vector<float>& x) {
  auto b = quantize16(t, x);
  auto d = std::make_unique<DevBuf>(b.size() * 2);
  d->upload(b.data(), b.size() * 2);
  return d;
}

GemvFusion fp8_fusion(const Fp8Weights& W) {
  GemvFusion f;
  f.w_fp8_scale = W.dev_scale();
  return f;
}

std::string where(DType t, int M, int N, int K, bool f32) {
  return std::string(dname(t)) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
         " K=" + std::to_string(K) + " f32=" + std::to_string(f32);
}

// Every code (NaN codes excepted) times one-hot rows of x: each output is scale[n] * code value, exact in
// fp32. The hot columns cover both 8-value halves of a 16-byte weight vector, full and partial 512-value
// chunks of the staged x, and (K = 3072, M = 8: 48 KB) x read from global memory instead of staged.
TEST_P(CudaFp8Gemv, EveryCodeDecodedExactly) {
  const int N = 300;
  for (int K : {2304, 3072}) {
    Fp8Weights W(N, K);
    for (int n = 0; n < N; ++n) {
      W.scale[n] = std::ldexp(1.f + float(n % 97) / 97.f, n % 9 - 4);
      for (int k = 0; k < K; ++k) {
        uint8_t c = uint8_t((7 * n + k) & 0xff);  // every code in each column over the rows
        if (e4m3_nan(c)) c ^= 1;                  // 0x7f, 0xff -> 0x7e, 0xfe (+-448)
        W.codes[size_t(n) * K + k] = c;
      }
    }
    W.upload();
    const std::vector<int> hot = {0, 7, 8, 15, 16, 17, 520, 1039, 2047, 2048, 2056, K - 1};
    for (size_t b0 = 0; b0 < hot.size(); b0 += 8) {
      const int M = int(std::min<size_t>(8, hot.size() - b0));
      std::vector<float> x(size_t(M) * K, 0.f);
      for (int m = 0; m < M; ++m) x[size_t(m) * K + hot[b0 + m]] = 1.f;
      auto dx = upload_act(t(), x);
      DevBuf dy(size_t(M) * N * 4);
      for (bool f32 : {true, false}) {
        dy.poison();
        gemv_fused(t(), W.dcodes->p, dx->p, dy.p, f32, M, N, K, fp8_fusion(W), nullptr);
        CUDA_OK(cudaDeviceSynchronize());
        auto y = to_values(t(), f32, download_raw(dy, size_t(M) * N * (f32 ? 4 : 2)));
        int bad = 0;
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            const float e =
                W.scale[n] * W.w[size_t(n) * K + hot[b0 + m]];  // one fp32 rounding, as the kernel
            const float want = f32 ? e : round_to(t(), e);
            const float got = y[size_t(m) * N + n];
            if (!(got == want)) {
              if (bad++ < 5)
                ADD_FAILURE() << where(t(), M, N, K, f32) << " row " << m << " (k " << hot[b0 + m] << ") n "
                              << n << " code 0x" << std::hex << int(W.codes[size_t(n) * K + hot[b0 + m]])
                              << std::dec << ": got " << got << " want " << want;
            }
          }
        EXPECT_EQ(bad, 0) << where(t(), M, N, K, f32);
      }
    }
  }
}

// Random codes, M = 1..8, fp32 and act outputs, against the CPU; the persistent grid and the wide loads
// (M = 1) give bit-identical results (each lane sums the same values in the same order).
TEST_P(CudaFp8Gemv, AllBatchSizesAndLaunchVariants) {
  struct Shape {
    int N, K;
  };
  // K = 16: one vector per row; 11008 and 2064: partial steps (a step is 2048 or 4096 values); N not a
  // multiple of the rows per block (8 or 16).
  for (Shape s : {Shape{1000, 4096}, Shape{77, 11008}, Shape{515, 16}, Shape{300, 2064}}) {
    auto W = random_fp8(gen, s.N, s.K);
    for (int M = 1; M <= 8; ++M) {
      auto x = rand_vec(gen, size_t(M) * s.K);
      auto dx = upload_act(t(), x);
      const Ref ref = fp8_ref(W, x, M);
      DevBuf dy(size_t(M) * s.N * 4);
      for (bool f32 : {true, false}) {
        const size_t bytes = size_t(M) * s.N * (f32 ? 4 : 2);
        const std::string what = where(t(), M, s.N, s.K, f32);
        std::vector<uint8_t> plain;
        for (int var = 0; var < 4; ++var) {  // plain, persistent, wide, persistent + wide
          GemvFusion f = fp8_fusion(W);
          f.persistent = var & 1;
          f.wide = var & 2;
          dy.poison();
          gemv_fused(t(), W.dcodes->p, dx->p, dy.p, f32, M, s.N, s.K, f, nullptr);
          CUDA_OK(cudaDeviceSynchronize());
          auto raw = download_raw(dy, bytes);
          if (var == 0) {
            plain = raw;
            EXPECT_TRUE(close_to(to_values(t(), f32, raw), ref, s.K, unit_out(t(), f32))) << what;
          } else {
            EXPECT_TRUE(raw == plain) << "variant " << var << " differs from the plain launch, " << what;
          }
        }
      }
    }
  }
}

// add_to_y: y (fp32, or act) += scale * x W^T.
TEST_P(CudaFp8Gemv, ResidualEpilogue) {
  const int N = 1000, K = 4096;
  auto W = random_fp8(gen, N, K);
  for (int M : {1, 2, 3, 8}) {
    auto x = rand_vec(gen, size_t(M) * K);
    auto dx = upload_act(t(), x);
    const Ref ref = fp8_ref(W, x, M);
    for (bool f32 : {true, false}) {
      auto y0 = rand_vec(gen, size_t(M) * N, -5, 5);
      DevBuf dy(size_t(M) * N * 4);
      if (f32) {
        dy.upload(y0.data(), y0.size() * 4);
      } else {
        auto yb = quantize16(t(), y0);
        dy.upload(yb.data(), yb.size() * 2);
      }
      GemvFusion f = fp8_fusion(W);
      f.add_to_y = true;
      f.persistent = M == 2;
      gemv_fused(t(), W.dcodes->p, dx->p, dy.p, f32, M, N, K, f, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      auto y = to_values(t(), f32, download_raw(dy, size_t(M) * N * (f32 ? 4 : 2)));
      EXPECT_TRUE(close_to(y, ref, K, unit_out(t(), f32), &y0)) << where(t(), M, N, K, f32);
    }
  }
}

// The RMSNorm and SiLU-mul prologues: fused == the separate kernel (add_rmsnorm / silu_mul) followed by the
// FP8 GEMV, which matches the CPU on the separate kernel's output; SiLU-mul with add_to_y into act (the
// decode step's down projection).
TEST_P(CudaFp8Gemv, FusedPrologues) {
  const int N = 300, K = 2064;  // 8 rows of K values fit the 44 KB staging; partial last step and chunk
  const float eps = 1e-5f;
  auto W = random_fp8(gen, N, K);
  auto nw = rand_vec(gen, K, 0.5f, 1.5f);
  auto dnw = upload_act(t(), nw);
  for (int M : {1, 3, 8}) {
    const std::string what = where(t(), M, N, K, true);
    DevBuf dy1(size_t(M) * N * 4), dy2(size_t(M) * N * 4), dxp(size_t(M) * K * 2);
    const size_t ybytes = size_t(M) * N * 4;
    std::vector<float> xp(size_t(M) * K);  // x' as the separate kernel stored it

    // RMSNorm.
    auto x = rand_vec(gen, size_t(M) * K, -3, 3);
    auto dx = upload_act(t(), x);
    add_rmsnorm(t(), dx->p, nullptr, dnw->p, dxp.p, M, K, eps, nullptr);
    dy1.poison();
    dy2.poison();
    gemv_fused(t(), W.dcodes->p, dxp.p, dy1.p, true, M, N, K, fp8_fusion(W), nullptr);
    GemvFusion fn = fp8_fusion(W);
    fn.prologue = GemvPrologue::kRmsNorm;
    fn.norm_weight = dnw->p;
    fn.eps = eps;
    gemv_fused(t(), W.dcodes->p, dx->p, dy2.p, true, M, N, K, fn, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    xp = download16(t(), dxp, xp.size());
    Ref ref = fp8_ref(W, xp, M);
    auto y1 = to_values(t(), true, download_raw(dy1, ybytes));
    auto y2 = to_values(t(), true, download_raw(dy2, ybytes));
    EXPECT_TRUE(close_to(y1, ref, K, unit_out(t(), true))) << "separate rmsnorm, " << what;
    EXPECT_TRUE(close_to(y2, ref, K, unit_out(t(), true), nullptr, ulp_act(t())))
        << "rmsnorm prologue, " << what;
    EXPECT_LT(rel_l2(y2, y1), tol_rel(t())) << "rmsnorm prologue vs separate, " << what;

    // SiLU-mul.
    auto gu = rand_vec(gen, size_t(M) * 2 * K, -4, 4);
    auto dgu = upload_act(t(), gu);
    silu_mul(t(), dgu->p, dxp.p, M, K, nullptr);
    dy1.poison();
    dy2.poison();
    gemv_fused(t(), W.dcodes->p, dxp.p, dy1.p, true, M, N, K, fp8_fusion(W), nullptr);
    GemvFusion fs = fp8_fusion(W);
    fs.prologue = GemvPrologue::kSiluMul;
    gemv_fused(t(), W.dcodes->p, dgu->p, dy2.p, true, M, N, K, fs, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    xp = download16(t(), dxp, xp.size());
    ref = fp8_ref(W, xp, M);
    y1 = to_values(t(), true, download_raw(dy1, ybytes));
    y2 = to_values(t(), true, download_raw(dy2, ybytes));
    EXPECT_TRUE(close_to(y1, ref, K, unit_out(t(), true))) << "separate silu_mul, " << what;
    EXPECT_TRUE(close_to(y2, ref, K, unit_out(t(), true), nullptr, ulp_act(t())))
        << "silu prologue, " << what;
    EXPECT_LT(rel_l2(y2, y1), 1e-6) << "silu prologue vs separate, " << what;

    // SiLU-mul + residual add into act, persistent.
    auto y0 = rand_vec(gen, size_t(M) * N, -5, 5);
    auto dres = upload_act(t(), y0);
    fs.add_to_y = true;
    fs.persistent = true;
    gemv_fused(t(), W.dcodes->p, dgu->p, dres->p, false, M, N, K, fs, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto yr = download16(t(), *dres, size_t(M) * N);
    EXPECT_TRUE(close_to(yr, ref, K, unit_out(t(), false), &y0, ulp_act(t()))) << "silu + add, " << what;
  }
  // A fused prologue still needs x staged in shared memory.
  GemvFusion fs = fp8_fusion(W);
  fs.prologue = GemvPrologue::kSiluMul;
  EXPECT_THROW(gemv_fused(t(), W.dcodes->p, dnw->p, dnw->p, true, 8, 4, 8192, fs, nullptr), Error);
}

// The QKV GEMV's RoPE + paged-KV-append epilogue (M = 1) with FP8 weights: q and k against the CPU (the
// GEMV's output rounded to act, then rotated), v bit-identical to the plain FP8 GEMV's output, nothing else
// written to the pools (and nothing at all for slot -1).
TEST_P(CudaFp8Gemv, RopeEpilogueMatchesHostReference) {
  const int nh = 4, nkv = 2, K = 2064, bs = 16, num_blocks = 3;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (int hd : {64, 128}) {
    const int N = (nh + 2 * nkv) * hd;
    auto W = random_fp8(gen, N, K);
    auto inv = rope_inv_freq(hd, 10000.f, RopeScaling{});
    DevBuf dinv(inv.size() * 4);
    dinv.upload(inv.data(), inv.size() * 4);
    auto x = rand_vec(gen, K);
    auto dx = upload_act(t(), x);
    const Ref ref = fp8_ref(W, x, 1);
    // The plain GEMV's output (act), the unrotated reference for v.
    DevBuf dqkv(size_t(N) * 2);
    dqkv.poison();
    gemv_fused(t(), W.dcodes->p, dx->p, dqkv.p, false, 1, N, K, fp8_fusion(W), nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto qkv = download16(t(), dqkv, N);
    ASSERT_TRUE(close_to(qkv, ref, K, unit_out(t(), false))) << "plain GEMV hd=" << hd;
    for (RopeLayout lay : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
      for (int32_t slot : {1 * bs + 5, -1}) {
        for (int var = 0; var < 2; ++var) {  // plain; persistent + wide + PDL with prefetch
          const int32_t pos = 1234;
          const size_t pool_n = size_t(num_blocks) * nkv * bs * hd;
          DevBuf dpos(4), dslot(4), dq(size_t(nh) * hd * 2), dk(pool_n * 2), dv(pool_n * 2),
              dy(size_t(N) * 2);
          dpos.upload(&pos, 4);
          dslot.upload(&slot, 4);
          dq.poison();
          dk.poison();
          dv.poison();
          dy.poison();
          GemvFusion f = fp8_fusion(W);
          f.rope_layout = lay;
          f.rope_pos = dpos.as<int32_t>();
          f.rope_slot = dslot.as<int32_t>();
          f.rope_inv_freq = dinv.as<float>();
          f.rope_nh = nh;
          f.rope_nkv = nkv;
          f.rope_hd = hd;
          f.rope_block_size = bs;
          f.rope_q_out = dq.p;
          f.rope_k_pool = dk.p;
          f.rope_v_pool = dv.p;
          f.persistent = f.wide = var == 1;
          f.prefetch_bytes = var == 1 ? size_t(1) << 20 : 0;
          gemv_fused(t(), W.dcodes->p, dx->p, dy.p, false, 1, N, K, f, stream, var == 1);
          CUDA_OK(cudaStreamSynchronize(stream));
          const std::string what = std::string(dname(t())) + " hd=" + std::to_string(hd) +
                                   " interleaved=" + std::to_string(lay == RopeLayout::kInterleaved) +
                                   " slot=" + std::to_string(slot) + " variant=" + std::to_string(var);
          std::vector<float> rot(N);
          for (int i = 0; i < N; ++i) rot[i] = round_to(t(), float(ref.y[i]));
          for (int h = 0; h < nh + nkv; ++h) rope_ref(rot, size_t(h) * hd, hd, pos, inv, lay);
          auto gq = download16(t(), dq, size_t(nh) * hd);
          EXPECT_LT(rel_l2(gq, std::vector<float>(rot.begin(), rot.begin() + size_t(nh) * hd)), tol_rel(t()))
              << "q " << what;
          auto gk = download16(t(), dk, pool_n), gv = download16(t(), dv, pool_n);
          size_t finite_k = 0, finite_v = 0;
          for (size_t i = 0; i < pool_n; ++i) {
            finite_k += !std::isnan(gk[i]);
            finite_v += !std::isnan(gv[i]);
          }
          if (slot >= 0) {
            std::vector<float> ok, rk, ov, rv;
            for (int kh = 0; kh < nkv; ++kh) {
              const size_t at = ((size_t(slot / bs) * nkv + kh) * bs + slot % bs) * hd;
              for (int i = 0; i < hd; ++i) {
                ok.push_back(gk[at + i]);
                rk.push_back(rot[size_t(nh + kh) * hd + i]);
                ov.push_back(gv[at + i]);
                rv.push_back(qkv[size_t(nh + nkv + kh) * hd + i]);
              }
            }
            EXPECT_LT(rel_l2(ok, rk), tol_rel(t())) << "k " << what;
            EXPECT_EQ(rel_l2(ov, rv), 0.0) << "v as the plain GEMV stores it, " << what;
            EXPECT_EQ(finite_k, size_t(nkv) * hd) << what;
            EXPECT_EQ(finite_v, size_t(nkv) * hd) << what;
          } else {
            EXPECT_EQ(finite_k, 0u) << what;
            EXPECT_EQ(finite_v, 0u) << what;
          }
        }
      }
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

// Two FP8 GEMVs back to back on a stream, the second reading the first's output as x and adding into a
// residual: launched with programmatic dependent launch (prefetch on) == launched plainly, bit for bit,
// and right against the CPU.
TEST_P(CudaFp8Gemv, PdlLaunchBitIdentical) {
  const int K1 = 4096, N1 = 2064, N2 = 300;
  const float eps = 1e-5f;
  auto W1 = random_fp8(gen, N1, K1);
  auto W2 = random_fp8(gen, N2, N1);
  auto nw = rand_vec(gen, K1, 0.5f, 1.5f);
  auto dnw = upload_act(t(), nw);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (int M : {1, 3, 8}) {
    auto x = rand_vec(gen, size_t(M) * K1);
    auto dx = upload_act(t(), x);
    auto y0 = rand_vec(gen, size_t(M) * N2, -5, 5);
    auto dy0 = upload_act(t(), y0);
    DevBuf dy1(size_t(M) * N1 * 2), dy2(size_t(M) * N2 * 2);
    std::vector<uint8_t> raw1[2], raw2[2];
    for (int pdl = 0; pdl < 2; ++pdl) {
      dy1.poison();
      CUDA_OK(cudaMemcpyAsync(dy2.p, dy0->p, dy2.n, cudaMemcpyDeviceToDevice, stream));
      GemvFusion f1 = fp8_fusion(W1);
      if (M <= 5) {  // 5 rows of 4096 values fit the staging
        f1.prologue = GemvPrologue::kRmsNorm;
        f1.norm_weight = dnw->p;
        f1.eps = eps;
      }
      f1.persistent = true;
      f1.prefetch_bytes = size_t(4) << 20;
      GemvFusion f2 = fp8_fusion(W2);
      f2.add_to_y = true;
      f2.persistent = f2.wide = true;
      f2.prefetch_bytes = size_t(64) << 10;
      gemv_fused(t(), W1.dcodes->p, dx->p, dy1.p, false, M, N1, K1, f1, stream, pdl);
      gemv_fused(t(), W2.dcodes->p, dy1.p, dy2.p, false, M, N2, N1, f2, stream, pdl);
      CUDA_OK(cudaStreamSynchronize(stream));
      raw1[pdl] = download_raw(dy1, dy1.n);
      raw2[pdl] = download_raw(dy2, dy2.n);
    }
    const std::string what = std::string(dname(t())) + " M=" + std::to_string(M);
    EXPECT_TRUE(raw1[1] == raw1[0]) << "first GEMV, PDL vs plain, " << what;
    EXPECT_TRUE(raw2[1] == raw2[0]) << "second GEMV, PDL vs plain, " << what;
    // Not vacuous: the second GEMV against the CPU on the first's output.
    auto y1 = to_values(t(), false, raw1[0]);
    EXPECT_TRUE(close_to(to_values(t(), false, raw2[0]), fp8_ref(W2, y1, M), N1, unit_out(t(), false), &y0))
        << what;
    if (M > 5) {
      EXPECT_TRUE(close_to(y1, fp8_ref(W1, x, M), K1, unit_out(t(), false))) << what;
    } else {  // x' = rmsnorm(x) * w rounded to act, from fp64 sums (each x' within an ulp of the kernel's)
      std::vector<float> xn(x.size());
      for (int m = 0; m < M; ++m) {
        double ss = 0;
        for (int k = 0; k < K1; ++k) ss += double(x[size_t(m) * K1 + k]) * x[size_t(m) * K1 + k];
        const double inv = 1.0 / std::sqrt(ss / K1 + eps);
        for (int k = 0; k < K1; ++k)
          xn[size_t(m) * K1 + k] = round_to(t(), float(x[size_t(m) * K1 + k] * inv * nw[k]));
      }
      EXPECT_TRUE(close_to(y1, fp8_ref(W1, xn, M), K1, unit_out(t(), false), nullptr, ulp_act(t()))) << what;
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST_P(CudaFp8Gemv, RejectsKNotMultipleOf16) {
  auto W = random_fp8(gen, 8, 32);
  DevBuf dx(64), dy(64);
  EXPECT_THROW(gemv_fused(t(), W.dcodes->p, dx.p, dy.p, true, 1, 8, 24, fp8_fusion(W), nullptr), Error);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaFp8Gemv, ::testing::Values(DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(dname(i.param));
                         });

}  // namespace
}  // namespace llamarun::cuda::test
