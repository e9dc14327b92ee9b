// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against transformers run on the same
// dequantised weights (tests/fixtures/default_model/golden.json, made by
// tools/make_default_model_golden.py): prompt ids, last-position top-10 logits, 48 greedy tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "kv/paged_kv_pool.h"
#include "model/model.h"

using namespace llamarun;

namespace {

const std::string kModel = std::string(LLAMARUN_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kGolden = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/default_model/golden.json";
// The int8-activation path's logit tolerance: 0.2 + 2% (logits of these cases are 13-36). Largest deviations
// measured: 0.53 at the scalar level, 0.45 with AVX2, then 0.50 with AVX2 once the attention softmax was
// vectorised (probabilities moved by about an ulp; an activation near an int8 rounding boundary turns such a
// change into a few hundredths of a logit), two of them 0.002 over the earlier 0.1 + 2%: the constant keeps
// a margin above that noise. A wrong kernel moves logits by whole units.
double int8_logit_tol(double ref) { return 0.2 + 0.02 * std::fabs(ref); }

TEST(DefaultModel, MatchesTransformersOnDequantisedWeights) {
  if (!std::filesystem::exists(kModel))
    GTEST_SKIP() << "default model not present (scripts/get-default-model.sh)";
  std::ifstream in(kGolden);
  auto g = nlohmann::json::parse(in);
  LoadOptions lo;
  lo.activations = "f32";  // the reference's precision (the default multiplies Q4_1 with int8 activations)
  auto m = load_model(kModel, lo);
  ASSERT_TRUE(m->tokenizer);
  EngineConfig ec;
  ec.max_model_len = 512;
  ec.num_blocks = 512 / ec.block_size + 2;
  ec.enable_prefix_caching = false;
  ec.batch_invariant = false;  // as `llamarun generate` runs
  Engine engine(*m, ec);
  const int V = m->cfg.vocab_size;
  for (auto& c : g["cases"]) {
    const std::string name = c["name"];
    const std::string text = c["text"];
    std::vector<int32_t> want_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    // The chat case holds special-token text that the HF tokenizer maps to special ids.
    EXPECT_EQ(m->tokenizer->encode(text, /*parse_special=*/name == "chat_template"), want_ids) << name;

    // Logits of the last prompt position: the top-10 of transformers, f32 compute on both sides.
    std::vector<float> logits = m->llama->prompt_logits(want_ids);
    const float* last = &logits[(want_ids.size() - 1) * size_t(V)];
    for (size_t k = 0; k < c["top_ids"].size(); ++k) {
      int id = c["top_ids"][k];
      double ref = c["top_logits"][k];
      EXPECT_NEAR(last[id], ref, 2e-3 + 2e-4 * std::fabs(ref)) << name << " top-" << k << " token " << id;
    }

    SamplingParams sp;
    sp.temperature = 0;
    sp.ignore_eos = true;
    sp.max_tokens = int(c["greedy"].size());
    GenerationResult r = generate(engine, want_ids, sp);
    std::vector<int32_t> want = c["greedy"].get<std::vector<int32_t>>();
    ASSERT_EQ(r.token_ids.size(), want.size()) << name;
    // Compare token by token. A step whose top-2 margin in the reference is under 1e-3 is a near-tie
    // that f32 summation order may flip: a difference is tolerated only after such a step, and only
    // once at least 32 tokens have matched.
    bool near_tie_seen = false;
    for (size_t i = 0; i < want.size(); ++i) {
      if (r.token_ids[i] != want[i]) {
        EXPECT_TRUE(near_tie_seen && i >= 32) << name << ": greedy token " << i << " is " << r.token_ids[i]
                                              << ", transformers gives " << want[i];
        break;
      }
      if (c["greedy_margin"][i].get<double>() < 1e-3) near_tie_seen = true;
    }
  }
}

// The default options: the Q4_1 projections multiply int8-quantized activations in decode (llama.cpp's
// arithmetic, MatmulOptions::int8_activations), and the prompt's logits come from the same path when the
// prompt fits one GEMV (M <= 8) or the batch-invariant engine runs it. Each activation is rounded by at most
// amax(its 32-value block) / 254 before the integer dot, so the logits move by more than f32 summation
// order: the tolerance is the int8 path's (the test prints the largest deviation it saw).
TEST(DefaultModel, Int8ActivationsStayCloseToTransformers) {
  if (!std::filesystem::exists(kModel))
    GTEST_SKIP() << "default model not present (scripts/get-default-model.sh)";
  std::ifstream in(kGolden);
  auto g = nlohmann::json::parse(in);
  auto m = load_model(kModel);
  ASSERT_TRUE(m->llama->options().int8_activations);
  const int V = m->cfg.vocab_size;
  double worst = 0;
  for (auto& c : g["cases"]) {
    const std::string name = c["name"];
    std::vector<int32_t> ids = c["prompt_ids"].get<std::vector<int32_t>>();
    // The prompt and transformers' 48 greedy tokens in one batch-invariant pass (as the serving engine runs
    // it: every row on the int8 path, each row's result the one decode would give).
    std::vector<int32_t> want = c["greedy"].get<std::vector<int32_t>>();
    std::vector<int32_t> seq = ids;
    seq.insert(seq.end(), want.begin(), want.end() - 1);
    const int n = int(seq.size()), bs = 16, nb = (n + bs - 1) / bs;
    PagedKVPool kv(m->cfg.num_layers, m->cfg.num_kv_heads, m->cfg.head_dim, bs, nb);
    std::vector<int32_t> table(nb);
    for (int i = 0; i < nb; ++i) table[i] = i;
    BatchInput b = sequence_batch(seq, table, /*all_logits=*/true);
    b.batch_invariant = true;
    std::vector<float> logits(size_t(n) * V);
    m->llama->forward(b, kv, logits.data());
    const float* last = &logits[(ids.size() - 1) * size_t(V)];
    for (size_t k = 0; k < c["top_ids"].size(); ++k) {
      const int id = c["top_ids"][k];
      const double ref = c["top_logits"][k];
      worst = std::max(worst, std::fabs(last[id] - ref));
      EXPECT_NEAR(last[id], ref, int8_logit_tol(ref)) << name << " top-" << k << " token " << id;
    }
    // Teacher-forced greedy: at every step whose top-2 margin in the reference exceeds twice the tolerance
    // (at a logit of 30), our argmax is transformers' token.
    int checked = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (c["greedy_margin"][i].get<double>() < 2 * int8_logit_tol(30)) continue;
      const float* row = &logits[(ids.size() - 1 + i) * size_t(V)];
      EXPECT_EQ(int(std::max_element(row, row + V) - row), want[i]) << name << ": greedy step " << i;
      ++checked;
    }
    EXPECT_GE(checked, 20) << name;
  }
  std::printf("largest top-10 logit deviation on the int8 path: %.4f\n", worst);
}

}  // namespace
