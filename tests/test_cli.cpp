// The command-line contracts scripts rely on, and bad input at the command line: one clear error,
// a non-zero exit, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "tokenizer_test_util.h"

namespace fs = std::filesystem;
using namespace llamarun::testutil;

namespace {

const std::string kSrc = LLAMARUN_SOURCE_DIR;
const std::string kDefaultModel = kSrc + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

std::vector<std::string> corpus_texts() {
  std::vector<std::string> out;
  std::ifstream in(fixture_path("corpus.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back(j.contains("b64") ? base64_decode(j["b64"].get<std::string>())
                                    : j["text"].get<std::string>());
  }
  return out;
}

std::vector<std::vector<int>> golden_ids(const std::string& file) {
  std::vector<std::vector<int>> out;
  std::ifstream in(fixture_path(file));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<int> ids;
    int v;
    while (ss >> v) ids.push_back(v);
    out.push_back(ids);
  }
  return out;
}

// `llamarun tokenize -m M -f FILE --ids` prints the ids sentencepiece / HF tokenizers give.
void check_tokenize_contract(const std::string& model, const std::string& golden_file) {
  auto texts = corpus_texts();
  auto want = golden_ids(golden_file);
  ASSERT_EQ(texts.size(), want.size());
  const std::string f = temp_path("prompt.txt");
  int checked = 0;
  for (size_t i = 0; i < texts.size(); i += 97) {  // a spread of ~25 lines, invalid UTF-8 included
    write_all(f, texts[i]);
    RunResult r = run_llamarun({"tokenize", "-m", model, "-f", f, "--ids"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto got = nlohmann::json::parse(r.out).get<std::vector<int>>();
    EXPECT_EQ(got, want[i]) << "corpus line " << i;
    ++checked;
  }
  unlink(f.c_str());
  EXPECT_GE(checked, 20);
}

TEST(Cli, TokenizeIdsSentencePieceModel) {
  check_tokenize_contract(shared_asset("llama2-tokenizer.model"), "llama2_spm.ids");
}

TEST(Cli, TokenizeIdsTokenizerJson) {
  check_tokenize_contract(fixture_path("smollm2_tokenizer.json"), "smollm2.ids");
}

TEST(Cli, TokenizeIdsGguf) {
  if (!fs::exists(kDefaultModel)) GTEST_SKIP() << "default model not present";
  check_tokenize_contract(kDefaultModel, "smollm2.ids");
}

TEST(Cli, GenerateJsonContract) {
  if (!fs::exists(kDefaultModel)) GTEST_SKIP() << "default model not present";
  RunResult r = run_llamarun({"generate", "-m", kDefaultModel, "-p", "The capital of France is", "-n", "8",
                              "--temp", "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);  // exactly one JSON object on stdout
  ASSERT_TRUE(j.is_object());
  ASSERT_TRUE(j["text"].is_string());
  ASSERT_TRUE(j["prompt_ids"].is_array());
  ASSERT_TRUE(j["token_ids"].is_array());
  EXPECT_GE(j["token_ids"].size(), 1u);
  EXPECT_LE(j["token_ids"].size(), 8u);
  // The timing line goes to stderr.
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  // Same prompt, same ids as `tokenize` (SmolLM2 adds no BOS).
  RunResult t = run_llamarun({"tokenize", "-m", kDefaultModel, "-p", "The capital of France is", "--ids"});
  ASSERT_EQ(t.exit_code, 0);
  EXPECT_EQ(j["prompt_ids"], nlohmann::json::parse(t.out));
}

TEST(Cli, SeededSamplingIsReproducible) {
  if (!fs::exists(kDefaultModel)) GTEST_SKIP() << "default model not present";
  std::vector<std::string> a{"generate", "-m",  kDefaultModel, "-p",   "Once upon a time", "-n", "12",
                             "--temp",   "1.0", "--top-p",     "0.95", "--seed",           "42", "--json"};
  RunResult r1 = run_llamarun(a), r2 = run_llamarun(a);
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_EQ(nlohmann::json::parse(r1.out)["token_ids"], nlohmann::json::parse(r2.out)["token_ids"]);
}

TEST(Cli, HelpEverywhere) {
  for (const char* cmd : {"generate", "chat", "info", "tokenize", "bench"}) {
    RunResult r = run_llamarun({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("usage: llamarun"), std::string::npos) << cmd;
  }
  RunResult r = run_llamarun({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("generate"), std::string::npos);
}

// Each bad input: exit code 1 (not a signal, nor a sanitizer's exit code), and a message naming the thing
// that is wrong.
void expect_clean_error(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << "; stderr: " << r.err;
  EXPECT_EQ(r.exit_code, 1) << "llamarun reports errors with exit code 1; stderr: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr does not mention '" << needle << "': " << r.err;
}

TEST(CliBadInput, MissingModel) {
  expect_clean_error(run_llamarun({"generate", "-m", "/nonexistent/model.gguf", "-p", "hi"}),
                     "/nonexistent/model.gguf");
  expect_clean_error(run_llamarun({"info", "-m", "/nonexistent/dir"}), "/nonexistent/dir");
}

TEST(CliBadInput, CorruptGguf) {
  const std::string p = temp_path("corrupt.gguf");
  write_all(p, std::string("GGUF\x03\x00\x00\x00", 8) + std::string(40, '\xff'));
  expect_clean_error(run_llamarun({"generate", "-m", p, "-p", "hi"}), p);
  write_all(p, "not a model at all");
  expect_clean_error(run_llamarun({"info", "-m", p}), p);
  unlink(p.c_str());
}

TEST(CliBadInput, UnsupportedArchitectureAndConfigMismatch) {
  const std::string dir = temp_path("hfdir");
  fs::create_directories(dir);
  const std::string src = kSrc + "/tests/fixtures/golden/mha_tied";
  fs::copy_file(src + "/model.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
  auto cfg = nlohmann::json::parse(read_all(src + "/config.json"));
  auto bad = cfg;
  bad["architectures"] = {"GPT2LMHeadModel"};
  bad["model_type"] = "gpt2";
  write_all(dir + "/config.json", bad.dump());
  expect_clean_error(run_llamarun({"info", "-m", dir}), "GPT2LMHeadModel");
  bad = cfg;
  bad["hidden_size"] = 96;
  bad["head_dim"] = 24;
  write_all(dir + "/config.json", bad.dump());
  expect_clean_error(run_llamarun({"info", "-m", dir}), "model.embed_tokens.weight");
  bad = cfg;
  bad["torch_dtype"] = "float32";
  bad.erase("num_hidden_layers");
  write_all(dir + "/config.json", bad.dump());
  expect_clean_error(run_llamarun({"info", "-m", dir}), "num_hidden_layers");
  write_all(dir + "/config.json", "{ not json");
  expect_clean_error(run_llamarun({"info", "-m", dir}), "config.json");
  fs::remove(dir + "/config.json");
  expect_clean_error(run_llamarun({"info", "-m", dir}), "config.json");
  fs::remove_all(dir);
}

TEST(CliBadInput, PromptLongerThanContext) {
  if (!fs::exists(kDefaultModel)) GTEST_SKIP() << "default model not present";
  std::string longp;
  for (int i = 0; i < 64; ++i) longp += "word ";
  expect_clean_error(run_llamarun({"generate", "-m", kDefaultModel, "--ctx", "16", "-p", longp, "-n", "4"}),
                     "context");
  expect_clean_error(run_llamarun({"generate", "-m", kDefaultModel, "--ctx", "999999", "-p", "hi"}), "--ctx");
}

TEST(CliBadInput, BadOptions) {
  expect_clean_error(run_llamarun({"generate", "--bogus"}), "--bogus");
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--temp", "abc"}), "--temp");
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--temp", "-1"}), "temperature");
  expect_clean_error(run_llamarun({"tokenize", "-m", "/nonexistent/tokenizer.json", "-p", "x"}),
                     "/nonexistent/tokenizer.json");
  RunResult r = run_llamarun({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
}

// FP8 weights are a GPU storage format: on the CPU, --quantize fp8 names the device it needs.
TEST(CliBadInput, Fp8NeedsTheGpu) {
  if (!fs::exists(kDefaultModel)) GTEST_SKIP() << "default model not present";
  expect_clean_error(
      run_llamarun({"generate", "-m", kDefaultModel, "-p", "x", "-n", "1", "--quantize", "fp8"}),
      "--device cuda");
  expect_clean_error(
      run_llamarun({"bench", "-m", kDefaultModel, "--quantize", "FP8", "--pp", "1", "--tg", "1"}),
      "--device cuda");
}

// The FP8 KV cache likewise; a value other than auto / fp8 is named. Both fail before a model loads.
TEST(CliBadInput, KvCacheDtype) {
  expect_clean_error(run_llamarun({"generate", "-p", "x", "-n", "1", "--kv-cache-dtype", "fp8"}),
                     "--device cuda");
  expect_clean_error(run_llamarun({"serve", "--kv-cache-dtype", "FP8", "--port", "0"}), "--device cuda");
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--kv-cache-dtype", "int4"}),
                     "'int4': expected auto or fp8");
  expect_clean_error(run_llamarun({"bench", "--kv-cache-dtype", "e5m2", "--pp", "1", "--tg", "1"}),
                     "--kv-cache-dtype");
}

TEST(CliBadInput, DeviceOption) {
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--device", "gpu"}), "--device");
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--device", "cuda:x"}), "--device");
#ifndef LLAMARUN_WITH_CUDA
  // A CPU-only build names the missing backend and how to get it.
  expect_clean_error(run_llamarun({"generate", "-p", "x", "--device", "cuda"}),
                     "rebuild with -DLLAMARUN_CUDA=ON");
  expect_clean_error(run_llamarun({"bench", "--device", "cuda:1"}), "rebuild with -DLLAMARUN_CUDA=ON");
#endif
}

// Issue 9, fault 8: options are checked where they are parsed.
TEST(CliBadInput, OptionRangesRepeatsAndDirectories) {
  const std::string tok = fixture_path("smollm2_tokenizer.json");
  // -f naming a directory: a clear error, not an empty prompt.
  const std::string dir = temp_path("adir");
  fs::create_directories(dir);
  expect_clean_error(run_llamarun({"tokenize", "-m", tok, "-f", dir}), "is a directory");
  expect_clean_error(run_llamarun({"generate", "-m", "/nonexistent.gguf", "-f", dir}), "is a directory");
  fs::remove_all(dir);
  // Integer ranges, before any model is opened.
  expect_clean_error(run_llamarun({"info", "-m", "/nonexistent.gguf", "--ctx", "-5"}), "--ctx");
  expect_clean_error(run_llamarun({"info", "--ctx", "9999999999999"}),
                     "--ctx must be an integer between 1 and");
  expect_clean_error(run_llamarun({"generate", "--ctx", "99999999999999999999999", "-p", "x"}), "--ctx");
  expect_clean_error(run_llamarun({"generate", "-n", "0", "-p", "x"}), "--n-predict");
  expect_clean_error(run_llamarun({"serve", "--port", "70000"}), "--port");
  expect_clean_error(run_llamarun({"serve", "--max-connections", "0"}), "--max-connections");
  // A repeated single-valued option is an error; --stop may repeat.
  expect_clean_error(run_llamarun({"tokenize", "-m", tok, "-p", "a", "-p", "b"}), "more than once");
  expect_clean_error(run_llamarun({"generate", "-p", "a", "--prompt", "b"}),
                     "--prompt is given more than once");
  RunResult ok = run_llamarun({"tokenize", "-m", tok, "-p", "a b", "--ids"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
