// AWQ / GPTQ int4 checkpoints (repacked into Q4_1 at load, formats/hf_int4.h) on the GPU: CudaLlama's
// logits (decode path, every prompt position; prefill, last position) against the CPU LlamaModel on the
// same repacked weights (tests/fixtures/awq_gptq/, made by tools/make_awq_gptq_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_llama.h"
#include "cuda_paged_seq.h"
#include "model/model.h"

namespace llamarun::cuda::test {
namespace {

const std::string kDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/awq_gptq";
const std::string kFloatGolden =
    std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden/gqa_untied/golden.json";

class CudaHfInt4 : public ::testing::TestWithParam<std::string> {};

// fp16 activations (and the GPU's int8-activation Q4_1 GEMV) against the CPU's f32: the tolerance of the
// Q4_1 GGUF cases in test_cuda_golden.cpp (0.03 + 0.02 |ref|).
TEST_P(CudaHfInt4, LogitsMatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  std::ifstream in(kFloatGolden);
  auto g = nlohmann::json::parse(in);
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.activations = "f32";
  auto m = load_model(kDir + "/" + GetParam(), lo);
  ASSERT_EQ(m->weights->repacked_from, GetParam() == "awq" ? "awq" : "gptq");
  const int V = m->cfg.vocab_size;
  CudaLlamaOptions co;
  co.dtype = DType::F16;
  co.max_context = 128;
  CudaLlama gpu(m->cfg, *m->weights, co);
  const int nblocks = 2 * ((co.max_context + 15) / 16);
  gpu.init_paged(16, nblocks, 0);
  const std::vector<int32_t> blocks = shuffled_blocks(nblocks, 7);
  std::vector<int32_t> t0, t1;
  for (size_t i = 0; i < blocks.size(); ++i) (i % 2 ? t1 : t0).push_back(blocks[i]);
  PagedSeq pre(gpu, t0), dec(gpu, t1);
  double worst = 0;
  for (size_t p = 0; p < g["prompts"].size(); ++p) {
    const std::vector<int32_t> prompt = g["prompts"][p].get<std::vector<int32_t>>();
    const std::vector<float> cpu = m->llama->prompt_logits(prompt);
    pre.reset();
    const std::vector<float> last = pre.prefill(prompt, int(prompt.size()));
    dec.reset();
    for (size_t t = 0; t < prompt.size(); ++t) {
      const std::vector<float> got = dec.step_logits(prompt[t]);
      for (int pass = 0; pass < (t + 1 == prompt.size() ? 2 : 1); ++pass) {
        const std::vector<float>& x = pass == 0 ? got : last;
        for (int v = 0; v < V; ++v) {
          const double r = cpu[t * V + v], e = std::fabs(x[v] - r);
          worst = std::max(worst, e);
          ASSERT_LE(e, 0.03 + 0.02 * std::fabs(r))
              << GetParam() << " prompt " << p << " position " << t << " token " << v
              << (pass ? " (prefill)" : " (decode)") << ": gpu " << x[v] << ", cpu " << r;
        }
      }
    }
  }
  std::cout << "[ hf_int4 ] " << GetParam() << ": max |gpu - cpu| logit " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaHfInt4, ::testing::Values("awq", "gptq", "gptq_v2"));

}  // namespace
}  // namespace llamarun::cuda::test
