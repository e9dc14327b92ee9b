// The GPU's quantized-weight kernels (qgemv.cu) against the CPU reference dequantizers (core/dequant_ref,
// checked against the `gguf` package's): the split-layout dequantization per type, and the int8-activation
// GEMV (with its RMSNorm / SiLU-mul prologues and residual-add epilogue) against an fp64 product of the
// dequantized weights with x, within the error bound of quantizing x to int8 per 32 values.
#include <cmath>
#include <tuple>

#include "backends/cuda/kernels.h"
#include "core/dtype.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// A random rows x cols matrix quantized to t (GGML blocks) and its dequantized values.
struct HostQ {
  std::vector<uint8_t> blocks;
  std::vector<float> deq;
};
HostQ make_q(DType t, int rows, int cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> w = rand_vec(g, size_t(rows) * cols);
  // Rows of different magnitude and a few outliers, so the block scales differ.
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      w[size_t(r) * cols + c] *= 0.05f * float(1 + r % 7) * (c % 97 == 0 ? 4 : 1);
  HostQ h;
  const size_t rb = dtype_row_bytes(t, cols);
  h.blocks.resize(rb * rows);
  h.deq.resize(size_t(rows) * cols);
  for (int r = 0; r < rows; ++r) {
    quantize_row(t, w.data() + size_t(r) * cols, h.blocks.data() + r * rb, cols);
    dequantize_row(t, h.blocks.data() + r * rb, h.deq.data() + size_t(r) * cols, cols);
  }
  return h;
}

// The device copy in the split layout.
std::unique_ptr<DevBuf> upload_q(DType t, const HostQ& h, int rows, int cols, QMatrix* m) {
  const size_t bytes = qmatrix_bytes(t, rows, cols);
  EXPECT_EQ(bytes, h.blocks.size());
  std::vector<uint8_t> packed(bytes);
  QLayout l;
  EXPECT_TRUE(qlayout(t, &l));
  const size_t pay = size_t(rows) * (cols / l.block) * l.payload;
  qpack_rows(t, h.blocks.data(), rows, cols, packed.data(), packed.data() + pay);
  auto d = std::make_unique<DevBuf>(bytes);
  d->upload(packed.data(), bytes);
  m->type = t;
  m->data = d->p;
  m->rows = rows;
  m->cols = cols;
  return d;
}

class QuantKernelTest : public ::testing::TestWithParam<std::tuple<DType, DType>> {
 protected:
  void SetUp() override { LLAMARUN_REQUIRE_GPU(); }
  DType qt() const { return std::get<0>(GetParam()); }
  DType act() const { return std::get<1>(GetParam()); }
};

TEST_P(QuantKernelTest, DequantizeEqualsReferenceRounded) {
  const int rows = 37, cols = 512;
  HostQ h = make_q(qt(), rows, cols, 7);
  QMatrix m;
  auto w = upload_q(qt(), h, rows, cols, &m);
  for (bool staged : {true, false}) {
    DevBuf out(size_t(rows) * cols * 2);
    out.poison();
    qdequant(act(), m, out.p, nullptr, staged);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> got = download16(act(), out, size_t(rows) * cols);
    // The GPU computes scale * q + offset in fp32 where the reference may order it differently: one unit in
    // the last place of the activation dtype at most.
    const float ulp = act() == DType::F16 ? 1.f / 1024 : 1.f / 128;
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const float ref = round_to(act(), h.deq[i]);
      if (!(std::fabs(got[i] - ref) <= ulp * std::fabs(ref) + 1e-7f) && bad++ < 5)
        ADD_FAILURE() << dtype_name(qt()) << " value " << i << ": " << got[i] << " vs " << ref
                      << (staged ? " (staged stores)" : "");
    }
    EXPECT_EQ(bad, 0);
  }
}

// The prologue applied on the host as the GPU applies it (values rounded to act where the separate kernels
// would store them): none, RMSNorm (x [M, K], weight w) or SiLU-mul (x [M, 2K]).
std::vector<float> apply_prologue(DType act, GemvPrologue pro, const std::vector<float>& x,
                                  const std::vector<float>& w, int M, int K, float eps) {
  std::vector<float> out(size_t(M) * K);
  for (int m = 0; m < M; ++m) {
    if (pro == GemvPrologue::kSiluMul) {
      for (int k = 0; k < K; ++k) {
        const double g = x[size_t(m) * 2 * K + k], u = x[size_t(m) * 2 * K + K + k];
        out[size_t(m) * K + k] = round_to(act, float(g / (1 + std::exp(-g)) * u));
      }
      continue;
    }
    double ss = 0;
    for (int k = 0; k < K; ++k) ss += double(x[size_t(m) * K + k]) * x[size_t(m) * K + k];
    const double inv = pro == GemvPrologue::kRmsNorm ? 1 / std::sqrt(ss / K + eps) : 1;
    for (int k = 0; k < K; ++k) {
      const float v = x[size_t(m) * K + k];
      out[size_t(m) * K + k] = pro == GemvPrologue::kRmsNorm ? round_to(act, float(v * inv * w[k])) : v;
    }
  }
  return out;
}

