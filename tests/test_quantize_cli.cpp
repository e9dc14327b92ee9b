// `llamarun quantize`, `--quantize` and `llamarun perplexity` on the default model.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "formats/gguf.h"

using namespace llamarun;
using namespace llamarun::testutil;

namespace {

const std::string kModel = std::string(LLAMARUN_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kText = "/usr/share/common-licenses/GPL-3";  // on every Debian machine

nlohmann::json ppl_json(std::vector<std::string> args) {
  args.insert(args.begin(), "perplexity");
  for (const char* a : {"-f", kText.c_str(), "--json", "-t", "2"}) args.push_back(a);
  RunResult r = run_llamarun(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

}  // namespace

// The perplexity fixture: llama.cpp's llama-perplexity on the same model, text and settings
// (tests/fixtures/quant/perplexity_reference.json, tools/make_perplexity_reference.sh).
TEST(PerplexityCli, MatchesLlamaPerplexity) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "default model not present";
  if (!std::filesystem::exists(kText)) GTEST_SKIP() << kText << " not present (not a Debian machine)";
  auto ref = nlohmann::json::parse(
      read_all(std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/quant/perplexity_reference.json"));
  const int ctx = ref["ctx"], chunks = ref["chunks"];
  auto j = ppl_json({"-m", kModel, "--ctx", std::to_string(ctx), "--chunks", std::to_string(chunks)});
  EXPECT_EQ(j["windows"], chunks);
  EXPECT_EQ(j["tokens"], chunks * (ctx - ctx / 2 - 1));
  const double want = ref["ppl"];
  EXPECT_NEAR(j["ppl"].get<double>(), want, 0.01 * want) << "llama-perplexity: " << want;
}

TEST(PerplexityCli, BadInput) {
  RunResult r = run_llamarun({"perplexity", "-m", kModel});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("-f FILE"), std::string::npos) << r.err;
  if (!std::filesystem::exists(kModel)) return;
  const std::string short_text = temp_path("short.txt");
  write_all(short_text, "Just a few words.");
  r = run_llamarun({"perplexity", "-m", kModel, "-f", short_text});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs at least 1024"), std::string::npos) << r.err;
  std::remove(short_text.c_str());
  r = run_llamarun({"perplexity", "-m", kModel, "-f", kText, "--ctx", "2"});
  EXPECT_EQ(r.exit_code, 1);
}

// A file written by `llamarun quantize` and the same scheme applied at load (--quantize) hold the same
// bytes, so they give the same perplexity to the last digit; and the file's types follow the mixing rules.
TEST(QuantizeCli, FileEqualsQuantizeAtLoad) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "default model not present";
  if (!std::filesystem::exists(kText)) GTEST_SKIP() << kText << " not present";
  const std::string out = temp_path("q8.gguf");
  RunResult r = run_llamarun({"quantize", kModel, out, "q8_0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WeightMap wm = read_gguf(out);
  EXPECT_EQ(meta_int(wm, "general.file_type", -1), 7);
  EXPECT_EQ(meta_str(wm, "tokenizer.ggml.model", ""), "gpt2");
  EXPECT_TRUE(meta_has(wm, "tokenizer.chat_template"));
  EXPECT_EQ(wm.get("blk.0.ffn_down.weight").dtype, DType::Q8_0);
  EXPECT_EQ(wm.get("blk.0.attn_norm.weight").dtype, DType::F32);
  auto from_file = ppl_json({"-m", out, "--ctx", "256", "--chunks", "2"});
  auto at_load = ppl_json({"-m", kModel, "--quantize", "Q8_0", "--ctx", "256", "--chunks", "2"});
  auto original = ppl_json({"-m", kModel, "--ctx", "256", "--chunks", "2"});
  EXPECT_EQ(from_file["ppl"].get<double>(), at_load["ppl"].get<double>());
  // Requantizing Q4_1 weights to Q8_0 moves the perplexity a little, not a lot. (254 scored tokens: with
  // 126 (--ctx 128) the two files' values were 4.7% apart on f32 activations and 6.8% on the int8 prefill,
  // 0.5% and 0.7% with 2,040.)
  EXPECT_NEAR(from_file["ppl"].get<double>(), original["ppl"].get<double>(),
              0.05 * original["ppl"].get<double>());
  std::remove(out.c_str());
}

TEST(QuantizeCli, MixedSchemeTypes) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "default model not present";
  const std::string out = temp_path("q4km.gguf");
  RunResult r = run_llamarun({"quantize", kModel, out, "Q4_K_M", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WeightMap wm;
  try {
    wm = read_gguf(out);
  } catch (const Error& e) {
    std::remove(out.c_str());
    // The reader learns the k-quant type ids with the block-format loader; scripts/test-quantize-gguf.sh
    // checks these files with the gguf package meanwhile.
    GTEST_SKIP() << "this build's GGUF reader does not read k-quants yet: " << e.what();
  }
  EXPECT_EQ(meta_int(wm, "general.file_type", -1), 15);
  EXPECT_EQ(meta_int(wm, "general.quantization_version", -1), 2);
  EXPECT_EQ(wm.get("token_embd.weight").dtype, DType::Q8_0);
  EXPECT_EQ(wm.get("blk.0.ffn_down.weight").dtype, DType::Q6_K);
  EXPECT_EQ(wm.get("blk.3.ffn_down.weight").dtype, DType::Q4_K);
  EXPECT_EQ(wm.get("blk.3.attn_q.weight").dtype, DType::Q5_0);
  EXPECT_EQ(wm.get("blk.0.attn_v.weight").dtype, DType::Q8_0);
  std::remove(out.c_str());
}

TEST(QuantizeCli, BadInput) {
  RunResult r = run_llamarun({"quantize", kModel, "/tmp/x.gguf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("IN OUT TYPE"), std::string::npos) << r.err;
  r = run_llamarun({"quantize", kModel, "/tmp/x.gguf", "q3_k_xl"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("q3_k_xl"), std::string::npos) << r.err;
  r = run_llamarun({"quantize", "/nonexistent.gguf", "/tmp/x.gguf", "q8_0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent.gguf"), std::string::npos) << r.err;
  r = run_llamarun({"quantize", kModel, kModel, "q8_0"});
  EXPECT_EQ(r.exit_code, 1);
  r = run_llamarun({"generate", "-p", "x", "-n", "1", "--quantize", "q9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("q9"), std::string::npos) << r.err;
  EXPECT_EQ(run_llamarun({"quantize", "--help"}).exit_code, 0);
  EXPECT_EQ(run_llamarun({"perplexity", "--help"}).exit_code, 0);
}
