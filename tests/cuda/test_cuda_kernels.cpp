// Parity tests: each CUDA kernel against a plain CPU reference, for fp16 and bf16.
#include <algorithm>
#include <numeric>

#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rope_freq.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

class CudaKernel : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { LLAMARUN_REQUIRE_GPU(); }
  DType t() const { return GetParam(); }
  std::mt19937 gen{1234};
};

TEST_P(CudaKernel, Embedding) {
  const int V = 300, H = 264, M = 5;
  auto table = rand_vec(gen, size_t(V) * H);
  auto tb = quantize16(t(), table);
  std::vector<int32_t> ids = {0, 299, 17, -1, 300};  // last two out of range -> zero rows
  DevBuf dt(tb.size() * 2), di(ids.size() * 4), dout(size_t(M) * H * 2);
  dt.upload(tb.data(), tb.size() * 2);
  di.upload(ids.data(), ids.size() * 4);
  dout.poison();
  embedding(t(), di.as<int32_t>(), M, dt.p, V, H, dout.p, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  auto out = download16(t(), dout, size_t(M) * H);
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < H; ++i) {
      float want = (ids[m] >= 0 && ids[m] < V) ? table[size_t(ids[m]) * H + i] : 0.f;
      ASSERT_EQ(out[size_t(m) * H + i], want) << "row " << m << " col " << i;
    }
}

TEST_P(CudaKernel, AddRmsNorm) {
  for (bool with_res : {false, true}) {
    const int M = 3, H = 4096;
    const float eps = 1e-5f;
    auto x = rand_vec(gen, size_t(M) * H, -2, 2), r = rand_vec(gen, size_t(M) * H),
         w = rand_vec(gen, H, 0.5, 1.5);
    auto xb = quantize16(t(), x), rb = quantize16(t(), r), wb = quantize16(t(), w);
    DevBuf dx(xb.size() * 2), dr(rb.size() * 2), dw(wb.size() * 2), dout(xb.size() * 2);
    dx.upload(xb.data(), xb.size() * 2);
    dr.upload(rb.data(), rb.size() * 2);
    dw.upload(wb.data(), wb.size() * 2);
    dout.poison();
    add_rmsnorm(t(), dx.p, with_res ? dr.p : nullptr, dw.p, dout.p, M, H, eps, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto out = download16(t(), dout, xb.size());
    auto xnew = download16(t(), dx, xb.size());
    std::vector<float> ref_out(out.size()), ref_x(out.size());
    for (int m = 0; m < M; ++m) {
      double ss = 0;
      for (int i = 0; i < H; ++i) {
        size_t k = size_t(m) * H + i;
        ref_x[k] = with_res ? round_to(t(), x[k] + r[k]) : x[k];
        ss += double(ref_x[k]) * ref_x[k];
      }
      double inv = 1.0 / std::sqrt(ss / H + eps);
      for (int i = 0; i < H; ++i) {
        size_t k = size_t(m) * H + i;
        ref_out[k] = float(ref_x[k] * inv * w[i]);
      }
    }
    EXPECT_EQ(rel_l2(xnew, ref_x), 0.0) << "residual stream, " << dname(t());
    EXPECT_LT(rel_l2(out, ref_out), tol_rel(t())) << dname(t()) << " residual=" << with_res;
  }
}

TEST_P(CudaKernel, SiluMul) {
  const int M = 4, I = 1000;
  auto gu = rand_vec(gen, size_t(M) * 2 * I, -4, 4);
  auto gb = quantize16(t(), gu);
  DevBuf dg(gb.size() * 2), dout(size_t(M) * I * 2);
  dg.upload(gb.data(), gb.size() * 2);
  dout.poison();
  silu_mul(t(), dg.p, dout.p, M, I, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  auto out = download16(t(), dout, size_t(M) * I);
  std::vector<float> ref(out.size());
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < I; ++i) {
      double g = gu[size_t(m) * 2 * I + i], u = gu[size_t(m) * 2 * I + I + i];
      ref[size_t(m) * I + i] = float(g / (1 + std::exp(-g)) * u);
    }
  EXPECT_LT(rel_l2(out, ref), tol_rel(t()));
}

// The float conversions at load (the block types' GPU dequantization: test_cuda_quant.cpp).
TEST_P(CudaKernel, ConvertToActivationType) {
  const int64_t n = 32 * 70;
  auto src = rand_vec(gen, n, -3, 3);
  for (DType st : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<uint8_t> raw(dtype_row_bytes(st, n));
    quantize_row(st, src.data(), raw.data(), n);
    std::vector<float> ref(n);
    dequantize_row(st, raw.data(), ref.data(), n);  // the CPU reference dequantisation
    DevBuf dsrc(raw.size()), dout(n * 2);
    dsrc.upload(raw.data(), raw.size());
    dout.poison();
    convert_to_act(t(), st, dsrc.p, dout.p, n, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto out = download16(t(), dout, n);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = round_to(t(), ref[i]);
      // Exact up to one rounding step of the target type.
      float ulp = std::max(std::fabs(want), 1e-3f) * (t() == DType::F16 ? 1.f / 1024 : 1.f / 128);
      if (!(std::fabs(out[i] - want) <= ulp)) ++bad;
    }
    EXPECT_EQ(bad, 0) << dtype_name(st) << " -> " << dname(t());
  }
  DevBuf b(4096);
  EXPECT_THROW(convert_to_act(t(), DType::Q8_0, b.p, b.p, 64, nullptr), Error);
}

void gemv_ref(const std::vector<float>& W, const std::vector<float>& x, int M, int N, int K,
              std::vector<float>& y) {
  y.assign(size_t(M) * N, 0.f);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(W[size_t(n) * K + k]) * x[size_t(m) * K + k];
      y[size_t(m) * N + n] = float(s);
    }
}

