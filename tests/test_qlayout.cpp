// The GPU layout of quantized weights (backends/cuda/qlayout.h), checked on the host: GGML blocks repacked by
// qgpu::pack_rows and read back unit by unit with the decoders the CUDA kernels run (qgpu::Dec, compiled
// here for the host) give the CPU reference dequantizer's values (core/dequant_ref, itself checked against
// the `gguf` package's); the bytes are those of the file, reordered; the grouped order of Q8_0 quants and of
// the GEMV's int8 activations (qx_off) is a permutation of each row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backends/cuda/qlayout.h"
#include "core/dtype.h"
#include "ops/matmul.h"

using namespace llamarun;

namespace {

template <DType QT>
void check_type(int rows, int cols, uint32_t seed) {
  using D = qgpu::Dec<QT>;
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> w(size_t(rows) * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = nd(g) * (i % 61 == 0 ? 5.f : 1.f) * float(1 + (i / cols) % 3);
  const size_t rb = dtype_row_bytes(QT, cols);
  std::vector<uint8_t> blocks(rb * rows);
  std::vector<float> ref(w.size());
  for (int r = 0; r < rows; ++r) {
    quantize_row(QT, w.data() + size_t(r) * cols, blocks.data() + r * rb, cols);
    dequantize_row(QT, blocks.data() + r * rb, ref.data() + size_t(r) * cols, cols);
  }
  const int nb = cols / D::kBlock, units = cols / 32;
  ASSERT_EQ(size_t(nb) * (D::kPayload + D::kHeader), rb) << dtype_name(QT) << ": the layout changes the size";
  const size_t pay_bytes = size_t(rows) * nb * D::kPayload;
  std::vector<uint8_t> packed(blocks.size(), 0xAB);
  qgpu::pack_rows(QT, blocks.data(), rows, cols, packed.data(), packed.data() + pay_bytes);
  // Same multiset of bytes for the types stored byte for byte; the k-quants' nibbles are reordered.
  if (QT == DType::Q8_0 || QT == DType::Q4_0 || QT == DType::Q4_1) {
    std::vector<uint8_t> a = blocks, b = packed;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << dtype_name(QT);
  }
  int bad = 0;
  for (int r = 0; r < rows; ++r) {
    const uint8_t* p = packed.data() + size_t(r) * nb * D::kPayload;
    const uint8_t* h = packed.data() + pay_bytes + size_t(r) * nb * D::kHeader;
    for (int u = 0; u < units; ++u) {
      int q[8];
      float a[2], b;
      D::run(p, h, units, u, q, a, b);
      for (int k = 0; k < 32; ++k) {
        const int v = int(int8_t(uint32_t(q[k >> 2]) >> (8 * (k & 3))));
        const float got = a[k >> 4] * float(v) + b;
        const float want = ref[size_t(r) * cols + 32 * u + k];
        // The reference may multiply the two scales in another order: a few units in the last place.
        if (!(std::fabs(got - want) <= 1e-6f * std::fabs(want) + 1e-6f) && bad++ < 5)
          ADD_FAILURE() << dtype_name(QT) << " row " << r << " value " << 32 * u + k << ": " << got << " vs "
                        << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << dtype_name(QT);
}

// cols: one short group of units (24), and one full group of 32 plus a short one of 8 (40 units).
TEST(GpuQuantLayout, DecodersReadBackTheReferenceValues) {
  for (int cols : {768, 1280}) {
    check_type<DType::Q8_0>(5, cols, 1);
    check_type<DType::Q4_0>(5, cols, 2);
    check_type<DType::Q4_1>(5, cols, 3);
    check_type<DType::Q4_K>(5, cols, 4);
    check_type<DType::Q5_K>(5, cols, 5);
    check_type<DType::Q6_K>(5, cols, 6);
  }
}

TEST(GpuQuantLayout, GroupedOrderIsAPermutationOfEachRow) {
  for (int units : {1, 8, 24, 32, 40, 344}) {
    std::vector<int> seen(size_t(units) * 32, 0);
    for (int u = 0; u < units; ++u)
      for (int h = 0; h < 2; ++h) {
        const int o = qgpu::qx_off(u, units, h);
        ASSERT_EQ(o % 16, 0);
        ASSERT_LE(o + 16, units * 32) << "unit " << u << " of " << units;
        for (int i = 0; i < 16; ++i) ++seen[size_t(o + i)];
      }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; })) << units << " units";
    // The lanes of a warp (units 32 g .. 32 g + 31) read one contiguous span per half.
    for (int u = 1; u < std::min(units, 32); ++u)
      EXPECT_EQ(qgpu::qx_off(u, units, 0), qgpu::qx_off(u - 1, units, 0) + 16);
  }
}

TEST(GpuQuantLayout, OtherTypesAreRefusedByName) {
  std::vector<uint8_t> b(1024), p(1024), h(1024);
  EXPECT_FALSE(qgpu::block_bytes(DType::Q2_K, nullptr, nullptr));
  try {
    qgpu::pack_rows(DType::IQ4_XS, b.data(), 1, 256, p.data(), h.data());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dtype_name(DType::IQ4_XS)), std::string::npos) << e.what();
  }
}

}  // namespace
