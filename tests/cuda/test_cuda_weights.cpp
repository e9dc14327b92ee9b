// CudaLlama loads through the one validator (bind_llama_weights): the lm_head is tied exactly where the
// CPU ties it, a missing lm_head with tie_word_embeddings false is the CPU's error, and a tied model
// computes what an untied one whose lm_head is a copy of the embedding computes.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "backends/cuda/cuda_llama.h"
#include "core/error.h"
#include "cuda_paged_seq.h"
#include "cuda_test_util.h"
#include "formats/weight_map.h"
#include "model/llama_tensors.h"
#include "model/random_model.h"

using namespace llamarun;

namespace {

std::string err_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(CudaWeights, LmHeadTiedOnlyWhereTheConfigSays) {
  LLAMARUN_REQUIRE_GPU();
  LlamaConfig cfg = random_model_preset("tiny");  // HF names, f16 matrices, f32 norms
  cfg.tie_embeddings = false;
  auto m = make_random_model(cfg, DType::F16, 5, 8);
  WeightMap& wm = *m->weights;
  // The untied model's lm_head becomes a copy of the embedding.
  const TensorInfo& e = wm.get("model.embed_tokens.weight");
  const TensorInfo& h = wm.get("lm_head.weight");
  ASSERT_EQ(e.nbytes, h.nbytes);
  std::memcpy(const_cast<void*>(h.data), e.data, e.nbytes);
  CudaLlamaOptions o;
  o.max_context = 32;
  std::vector<int32_t> prompt = {1, 7, 42, 3, 99, 5};
  // The prompt's last logits through the model's one forward (a paged pool of 2 blocks of 16).
  auto prefill = [&](CudaLlama& m) {
    m.init_paged(16, 2, 0);
    cuda::test::PagedSeq seq(m, {1, 0});
    return seq.prefill(prompt, 64);
  };
  CudaLlama untied(cfg, wm, o);
  const std::vector<float> want = prefill(untied);
  EXPECT_FALSE(untied.config().tie_embeddings);

  WeightMap bare = wm;
  bare.tensors.erase("lm_head.weight");
  // Untied without lm_head: the CPU's error (formerly CUDA tied silently).
  const std::string gpu = err_of([&] { CudaLlama x(cfg, bare, o); });
  const std::string cpu = err_of([&] { bind_llama_weights(cfg, bare, TensorNaming::kHf, "cpu"); });
  EXPECT_NE(gpu.find("'lm_head.weight' (lm_head) is missing and tie_word_embeddings is false"),
            std::string::npos)
      << gpu;
  EXPECT_EQ(gpu.substr(gpu.find(": tensor")), cpu.substr(cpu.find(": tensor")));

  // Tied in the config: the embedding is the head, on the GPU as on the CPU.
  LlamaConfig tied_cfg = cfg;
  tied_cfg.tie_embeddings = true;
  CudaLlama tied(tied_cfg, bare, o);
  EXPECT_TRUE(tied.config().tie_embeddings);
  EXPECT_EQ(prefill(tied), want);
  EXPECT_LT(tied.memory_stats().weights, untied.memory_stats().weights);  // one [vocab, hidden] table

  // From weights the CPU bound: the same.
  LlamaWeights bound = bind_llama_weights(tied_cfg, bare, TensorNaming::kHf, "random");
  CudaLlama from_bound(tied_cfg, bound, o);
  EXPECT_EQ(prefill(from_bound), want);

  // Weights bound for another shape are refused.
  LlamaConfig other = tied_cfg;
  other.num_layers = 1;
  EXPECT_NE(err_of([&] { CudaLlama x(other, bound, o); }).find("do not match the config"), std::string::npos);
}
