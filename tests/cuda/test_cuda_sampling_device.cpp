// The GPU argmax; device selection and memory errors;
// RoPE inverse frequencies (host code, runs without a GPU).
#include <algorithm>
#include <numeric>

#include "../error_util.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rope_freq.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

using testutil::error_of;

TEST(CudaDevice, MalformedSpecIsRejectedWithoutGpu) {
  EXPECT_NE(error_of([] { parse_device("gpu:0"); }).find("expected 'cuda' or 'cuda:N'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_device("cuda:x"); }).find("expected"), std::string::npos);
}

TEST(CudaDevice, BadIndexSaysHowManyDevices) {
  std::string e = error_of([] { parse_device("cuda:97"); });
  if (device_count() == 0)
    EXPECT_NE(e.find("no CUDA GPU"), std::string::npos) << e;
  else
    EXPECT_NE(e.find("present"), std::string::npos) << e;
}

TEST(CudaDevice, OutOfMemoryErrorsSayNeededAndFree) {
  LLAMARUN_REQUIRE_GPU();
  set_device(0);
  std::string e = error_of([] { require_fits(size_t(1) << 50, "test model"); });
  EXPECT_NE(e.find("test model needs"), std::string::npos) << e;
  EXPECT_NE(e.find("free"), std::string::npos) << e;
  DeviceAllocator a;
  e = error_of([&] { a.alloc(size_t(1) << 50, "huge buffer"); });
  EXPECT_NE(e.find("huge buffer"), std::string::npos) << e;
  EXPECT_NE(e.find("needed"), std::string::npos) << e;
  void* p = a.alloc(1 << 20, "small");
  EXPECT_EQ(a.allocated(), size_t(1) << 20);
  a.free(p);
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.peak(), size_t(1) << 20);
  DeviceInfo di = device_info(0);
  EXPECT_GT(di.sm_count, 0);
}

TEST(CudaDevice, CudaErrorsBecomeLlamarunErrors) {
  LLAMARUN_REQUIRE_GPU();
  // Argument guards name the kernel's constraint.
  std::string e = error_of([] { silu_mul(DType::F32, nullptr, nullptr, 1, 8, nullptr); });
  EXPECT_NE(e.find("f16 or bf16"), std::string::npos) << e;
  e = error_of([] { gemv(DType::F16, nullptr, nullptr, nullptr, false, 9, 8, 8, nullptr); });
  EXPECT_NE(e.find("1..8"), std::string::npos) << e;
  // A CUDA runtime failure becomes an Error naming the call and the CUDA error name.
  e = error_of(
      [] { LLAMARUN_CUDA_CHECK(cudaMemcpy(nullptr, reinterpret_cast<void*>(16), 64, cudaMemcpyDefault)); });
  EXPECT_NE(e.find("cudaMemcpy"), std::string::npos) << e;
  EXPECT_NE(e.find("cudaError"), std::string::npos) << e;
  cudaGetLastError();
}

TEST(RopeFreq, DefaultAndLlama3MatchTransformersFormulas) {
  // Default: inv_freq[i] = theta^(-2i/d).
  auto f = rope_inv_freq(128, 10000.f, RopeScaling{});
  EXPECT_FLOAT_EQ(f[0], 1.f);
  EXPECT_NEAR(f[1], std::pow(10000.0, -2.0 / 128), 1e-7);
  EXPECT_NEAR(f[63], std::pow(10000.0, -126.0 / 128), 1e-9);
  RopeScaling lin;
  lin.type = RopeScaling::Type::kLinear;
  lin.factor = 4;
  EXPECT_NEAR(rope_inv_freq(128, 10000.f, lin)[5], std::pow(10000.0, -10.0 / 128) / 4, 1e-8);
  // Llama 3.1 parameters: theta 500000, factor 8, low 1, high 4, original 8192.
  RopeScaling l3;
  l3.type = RopeScaling::Type::kLlama3;
  l3.factor = 8;
  l3.low_freq_factor = 1;
  l3.high_freq_factor = 4;
  l3.original_max_position = 8192;
  auto g = rope_inv_freq(128, 500000.f, l3);
  auto base = rope_inv_freq(128, 500000.f, RopeScaling{});
  for (int i = 0; i < 64; ++i) {
    double wl = 2 * M_PI / base[i];
    if (wl < 8192.0 / 4) {
      EXPECT_FLOAT_EQ(g[i], base[i]) << i;  // high frequency: unchanged
    } else if (wl > 8192.0) {
      EXPECT_FLOAT_EQ(g[i], base[i] / 8) << i;  // low frequency: divided by factor
    } else {
      double smooth = (8192.0 / wl - 1) / (4 - 1);
      double want = (1 - smooth) * base[i] / 8 + smooth * base[i];
      EXPECT_NEAR(g[i], want, 1e-6 * want) << i;
    }
  }
  EXPECT_FLOAT_EQ(g[63], base[63] / 8);
  EXPECT_FLOAT_EQ(g[0], 1.f);
}

TEST(CudaSampling, Argmax) {
  LLAMARUN_REQUIRE_GPU();
  std::mt19937 gen(7);
  const int V = 32000;
  auto logits = rand_vec(gen, V, -8, 8);
  logits[12345] = 9.5f;
  DevBuf dl(V * 4), dout(4);
  dl.upload(logits.data(), V * 4);
  int32_t tok = -1;
  argmax(dl.as<float>(), V, dout.as<int32_t>(), nullptr);
  dout.download(&tok, 4);
  EXPECT_EQ(tok, 12345);
  // Ties: the lowest index; NaN never wins.
  logits[20000] = 9.5f;
  logits[3] = NAN;
  dl.upload(logits.data(), V * 4);
  argmax(dl.as<float>(), V, dout.as<int32_t>(), nullptr);
  dout.download(&tok, 4);
  EXPECT_EQ(tok, 12345);
}

}  // namespace
}  // namespace llamarun::cuda::test