TEST_P(CudaKernel, GemvAllBatchSizes) {
  struct Shape {
    int N, K;
  };
  for (Shape s : {Shape{1000, 4096}, Shape{77, 11008}, Shape{64, 64}, Shape{515, 136}}) {
    auto W = rand_vec(gen, size_t(s.N) * s.K);
    auto wb = quantize16(t(), W);
    DevBuf dW(wb.size() * 2);
    dW.upload(wb.data(), wb.size() * 2);
    for (int M = 1; M <= 8; ++M) {
      if (s.K == 11008 && M != 1 && M != 2 && M != 8) continue;  // keep the CPU reference quick
      auto x = rand_vec(gen, size_t(M) * s.K);
      auto xb = quantize16(t(), x);
      std::vector<float> ref;
      gemv_ref(W, x, M, s.N, s.K, ref);
      DevBuf dx(xb.size() * 2), dy(size_t(M) * s.N * 4);
      dx.upload(xb.data(), xb.size() * 2);
      for (bool f32 : {true, false}) {
        dy.poison();
        gemv(t(), dW.p, dx.p, dy.p, f32, M, s.N, s.K, nullptr);
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> y(size_t(M) * s.N);
        if (f32)
          dy.download(y.data(), y.size() * 4);
        else
          y = download16(t(), dy, y.size());
        double tol = f32 ? 5e-5 : tol_rel(t());
        EXPECT_LT(rel_l2(y, ref), tol) << "M=" << M << " N=" << s.N << " K=" << s.K << " f32=" << f32;
      }
    }
  }
}

