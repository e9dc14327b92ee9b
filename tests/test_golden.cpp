// Golden tests against Hugging Face transformers: logits of every prompt position and 32-step greedy
// continuations of tiny random-weight Llama models (tests/fixtures/golden/, made by tools/make_golden.py
// and tools/hf_to_gguf.py), from safetensors and from the same models converted to GGUF.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace llamarun;

namespace {

const std::string kGoldenDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

struct Tolerance {
  double atol, rtol;
};

// f32 activations: only summation order differs. bf16: the reference rounds every activation to
// bf16 (8 bits of mantissa, relative step 2^-8); we round at the same points, so differences come
// from accumulation order flipping a rounding, amplified over the layers.
Tolerance tolerance_for(const std::string& dtype) {
  if (dtype == "float32") return {2e-4, 2e-4};
  return {6e-2, 3e-2};
}

struct Case {
  std::string dir;     // model directory or gguf file
  std::string golden;  // golden json
  std::string name;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  if (!fs::exists(kGoldenDir)) return out;
  for (auto& e : fs::directory_iterator(kGoldenDir)) {
    if (!e.is_directory() || !fs::exists(e.path() / "golden.json")) continue;
    const std::string d = e.path().string(), n = e.path().filename().string();
    out.push_back({d, d + "/golden.json", n + "/safetensors"});
    for (auto& f : fs::directory_iterator(e.path())) {
      std::string fn = f.path().filename().string();
      if (f.path().extension() != ".gguf") continue;
      // model-<type>.gguf is checked against golden-<type>.json when present (quantised weights,
      // reference computed on the dequantised weights), else against golden.json.
      std::string type = fn.substr(6, fn.size() - 11);
      std::string g = d + "/golden-" + type + ".json";
      out.push_back({f.path().string(), fs::exists(g) ? g : d + "/golden.json", n + "/" + fn});
    }
  }
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
  return out;
}

class Golden : public ::testing::TestWithParam<Case> {};

TEST_P(Golden, LogitsAndGreedyMatchTransformers) {
  const Case& c = GetParam();
  auto g = read_json(c.golden);
  const std::string dtype = g["dtype"];
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.activations = dtype == "bfloat16" ? "bf16" : "f32";
  auto m = load_model(c.dir, lo);
  const int V = m->cfg.vocab_size;
  const Tolerance tol = tolerance_for(dtype);
  EngineConfig ec;
  ec.max_model_len = 128;
  ec.num_blocks = 128 / ec.block_size + 2;
  ec.enable_prefix_caching = false;  // each greedy run computes its prompt afresh
  ec.batch_invariant = false;        // as `llamarun generate` runs
  Engine engine(*m, ec);
  for (size_t p = 0; p < g["prompts"].size(); ++p) {
    std::vector<int32_t> prompt = g["prompts"][p].get<std::vector<int32_t>>();
    std::vector<float> got = m->llama->prompt_logits(prompt);
    auto& ref = g["logits"][p];
    ASSERT_EQ(ref.size(), prompt.size());
    double max_err = 0;
    for (size_t t = 0; t < prompt.size(); ++t) {
      ASSERT_EQ(int(ref[t].size()), V);
      for (int v = 0; v < V; ++v) {
        double r = ref[t][v].get<double>(), x = got[t * V + v];
        max_err = std::max(max_err, std::fabs(x - r));
        ASSERT_LE(std::fabs(x - r), tol.atol + tol.rtol * std::fabs(r))
            << c.name << " prompt " << p << " position " << t << " token " << v << ": got " << x
            << ", transformers " << r;
      }
    }
    SUCCEED() << "max abs logit error " << max_err;

    SamplingParams sp;
    sp.temperature = 0;
    sp.max_tokens = int(g["greedy"][p].size());
    sp.ignore_eos = true;
    GenerationResult r = generate(engine, prompt, sp);
    std::vector<int32_t> want = g["greedy"][p].get<std::vector<int32_t>>();
    EXPECT_EQ(r.token_ids, want) << c.name << " prompt " << p << ": greedy continuation differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           std::string s = i.param.name;
                           for (auto& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

TEST(GoldenFixtures, Present) {
  // The fixtures are committed: their absence is a failure, not a skip.
  EXPECT_GE(cases().size(), 8u) << "expected golden fixtures under " << kGoldenDir;
}

}  // namespace
