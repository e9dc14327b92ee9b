// The GGML block formats beyond Q8_0/Q4_0/Q4_1: reference dequantisers against the `gguf` Python
// package (tests/fixtures/quant/quant_blocks.json, made by tools/make_quant_vectors.py), and the
// int8-activation matmul (backends/cpu/qdot.h) at every SIMD level against the scalar integer
// reference (tight) and against the exact product of the dequantised weights (bounded by the
// activation rounding error).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/qdot.h"
#include "core/dequant_ref.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/fp16.h"
#include "ops/matmul.h"

using namespace llamarun;

namespace {

struct TypeInfo {
  const char* name;
  DType t;
  std::vector<int> f16_offsets;  // byte offsets of the f16 scale fields in a block
};

const std::vector<TypeInfo>& all_types() {
  static const std::vector<TypeInfo> v = {
      {"Q8_0", DType::Q8_0, {0}},   {"Q4_0", DType::Q4_0, {0}},     {"Q4_1", DType::Q4_1, {0, 2}},
      {"Q5_0", DType::Q5_0, {0}},   {"Q5_1", DType::Q5_1, {0, 2}},  {"Q2_K", DType::Q2_K, {80, 82}},
      {"Q3_K", DType::Q3_K, {108}}, {"Q4_K", DType::Q4_K, {0, 2}},  {"Q5_K", DType::Q5_K, {0, 2}},
      {"Q6_K", DType::Q6_K, {208}}, {"IQ4_NL", DType::IQ4_NL, {0}}, {"IQ4_XS", DType::IQ4_XS, {0}},
  };
  return v;
}

std::vector<uint8_t> from_hex(const std::string& h) {
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  return out;
}

TEST(QuantFormats, DequantizeMatchesGgufPackage) {
  std::ifstream f(std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/quant/quant_blocks.json");
  ASSERT_TRUE(f.good());
  const auto j = nlohmann::json::parse(f);
  ASSERT_EQ(j.at("format_version").get<int>(), 1);
  int checked = 0;
  for (const TypeInfo& ti : all_types()) {
    SCOPED_TRACE(ti.name);
    ASSERT_TRUE(j.at("types").contains(ti.name));
    for (const auto& e : j.at("types").at(ti.name)) {
      SCOPED_TRACE(e.at("name").get<std::string>());
      const std::vector<uint8_t> bytes = from_hex(e.at("bytes_hex").get<std::string>());
      const auto want = e.at("dequantized").get<std::vector<float>>();
      const int64_t n = int64_t(want.size());
      ASSERT_EQ(bytes.size(), dtype_row_bytes(ti.t, n));
      std::vector<float> got(size_t(n), -1.f);
      dequantize_row(ti.t, bytes.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        // numpy evaluates the same f32 products in the same order: equal up to an ulp.
        ASSERT_NEAR(got[size_t(i)], want[size_t(i)], 1e-6f * std::fabs(want[size_t(i)]) + 1e-30f)
            << "value " << i;
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
}

TEST(QuantFormats, Q8KDequantize) {
  BlockQ8_K b{};
  b.d = 0.5f;
  for (int i = 0; i < 256; ++i) b.qs[i] = int8_t(i - 128);
  std::vector<float> out(256);
  dequantize_row(DType::Q8_K, &b, out.data(), 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(out[size_t(i)], 0.5f * float(i - 128));
}

// Random valid blocks: random bytes with the f16 scales replaced by finite values of either sign.
std::vector<uint8_t> random_weights(const TypeInfo& ti, int64_t N, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t bytes = dtype_row_bytes(ti.t, K) * size_t(N);
  std::vector<uint8_t> w(bytes);
  for (auto& b : w) b = uint8_t(rng());
  std::uniform_real_distribution<float> mag(0.001f, 0.05f);
  const size_t bb = dtype_block_bytes(ti.t);
  for (size_t b = 0; b < bytes / bb; ++b)
    for (int off : ti.f16_offsets) {
      const uint16_t h = f32_to_f16((rng() & 1 ? 1.f : -1.f) * mag(rng));
      std::memcpy(w.data() + b * bb + size_t(off), &h, 2);
    }
  return w;
}

std::vector<cpu::SimdLevel> levels() {
  std::vector<cpu::SimdLevel> v;
  for (int l = 0; l <= int(cpu::detected_simd_level()); ++l) v.push_back(cpu::SimdLevel(l));
  return v;
}

// Every level's dot for every type (including the types matmul keeps on f32 activations) against the
// scalar integer reference, and against the exact product of the dequantised weights with x: the
// activation rounding moves each x_k by at most amax(block) / 254.
// The word-wise unpacking of the SIMD kernels gives the per-sub-block reference's values.
TEST(QuantDot, KQuantScalesMinsWordsMatchPerSubBlock) {
  std::mt19937 g(9);
  for (int t = 0; t < 2000; ++t) {
    uint8_t s[12], out[16];
    for (auto& b : s) b = uint8_t(t < 256 ? (t * 37 + (&b - s) * 11) : g());  // then random bytes
    k4_scales_mins(s, out);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k4_scale_min(s, j, &sc, &m);
      ASSERT_EQ(out[j], sc) << "scale " << j << " pattern " << t;
      ASSERT_EQ(out[8 + j], m) << "min " << j << " pattern " << t;
    }
  }
}

TEST(QuantDot, EveryTypeEveryLevel) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const TypeInfo& ti : all_types()) {
    SCOPED_TRACE(ti.name);
    const int64_t K = 512, N = 9;
    const auto w = random_weights(ti, N, K, 11);
    const WeightView wv{ti.t, N, K, w.data()};
    std::vector<float> x(static_cast<size_t>(K));
    for (auto& v : x) v = nd(rng);
    x[5] = 9.f;  // an outlier in the first block
    std::vector<uint8_t> act(cpu::qdot_act_row_bytes(ti.t, K));
    cpu::quantize_act_row(ti.t, x.data(), act.data(), K);
    std::vector<float> wrow(static_cast<size_t>(K));
    for (int64_t n = 0; n < N; ++n) {
      dequantize_row(ti.t, wv.row(n), wrow.data(), K);
      double exact = 0, mag = 0, bound = 0;
      const int64_t ab = cpu::qdot_act_type(ti.t) == DType::Q8_K ? 256 : 32;
      for (int64_t b = 0; b < K; b += ab) {
        double amax = 0;
        for (int64_t k = b; k < b + ab; ++k) amax = std::max(amax, std::fabs(double(x[size_t(k)])));
        for (int64_t k = b; k < b + ab; ++k) {
          exact += double(wrow[size_t(k)]) * x[size_t(k)];
          mag += std::fabs(double(wrow[size_t(k)]) * x[size_t(k)]);
          bound += std::fabs(double(wrow[size_t(k)])) * amax / 254.0;
        }
      }
      const float ref = cpu::kernels_for(cpu::SimdLevel::kScalar).qdot(ti.t).one(K, wv.row(n), act.data());
      EXPECT_NEAR(ref, exact, 1.01 * bound + 1e-5 * mag) << "row " << n;
      for (cpu::SimdLevel l : levels()) {
        const cpu::QDot qd = cpu::kernels_for(l).qdot(ti.t);
        const float got = qd.one(K, wv.row(n), act.data());
        EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-30) << "row " << n << " level " << cpu::simd_level_str(l);
        if (qd.rows) {  // the multi-row kernel: every row bit-identical to the one-row dot
          std::vector<uint8_t> acts;
          for (int r = 0; r < cpu::kQDotRows; ++r) acts.insert(acts.end(), act.begin(), act.end());
          float outs[2 * cpu::kQDotRows];
          qd.rows(K, wv.row(n), acts.data(), act.size(), outs, 2);
          for (int r = 0; r < cpu::kQDotRows; ++r) EXPECT_EQ(outs[2 * r], got) << "row " << n << " m " << r;
        }
      }
    }
  }
}

// The prefill tile kernels (QDot::tile, where a level has one), over distinct activation rows (one with
// an outlier, one all zero) and weight rows at a stride larger than a row: every (weight row,
// activation row) result within f32 summation error of the scalar reference, and bit-identical to the
// level's one-row dot where the tile says so (QTile::exact).
TEST(QuantDot, TileMatchesOneRowDot) {
  std::mt19937 rng(19);
  std::normal_distribution<float> nd(0.f, 1.f);
  int tiles_checked = 0;
  for (const TypeInfo& ti : all_types()) {
    SCOPED_TRACE(ti.name);
    const int64_t K = 1536, N = 16, Mt = 16;  // N: twice the widest tile
    const auto w = random_weights(ti, N, K, 23);
    const WeightView wv{ti.t, N, K, w.data()};
    const size_t arb = cpu::qdot_act_row_bytes(ti.t, K);
    std::vector<uint8_t> acts(arb * Mt);
    for (int m = 0; m < Mt; ++m) {
      std::vector<float> x(static_cast<size_t>(K));
      for (auto& v : x) v = m == 2 ? 0.f : nd(rng) * float(m + 1);
      if (m == 1) x[300] = 40.f;
      cpu::quantize_act_row(ti.t, x.data(), acts.data() + size_t(m) * arb, K);
    }
    for (cpu::SimdLevel l : levels())
      for (bool free_tile : {false, true}) {
        cpu::QDot qd = cpu::kernels_for(l).qdot(ti.t);
        if (free_tile) qd.tile = qd.free_tile;  // the free-order tile (QDot::free_tile), where there is one
        if (!qd.tile.fn) continue;
        SCOPED_TRACE(free_tile ? "free_tile" : "tile");
        ASSERT_LE(2 * qd.tile.n, N);
        ASSERT_LE(qd.tile.m, Mt);
        SCOPED_TRACE(cpu::simd_level_str(l));
        // Weight rows 0, 2, 4, ... (stride two rows); out rows of stride 11.
        const size_t ostride = 11;
        std::vector<float> out(ostride * size_t(qd.tile.m), -1.f);
        size_t wstride = 2 * dtype_row_bytes(ti.t, K);
        const void* w = wv.row(0);
        std::vector<uint8_t> prepped;
        if (qd.tile.prep) {  // the tile reads its weight rows decoded
          prepped.resize(qd.tile.prep_bytes(K));
          qd.tile.prep(K, w, wstride, prepped.data());
          w = prepped.data();
          wstride = 0;
        }
        if (qd.tile.pack) {  // the tile reads its activation rows packed
          std::vector<uint8_t> packed(qd.tile.packed_bytes(K));
          qd.tile.pack(K, acts.data(), arb, packed.data());
          qd.tile.fn(K, w, wstride, packed.data(), 0, out.data(), ostride);
        } else {
          qd.tile.fn(K, w, wstride, acts.data(), arb, out.data(), ostride);
        }
        for (int m = 0; m < qd.tile.m; ++m)
          for (int r = 0; r < qd.tile.n; ++r) {
            const float want = qd.one(K, wv.row(2 * r), acts.data() + size_t(m) * arb);
            if (qd.tile.exact) {
              EXPECT_EQ(out[size_t(m) * ostride + size_t(r)], want) << "m " << m << " r " << r;
            }
            // And within the f32 summation error of the scalar reference.
            const uint8_t* am = acts.data() + size_t(m) * arb;
            const float ref = cpu::kernels_for(cpu::SimdLevel::kScalar).qdot(ti.t).one(K, wv.row(2 * r), am);
            std::vector<float> wd(static_cast<size_t>(K)), ad(static_cast<size_t>(K));
            dequantize_row(ti.t, wv.row(2 * r), wd.data(), K);
            if (cpu::qdot_act_type(ti.t) == DType::Q8_K) {
              dequantize_row(DType::Q8_K, am, ad.data(), K);
            } else {
              const auto* b = reinterpret_cast<const cpu::BlockQ8A32*>(am);
              for (int64_t k = 0; k < K; ++k) ad[size_t(k)] = b[k / 32].d * float(b[k / 32].qs[k % 32]);
            }
            double mag = 0;
            for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(wd[size_t(k)]) * ad[size_t(k)]);
            EXPECT_NEAR(out[size_t(m) * ostride + size_t(r)], ref, 1e-5 * mag + 1e-30)
                << "m " << m << " r " << r;
          }
        ++tiles_checked;
      }
  }
  // The AVX-512 VNNI level has tiles for Q4_K, Q6_K, IQ4_XS and the six 32-value block types, and free-order
  // tiles for IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K; the AVX2 level the six and the five.
  if (cpu::detected_simd_level() >= cpu::SimdLevel::kAvx512 && __builtin_cpu_supports("avx512vnni")) {
    EXPECT_GE(tiles_checked, 9 + 5 + 6 + 5);
  } else if (cpu::detected_simd_level() >= cpu::SimdLevel::kAvx2) {
    EXPECT_GE(tiles_checked, 6 + 5);
  }
}

// matmul on the int8 path: each level against the scalar level (tight) and against matmul_ref, and a
// row's result independent of M (batch invariance).
TEST(QuantMatmul, ParityAndBatchInvariance) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const TypeInfo& ti : all_types()) {
    if (!cpu::qdot_uses_int8(ti.t, 1, true, true, false)) continue;
    SCOPED_TRACE(ti.name);
    const int64_t K = dtype_block_size(ti.t) == 256 ? 768 : 96, N = 37;
    const auto w = random_weights(ti, N, K, 5);
    const WeightView wv{ti.t, N, K, w.data()};
    for (int64_t M : {1, 3, 7, 9, 15, 33}) {
      std::vector<float> x(static_cast<size_t>(M * K));
      for (auto& v : x) v = nd(rng);
      std::vector<float> ref(static_cast<size_t>(M * N)), scal(static_cast<size_t>(M * N)),
          got(static_cast<size_t>(M * N)), one(static_cast<size_t>(N));
      matmul_ref(wv, x.data(), M, ref.data());
      MatmulOptions inv;
      inv.batch_invariant = true;
      inv.int8_activations = true;
      matmul_at_level(cpu::SimdLevel::kScalar, wv, x.data(), M, scal.data(), inv);
      std::vector<float> wrow(static_cast<size_t>(K));
      std::vector<double> mag(size_t(M * N), 0.0), bnd(size_t(M * N), 0.0);  // sum |w x|
      for (int64_t n = 0; n < N; ++n) {
        dequantize_row(ti.t, wv.row(n), wrow.data(), K);
        for (int64_t m = 0; m < M; ++m) {
          double s = 0, b = 0;
          for (int64_t k = 0; k < K; ++k) {
            s += std::fabs(double(wrow[size_t(k)]) * x[size_t(m * K + k)]);
            b += std::fabs(double(wrow[size_t(k)])) * std::fabs(double(x[size_t(m * K + k)]));
          }
          mag[size_t(m * N + n)] = s;
          bnd[size_t(m * N + n)] = b;
        }
      }
      for (cpu::SimdLevel l : levels()) {
        SCOPED_TRACE(cpu::simd_level_str(l));
        matmul_at_level(l, wv, x.data(), M, got.data(), inv);
        for (int64_t i = 0; i < M * N; ++i) {
          ASSERT_NEAR(got[size_t(i)], scal[size_t(i)], 1e-5 * mag[size_t(i)] + 1e-30)
              << "M=" << M << " i=" << i;
          // Normal activations: a block's amax is a few times a typical |x|, so the rounding error
          // (at most sum |w| amax / 254) stays within a small multiple of sum |w||x| / 127.
          ASSERT_NEAR(got[size_t(i)], ref[size_t(i)], 4.0 * bnd[size_t(i)] / 127.0)
              << "M=" << M << " i=" << i;
        }
        // Row 0 alone gives the same bits as row 0 in the batch.
        matmul_at_level(l, wv, x.data(), 1, one.data(), inv);
        for (int64_t n = 0; n < N; ++n) ASSERT_EQ(one[size_t(n)], got[size_t(n)]) << "M=" << M << " n=" << n;
        // Without batch invariance (where tiles that sum in their own order may run): the same bound, where
        // the int8 path still runs (Q8_0 / Q4_0 / Q4_1 take the f32 GEMM above 8 rows, except at a level
        // whose tile decodes each weight row once).
        MatmulOptions free;
        free.int8_activations = true;
        if (!cpu::qdot_uses_int8(ti.t, M, false, true, cpu::kernels_for(l).qdot(ti.t).tile.prep != nullptr))
          continue;
        matmul_at_level(l, wv, x.data(), M, got.data(), free);
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_NEAR(got[size_t(i)], scal[size_t(i)], 1e-5 * mag[size_t(i)] + 1e-30)
              << "free order M=" << M << " i=" << i;
      }
    }
  }
}

TEST(QuantMatmul, KQuantColumnsMustBeSuperBlocks) {
  std::vector<uint8_t> w(sizeof(BlockQ4_K) * 2);
  const WeightView wv{DType::Q4_K, 1, 288, w.data()};  // 288 is a multiple of 32, not of 256
  float x[288] = {}, y[1];
  EXPECT_THROW(matmul(wv, x, 1, y), Error);
}

}  // namespace