struct GemvCase {
  GemvPrologue pro;
  bool add, y_f32;
  int M;
};

// qgemv of an N x K matrix of type qt against the fp64 product, each case eight times: each block staging
// x itself, x quantized beforehand by qquantize_x, that with the 4-blocks-per-SM instantiation (M = 1),
// that as one resident wave of blocks, that with x copied into shared memory, the 4-blocks-per-SM
// instantiation unpacking the quants at load, and 2 and 4 rows per warp (M = 1).
void check_gemv(DType qt, DType act, int N, int K, const std::vector<GemvCase>& cases) {
  const int ldy = N + 5;  // y wider than N
  HostQ h = make_q(qt, N, K, 11);
  QMatrix m;
  auto w = upload_q(qt, h, N, K, &m);
  const float eps = 1e-5f;
  std::mt19937 gw(5);
  std::vector<float> nw = rand_vec(gw, K, 0.5f, 1.5f);
  std::vector<uint16_t> nwb = quantize16(act, nw);
  DevBuf dnw(nwb.size() * 2);
  dnw.upload(nwb.data(), nwb.size() * 2);
  DevBuf dxq(qx_bytes(8, K));
  for (int pre = 0; pre < 8; ++pre)
    for (const GemvCase& c : cases) {
      const int M = c.M;
      const int xw = c.pro == GemvPrologue::kSiluMul ? 2 * K : K;
      std::mt19937 g(100 + M + 10 * int(c.pro));
      std::vector<float> x = rand_vec(g, size_t(M) * xw, -2.f, 2.f);
      std::vector<uint16_t> xb = quantize16(act, x);  // x rounded to act, as the model holds it
      const std::vector<float> xp = apply_prologue(act, c.pro, x, nw, M, K, eps);
      DevBuf dx(xb.size() * 2);
      dx.upload(xb.data(), xb.size() * 2);
      const size_t ysz = c.y_f32 ? 4 : 2;
      DevBuf dy(size_t(M) * ldy * ysz);
      dy.poison();
      std::vector<float> y0(size_t(M) * ldy, 0.f);
      if (c.add) {  // y starts as a residual stream, in act (or f32 for an f32 output)
        std::vector<float> r = rand_vec(g, y0.size());
        y0 = r;
        if (c.y_f32) {
          dy.upload(r.data(), r.size() * 4);
        } else {
          std::vector<uint16_t> rb = quantize16(act, r);
          dy.upload(rb.data(), rb.size() * 2);
        }
      }
      QGemvFusion f;
      f.prologue = c.pro;
      f.norm_weight = dnw.p;
      f.eps = eps;
      f.add_to_y = c.add;
      f.y_f32 = c.y_f32;
      f.ldy = ldy;
      if (pre) {
        qquantize_x(act, dx.p, M, K, f, dxq.p, nullptr);
        f.xq8 = dxq.p;
        f.prologue = GemvPrologue::kNone;  // ignored with xq8: applied by qquantize_x
        f.norm_weight = nullptr;
      }
      f.occupancy4 = pre >= 2;
      f.resident = pre == 3 || pre == 4;
      f.x_smem = pre == 4;
      f.decode_at_load = pre == 5;
      f.rows_per_warp = pre == 6 ? 2 : pre == 7 ? 4 : 0;
      qgemv(act, m, dx.p, dy.p, M, f, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> y(size_t(M) * ldy);
      if (c.y_f32)
        dy.download(y.data(), y.size() * 4);
      else
        y = download16(act, dy, y.size());
      const double out_ulp = c.y_f32 ? 0 : (act == DType::F16 ? 1.0 / 1024 : 1.0 / 128);
      int bad = 0;
      for (int r = 0; r < M; ++r) {
        for (int n = 0; n < N; ++n) {
          double ref = 0, bound = 0, mag = 0;
          for (int k0 = 0; k0 < K; k0 += 32) {
            float amax = 0;
            for (int k = k0; k < k0 + 32; ++k) amax = std::max(amax, std::fabs(xp[size_t(r) * K + k]));
            for (int k = k0; k < k0 + 32; ++k) {
              const double wv = h.deq[size_t(n) * K + k], xv = xp[size_t(r) * K + k];
              ref += wv * xv;
              mag += std::fabs(wv * xv);
              bound += std::fabs(wv) * amax / 127 / 2;  // x's int8 rounding: half a step per value
            }
          }
          const double base = c.add ? y0[size_t(r) * ldy + n] : 0;
          ref += base;
          // fp32 accumulation and scale products, and the output's rounding to act.
          const double tol = 1.0001 * bound + 1e-5 * (mag + std::fabs(base)) + out_ulp * std::fabs(ref);
          const double got = y[size_t(r) * ldy + n];
          if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
            ADD_FAILURE() << dtype_name(qt) << " " << N << " x " << K << " prologue " << int(c.pro) << " add "
                          << c.add << " M " << M << " row " << r << " n " << n << (c.y_f32 ? " f32" : "")
                          << (pre == 7   ? " pre-quantized x, 4 rows per warp"
                              : pre == 6 ? " pre-quantized x, 2 rows per warp"
                              : pre == 5 ? " pre-quantized x, occupancy 4, decoded at load"
                              : pre == 4 ? " pre-quantized x, occupancy 4, resident, x in shared memory"
                              : pre == 3 ? " pre-quantized x, occupancy 4, resident"
                              : pre == 2 ? " pre-quantized x, occupancy 4"
                              : pre      ? " pre-quantized x"
                                         : " staged x")
                          << ": " << got << " vs " << ref << " (tolerance " << tol << ")";
        }
        if (!c.add) {
          for (int n = N; n < ldy; ++n)  // untouched past N
            EXPECT_TRUE(std::isnan(y[size_t(r) * ldy + n])) << "column " << n << " written";
        }
      }
      EXPECT_EQ(bad, 0);
    }
}

TEST_P(QuantKernelTest, GemvMatchesFp64ProductWithinInt8Bound) {
  const std::vector<GemvCase> cases = {
      {GemvPrologue::kNone, false, false, 1},   {GemvPrologue::kNone, false, true, 3},
      {GemvPrologue::kNone, false, false, 8},   {GemvPrologue::kNone, false, true, 2},
      {GemvPrologue::kRmsNorm, false, true, 1}, {GemvPrologue::kRmsNorm, true, false, 5},
      {GemvPrologue::kSiluMul, true, false, 1}, {GemvPrologue::kSiluMul, false, false, 4}};
  // 75 rows: not a multiple of the 8 rows per block. 768 columns: 24 units of 32 values per row, fewer
  // than a warp's lanes; 5376: 168 units, more than one batch of 4 per lane, with a short last group.
  check_gemv(qt(), act(), 75, 768, cases);
  check_gemv(qt(), act(), 75, 5376, {cases[0], cases[2], cases[5], cases[6]});
}

// More rows than one wave of staging blocks (4 per SM): the warps of the staged and resident kernels take
// several rows, loading the next row's first weights before finishing the current one.
TEST_P(QuantKernelTest, GemvCoversRowsBeyondOneWave) {
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  check_gemv(qt(), act(), 4 * sms * 8 * 2 + 13, 512,
             {{GemvPrologue::kRmsNorm, false, false, 1}, {GemvPrologue::kNone, true, true, 3}});
}

INSTANTIATE_TEST_SUITE_P(Types, QuantKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kTypes),
                                            ::testing::Values(DType::F16, DType::BF16)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  dname(std::get<1>(info.param));
                         });

