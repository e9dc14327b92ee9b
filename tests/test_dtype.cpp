#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/fp16.h"

using namespace llamarun;

TEST(Fp16, KnownValues) {
  // IEEE half bit patterns from the standard.
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_FLOAT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(f16_to_f32(0x0001), 5.960464477539063e-08f);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(bf16_to_f32(0x4049), 3.140625f);
}

TEST(Fp16, RoundTripAllHalves) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << h;
  }
}

TEST(Quant, RoundTripErrorBounded) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(256), y(256);
  for (auto& v : x) v = nd(rng);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    std::vector<uint8_t> buf(dtype_row_bytes(t, 256));
    quantize_row(t, x.data(), buf.data(), 256);
    dequantize_row(t, buf.data(), y.data(), 256);
    for (int b = 0; b < 8; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      // step is amax/127 (q8), amax/8 (q4_0), range/15 (q4_1): error at most about one step.
      float tol = t == DType::Q8_0 ? amax / 127 : amax / 4;
      for (int j = 0; j < 32; ++j) EXPECT_NEAR(y[b * 32 + j], x[b * 32 + j], tol) << dtype_name(t);
    }
  }
}