TEST_P(CudaKernel, GemvFusedProloguesAndResidualEpilogue) {
  const int N = 300, K = 1024;
  const float eps = 1e-5f;
  auto W = rand_vec(gen, size_t(N) * K);
  auto wb = quantize16(t(), W);
  auto nw = rand_vec(gen, K, 0.5f, 1.5f);
  auto nwb = quantize16(t(), nw);
  DevBuf dW(wb.size() * 2), dnw(nwb.size() * 2);
  dW.upload(wb.data(), wb.size() * 2);
  dnw.upload(nwb.data(), nwb.size() * 2);
  for (int M : {1, 3, 8}) {
    // RMSNorm prologue == add_rmsnorm (no residual) followed by the plain GEMV.
    auto x = rand_vec(gen, size_t(M) * K, -3, 3);
    auto xb = quantize16(t(), x);
    DevBuf dx(xb.size() * 2), dxn(xb.size() * 2), dy1(size_t(M) * N * 4), dy2(size_t(M) * N * 4);
    dx.upload(xb.data(), xb.size() * 2);
    add_rmsnorm(t(), dx.p, nullptr, dnw.p, dxn.p, M, K, eps, nullptr);
    dy1.poison();
    dy2.poison();
    gemv(t(), dW.p, dxn.p, dy1.p, true, M, N, K, nullptr);
    GemvFusion fn{GemvPrologue::kRmsNorm, dnw.p, eps, false};
    gemv_fused(t(), dW.p, dx.p, dy2.p, true, M, N, K, fn, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> y1(size_t(M) * N), y2(y1.size());
    dy1.download(y1.data(), y1.size() * 4);
    dy2.download(y2.data(), y2.size() * 4);
    EXPECT_LT(rel_l2(y2, y1), tol_rel(t())) << "rmsnorm prologue M=" << M;

    // SiLU-mul prologue == silu_mul followed by the plain GEMV (same arithmetic).
    auto gu = rand_vec(gen, size_t(M) * 2 * K, -4, 4);
    auto gub = quantize16(t(), gu);
    DevBuf dgu(gub.size() * 2), dact(size_t(M) * K * 2);
    dgu.upload(gub.data(), gub.size() * 2);
    silu_mul(t(), dgu.p, dact.p, M, K, nullptr);
    dy1.poison();
    dy2.poison();
    gemv(t(), dW.p, dact.p, dy1.p, true, M, N, K, nullptr);
    GemvFusion fs{GemvPrologue::kSiluMul, nullptr, 0.f, false};
    gemv_fused(t(), dW.p, dgu.p, dy2.p, true, M, N, K, fs, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    dy1.download(y1.data(), y1.size() * 4);
    dy2.download(y2.data(), y2.size() * 4);
    EXPECT_LT(rel_l2(y2, y1), 1e-6) << "silu prologue M=" << M;

    // Residual epilogue: y (act dtype) += x W^T, against the CPU.
    auto y0 = rand_vec(gen, size_t(M) * N, -5, 5);
    auto y0b = quantize16(t(), y0);
    DevBuf dyr(y0b.size() * 2);
    dyr.upload(y0b.data(), y0b.size() * 2);
    GemvFusion fa{GemvPrologue::kNone, nullptr, 0.f, true};
    gemv_fused(t(), dW.p, dx.p, dyr.p, false, M, N, K, fa, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> ref;
    gemv_ref(W, x, M, N, K, ref);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    EXPECT_LT(rel_l2(download16(t(), dyr, ref.size()), ref), tol_rel(t())) << "residual epilogue M=" << M;
  }
  // A fused prologue needs x staged in 48 KB of shared memory.
  GemvFusion fs{GemvPrologue::kSiluMul, nullptr, 0.f, false};
  EXPECT_THROW(gemv_fused(t(), dW.p, dW.p, dW.p, true, 8, 4, 8192, fs, nullptr), Error);
}

TEST_P(CudaKernel, GemmCublasLt) {
  DevBuf ws(32u << 20);
  LtGemm lt(ws.p, ws.n);
  const int N = 300, K = 512;
  auto W = rand_vec(gen, size_t(N) * K);
  auto wb = quantize16(t(), W);
  DevBuf dW(wb.size() * 2);
  dW.upload(wb.data(), wb.size() * 2);
  for (int M : {9, 64, 200}) {
    auto x = rand_vec(gen, size_t(M) * K);
    auto xb = quantize16(t(), x);
    std::vector<float> ref;
    gemv_ref(W, x, M, N, K, ref);
    DevBuf dx(xb.size() * 2), dy(size_t(M) * N * 4);
    dx.upload(xb.data(), xb.size() * 2);
    for (bool f32 : {false, true}) {
      dy.poison();
      linear(lt, t(), dW.p, dx.p, dy.p, f32, M, N, K, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> y(size_t(M) * N);
      if (f32)
        dy.download(y.data(), y.size() * 4);
      else
        y = download16(t(), dy, y.size());
      EXPECT_LT(rel_l2(y, ref), f32 ? 1e-4 : tol_rel(t())) << "M=" << M << " f32=" << f32;
    }
  }
}

struct AttnCase {
  int nh, nkv, hd;
};

// decode_attention reads K / V through a shuffled block table of a paged pool ([blocks][nkv][bs][hd]); the
// reference attends over the same values laid out contiguously. Unused pool slots hold NaN: never read.
TEST_P(CudaKernel, DecodeAttentionSplitKPaged) {
  const int max_ctx = 4096;
  for (AttnCase c : {AttnCase{8, 2, 128}, AttnCase{4, 4, 64}, AttnCase{8, 1, 64}, AttnCase{6, 2, 128},
                     AttnCase{4, 2, 32}, AttnCase{4, 4, 16}}) {
    const float scale = 1.f / std::sqrt(float(c.hd));
    size_t cache_n = size_t(c.nkv) * max_ctx * c.hd;
    auto kc = rand_vec(gen, cache_n, -2, 2), vc = rand_vec(gen, cache_n);
    auto kb = quantize16(t(), kc), vb = quantize16(t(), vc);
    for (int bs : {16, 48}) {
      const int nblk = (max_ctx + bs - 1) / bs, pool_blocks = nblk + 3;
      std::vector<int32_t> table(pool_blocks);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), gen);
      table.resize(nblk);
      const size_t pool_n = size_t(pool_blocks) * c.nkv * bs * c.hd;
      const uint16_t nan_bits = t() == DType::F16 ? 0x7e00 : 0x7fc0;
      std::vector<uint16_t> kp(pool_n, nan_bits), vp(pool_n, nan_bits);
      for (int kh = 0; kh < c.nkv; ++kh)
        for (int p = 0; p < max_ctx; ++p) {
          const size_t src = (size_t(kh) * max_ctx + p) * c.hd;
          const size_t dst = ((size_t(table[p / bs]) * c.nkv + kh) * bs + p % bs) * c.hd;
          std::copy(kb.begin() + src, kb.begin() + src + c.hd, kp.begin() + dst);
          std::copy(vb.begin() + src, vb.begin() + src + c.hd, vp.begin() + dst);
        }
      DevBuf dk(pool_n * 2), dv(pool_n * 2), dtab(table.size() * 4);
      dk.upload(kp.data(), pool_n * 2);
      dv.upload(vp.data(), pool_n * 2);
      dtab.upload(table.data(), table.size() * 4);
      for (int sms : {132, 4}) {  // many splits, and few (long chunks per block)
        DecodeAttnPlan plan = make_decode_attn_plan(c.nkv, max_ctx, sms);
        DevBuf po(decode_attn_partial_floats(plan, c.nh, c.hd) * 4),
            ps(decode_attn_stats_floats(plan, c.nh) * 4);
        for (int len : {1, 7, 47, 64, 65, 1000, 4096}) {
          auto q = rand_vec(gen, size_t(c.nh) * c.hd);
          auto qb = quantize16(t(), q);
          int32_t p = len - 1;
          DevBuf dq(qb.size() * 2), dpos(4), dout(qb.size() * 2);
          dq.upload(qb.data(), qb.size() * 2);
          dpos.upload(&p, 4);
          dout.poison();
          decode_attention(t(), dq.p, dk.p, dv.p, dtab.as<int32_t>(), bs, dpos.as<int32_t>(), c.nh, c.nkv,
                           c.hd, max_ctx, scale, plan, po.as<float>(), ps.as<float>(), dout.p, nullptr);
          CUDA_OK(cudaDeviceSynchronize());
          auto out = download16(t(), dout, qb.size());
          std::vector<float> ref(qb.size());
          int G = c.nh / c.nkv;
          for (int h = 0; h < c.nh; ++h)
            attend_ref(&q[size_t(h) * c.hd], kc, vc, h / G, max_ctx, c.hd, len, scale,
                       &ref[size_t(h) * c.hd]);
          const std::string what = "nh=" + std::to_string(c.nh) + " nkv=" + std::to_string(c.nkv) +
                                   " hd=" + std::to_string(c.hd) + " bs=" + std::to_string(bs) +
                                   " len=" + std::to_string(len) + " splits=" + std::to_string(plan.splits);
          EXPECT_LT(rel_l2(out, ref), tol_rel(t())) << what;
          // Fused merge (last block per kv head), twice: the counters must be back at zero after each launch.
          DevBuf cnt(sizeof(int) * c.nkv);
          CUDA_OK(cudaMemset(cnt.p, 0, sizeof(int) * c.nkv));
          for (int rep = 0; rep < 2; ++rep) {
            dout.poison();
            decode_attention(t(), dq.p, dk.p, dv.p, dtab.as<int32_t>(), bs, dpos.as<int32_t>(), c.nh, c.nkv,
                             c.hd, max_ctx, scale, plan, po.as<float>(), ps.as<float>(), dout.p, nullptr,
                             false, cnt.as<int>());
            CUDA_OK(cudaDeviceSynchronize());
            auto out2 = download16(t(), dout, qb.size());
            EXPECT_LT(rel_l2(out2, ref), tol_rel(t())) << "fused merge, launch " << rep << " " << what;
          }
        }
      }
    }
  }
}

TEST_P(CudaKernel, PrefillAttentionCausal) {
  const int max_ctx = 512;
  for (AttnCase c : {AttnCase{8, 2, 128}, AttnCase{4, 4, 64}, AttnCase{4, 2, 32}, AttnCase{2, 2, 16},
                     AttnCase{8, 1, 64}}) {
    for (int start : {0, 50}) {
      for (int M : {1, 37, 100, 200}) {
        const float scale = 1.f / std::sqrt(float(c.hd));
        size_t cache_n = size_t(c.nkv) * max_ctx * c.hd;
        auto kc = rand_vec(gen, cache_n, -2, 2), vc = rand_vec(gen, cache_n);
        auto kb = quantize16(t(), kc), vb = quantize16(t(), vc);
        // Positions past start+M-1 hold NaN: the kernel must never read them.
        for (size_t kh = 0; kh < size_t(c.nkv); ++kh)
          for (size_t p = start + M; p < size_t(max_ctx); ++p)
            for (int i = 0; i < c.hd; ++i)
              kb[(kh * max_ctx + p) * c.hd + i] = vb[(kh * max_ctx + p) * c.hd + i] = 0x7fff;
        auto q = rand_vec(gen, size_t(M) * c.nh * c.hd);
        auto qb = quantize16(t(), q);
        DevBuf dk(cache_n * 2), dv(cache_n * 2), dq(qb.size() * 2), dout(qb.size() * 2);
        dk.upload(kb.data(), cache_n * 2);
        dv.upload(vb.data(), cache_n * 2);
        dq.upload(qb.data(), qb.size() * 2);
        dout.poison();
        prefill_attention(t(), dq.p, dk.p, dv.p, M, start, c.nh, c.nkv, c.hd, max_ctx, scale, dout.p,
                          nullptr);
        CUDA_OK(cudaDeviceSynchronize());
        auto out = download16(t(), dout, qb.size());
        std::vector<float> ref(qb.size());
        int G = c.nh / c.nkv;
        for (int m = 0; m < M; ++m)
          for (int h = 0; h < c.nh; ++h) {
            size_t off = (size_t(m) * c.nh + h) * c.hd;
            attend_ref(&q[off], kc, vc, h / G, max_ctx, c.hd, start + m + 1, scale, &ref[off]);
          }
        EXPECT_LT(rel_l2(out, ref), tol_rel(t()))
            << "nh=" << c.nh << " hd=" << c.hd << " start=" << start << " M=" << M;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKernel, ::testing::Values(DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(dname(i.param));
                         });

}  // namespace
}  // namespace llamarun::cuda::test