TEST(QuantKernels, LayoutsAndErrors) {
  QLayout l;
  EXPECT_TRUE(qlayout(DType::Q4_K, &l));
  EXPECT_EQ(l.payload + l.header, 144);
  EXPECT_TRUE(qlayout(DType::Q6_K, &l));
  EXPECT_EQ(l.payload + l.header, 210);
  EXPECT_FALSE(qlayout(DType::Q2_K));
  EXPECT_FALSE(qlayout(DType::F16));
  EXPECT_THROW(qmatrix_bytes(DType::IQ4_XS, 1, 256), Error);
  for (DType t : kTypes) EXPECT_EQ(qmatrix_bytes(t, 3, 512), 3 * dtype_row_bytes(t, 512)) << dtype_name(t);
  if (!cuda_available()) return;
  QMatrix m;
  m.type = DType::Q4_K;
  m.rows = 4;
  m.cols = 100;  // not a multiple of 256
  DevBuf b(4096);
  m.data = b.p;
  try {
    qdequant(DType::F16, m, b.p, nullptr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 256"), std::string::npos) << e.what();
  }
  m.cols = 256;
  EXPECT_THROW(qgemv(DType::F16, m, b.p, b.p, 9, QGemvFusion{}, nullptr), Error);
  QGemvFusion no_weight;
  no_weight.prologue = GemvPrologue::kRmsNorm;
  EXPECT_THROW(qgemv(DType::F16, m, b.p, b.p, 1, no_weight, nullptr), Error);
  EXPECT_THROW(qquantize_x(DType::F16, b.p, 1, 256, no_weight, b.p, nullptr), Error);
  EXPECT_THROW(qquantize_x(DType::F16, b.p, 1, 100, QGemvFusion{}, b.p, nullptr), Error);  // K % 32
  EXPECT_THROW(qquantize_x(DType::F16, b.p, 1, 256, QGemvFusion{}, static_cast<char*>(b.p) + 4, nullptr),
               Error);  // misaligned output
}

}  // namespace
}  // namespace llamarun::cuda::test
