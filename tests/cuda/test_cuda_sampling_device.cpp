// GPU argmax / top-k / top-p sampling against a CPU reference; device selection and memory errors;
// RoPE inverse frequencies (host code, runs without a GPU).
#include <algorithm>
#include <numeric>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rope_freq.h"
#include "backends/cuda/sampling_rng.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

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

// CPU reference of the sampler: same kept set (top-k then top-p over sorted probabilities), inverse CDF
// in index order with uniform u.
struct CpuPick {
  int token;
  std::vector<char> kept;
};
CpuPick cpu_sample(const std::vector<float>& logits, float temp, int top_k, float top_p, float u) {
  int V = int(logits.size());
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  int k = (top_k > 0 && top_k < V) ? top_k : V;
  double mx = logits[order[0]] / temp;
  std::vector<double> w(V);
  for (int i = 0; i < V; ++i) w[i] = std::exp(logits[i] / temp - mx);
  double zk = 0;
  for (int i = 0; i < k; ++i) zk += w[order[i]];
  int keep = k;
  if (top_p < 1.f) {
    double c = 0;
    for (int i = 0; i < k; ++i) {
      c += w[order[i]];
      if (c >= top_p * zk) {
        keep = i + 1;
        break;
      }
    }
  }
  CpuPick r{-1, std::vector<char>(V, 0)};
  double z = 0;
  for (int i = 0; i < keep; ++i) {
    r.kept[order[i]] = 1;
    z += w[order[i]];
  }
  double target = double(u) * z, c = 0;
  for (int i = 0; i < V; ++i)
    if (r.kept[i]) {
      r.token = i;
      c += w[i];
      if (target < c) break;
    }
  return r;
}

TEST(CudaSampling, ArgmaxAndTopKTopP) {
  LLAMARUN_REQUIRE_GPU();
  std::mt19937 gen(7);
  const int V = 32000;
  auto logits = rand_vec(gen, V, -8, 8);
  logits[12345] = 9.5f;
  DevBuf dl(V * 4), dout(4), dctr(8);
  dl.upload(logits.data(), V * 4);
  uint64_t zero = 0;
  dctr.upload(&zero, 8);
  int32_t tok = -1;
  argmax(dl.as<float>(), V, dout.as<int32_t>(), nullptr);
  dout.download(&tok, 4);
  EXPECT_EQ(tok, 12345);
  // temperature 0 and top_k 1 are argmax too.
  sample_top_k_top_p(dl.as<float>(), V, 0.f, 0, 1.f, 1, dctr.as<uint64_t>(), dout.as<int32_t>(), nullptr);
  dout.download(&tok, 4);
  EXPECT_EQ(tok, 12345);
  sample_top_k_top_p(dl.as<float>(), V, 1.f, 1, 1.f, 1, dctr.as<uint64_t>(), dout.as<int32_t>(), nullptr);
  dout.download(&tok, 4);
  EXPECT_EQ(tok, 12345);

  struct P {
    float temp;
    int k;
    float p;
  };
  for (P prm : {P{1.f, 0, 1.f}, P{0.7f, 40, 1.f}, P{1.f, 0, 0.9f}, P{1.3f, 100, 0.8f}, P{0.5f, 5, 0.5f}}) {
    const uint64_t seed = 99;
    dctr.upload(&zero, 8);
    int same = 0, in_set = 0;
    const int draws = 200;
    for (int d = 0; d < draws; ++d) {
      sample_top_k_top_p(dl.as<float>(), V, prm.temp, prm.k, prm.p, seed, dctr.as<uint64_t>(),
                         dout.as<int32_t>(), nullptr);
      dout.download(&tok, 4);
      CpuPick ref = cpu_sample(logits, prm.temp, prm.k, prm.p, sample_uniform(seed, uint64_t(d)));
      ASSERT_GE(tok, 0);
      ASSERT_LT(tok, V);
      same += tok == ref.token;
      in_set += ref.kept[tok];
    }
    uint64_t ctr = 0;
    dctr.download(&ctr, 8);
    EXPECT_EQ(ctr, uint64_t(draws));
    EXPECT_EQ(in_set, draws) << "temp " << prm.temp << " k " << prm.k << " p " << prm.p;
    EXPECT_GE(same, draws * 95 / 100) << "temp " << prm.temp << " k " << prm.k << " p " << prm.p;
  }
}

}  // namespace
}  // namespace llamarun::cuda::test
