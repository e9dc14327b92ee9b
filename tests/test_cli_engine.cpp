// The command line as a new user meets it: `-m MODEL` on a machine without the default model, bench at
// the context limit, `--act` as the help and README describe it, chat past its context. generate, chat and
// bench run through the serving Engine.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <tuple>

#include "cli_util.h"

namespace fs = std::filesystem;
using namespace llamarun::testutil;

namespace {

const std::string kSrc = LLAMARUN_SOURCE_DIR;
const std::string kGolden = kSrc + "/tests/fixtures/golden";

// A Hugging Face directory with a tokenizer: the headdim32_vocab1001 golden model (vocab 1001) with the
// shrunk Llama 2 tokenizer.json cut down to its first 1001 ids (and the merges among them).
std::string model_dir_with_tokenizer(const std::string& root) {
  const std::string dir = root + "/hf";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json"})
    fs::copy_file(kGolden + "/headdim32_vocab1001/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  auto tj = nlohmann::json::parse(read_all(kSrc + "/tests/fixtures/tokenizer/llama2_small_tokenizer.json"));
  nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
  for (auto& [piece, id] : tj["model"]["vocab"].items())
    if (id.get<int>() < 1001) vocab[piece] = id;
  for (auto& m : tj["model"]["merges"]) {
    const std::string a = m[0], b = m[1];
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(m);
  }
  tj["model"]["vocab"] = vocab;
  tj["model"]["merges"] = merges;
  write_all(dir + "/tokenizer.json", tj.dump());
  return dir;
}

// Runs `llamarun ARGS` from a copy of the binary in `root`/bin with `root` as the working directory and
// LLAMARUN_MODEL unset: nothing there leads to the default model (no models/ beside the binary, above it
// or in the working directory), as on a machine that never fetched it.
RunResult run_without_default_model(const std::string& root, const std::vector<std::string>& args,
                                    const std::string& input = "") {
  fs::create_directories(root + "/bin");
  const std::string bin = root + "/bin/llamarun";
  if (!fs::exists(bin)) fs::copy_file(LLAMARUN_BINARY, bin);
  const std::string in = root + "/stdin", out = root + "/stdout", err = root + "/stderr";
  write_all(in, input);
  std::string cmd = "cd '" + root + "' && env -u LLAMARUN_MODEL ./bin/llamarun";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " < '" + in + "' > '" + out + "' 2> '" + err + "'";
  const int st = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_all(out);
  r.err = read_all(err);
  return r;
}

struct TempRoot {
  std::string path = temp_path("newuser");
  TempRoot() { fs::create_directories(path); }
  ~TempRoot() { fs::remove_all(path); }
};

TEST(CliNewUser, ModelFlagWorksWithoutTheDefaultModel) {
  TempRoot root;
  const std::string dir = model_dir_with_tokenizer(root.path);
  const std::string gguf = kGolden + "/mha_tied/model-f32.gguf";
  // Sanity: without -m the copy cannot find a default model.
  RunResult none = run_without_default_model(root.path, {"info"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("default model"), std::string::npos) << none.err;

  RunResult gen = run_without_default_model(
      root.path, {"generate", "-m", dir, "-p", "a b c", "-n", "4", "--temp", "0", "--ignore-eos", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(nlohmann::json::parse(gen.out)["token_ids"].size(), 4u);
  RunResult info = run_without_default_model(root.path, {"info", "-m", gguf});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  RunResult tok =
      run_without_default_model(root.path, {"tokenize", "-m", dir + "/tokenizer.json", "-p", "a b", "--ids"});
  EXPECT_EQ(tok.exit_code, 0) << tok.err;
  RunResult bench = run_without_default_model(
      root.path, {"bench", "-m", gguf, "--pp", "8", "--tg", "4", "-r", "1", "--json"});
  EXPECT_EQ(bench.exit_code, 0) << bench.err;
  RunResult chat =
      run_without_default_model(root.path, {"chat", "-m", dir, "-n", "4", "--temp", "0"}, "hello\n");
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
}

// bench measures decode at a depth up to the context limit: depth and tg are fitted to the model's
// positions (with a note on stderr) instead of refused. mha_tied has 128 positions.
TEST(CliNewUser, BenchDecodesAtTheContextLimit) {
  const std::string gguf = kGolden + "/mha_tied/model-f32.gguf";
  // --depth 112 --tg 16 on 128 positions is `--depth 3968 --tg 128` on a 4,096-position model; --depth 128
  // (the whole context) with --pp 512 (more than the context) is lowered to what fits.
  for (const auto& [depth, tg, pp] : std::vector<std::tuple<int, int, int>>{{112, 16, 1}, {128, 16, 512}}) {
    RunResult r = run_llamarun({"bench", "-m", gguf, "--pp", std::to_string(pp), "--tg", std::to_string(tg),
                                "--depth", std::to_string(depth), "-r", "1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << "depth " << depth << ": " << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tg"]["tokens"], tg);
    // A tg request holds max(depth, 1) + tg + 1 positions (the last sampled token is never stored).
    const int want_depth = std::min(depth, 128 - tg - 1);
    EXPECT_EQ(j["tg"]["depth"], want_depth) << r.err;
    EXPECT_EQ(j["pp"]["tokens"], std::min(pp, 127)) << r.err;
    EXPECT_GT(j["tg"]["tok_per_s_median"].get<double>(), 0);
    EXPECT_GT(j["pp"]["tok_per_s_median"].get<double>(), 0);
    EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  }
}

// --act: the CPU takes auto|f32|bf16 and says that f16 is for the GPU; the help lists both sets.
TEST(CliNewUser, ActOptionAsDocumented) {
  const std::string gguf = kGolden + "/mha_tied/model-f32.gguf";
  RunResult r = run_llamarun({"generate", "-m", gguf, "-p", "x", "--act", "f16"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--act f16 on the CPU"), std::string::npos) << r.err;
  RunResult h = run_llamarun({"generate", "--help"});
  ASSERT_EQ(h.exit_code, 0);
  const size_t act = h.out.find("--act V");
  ASSERT_NE(act, std::string::npos);
  const std::string line = h.out.substr(act, h.out.find('\n', act) - act);
  for (const char* v : {"auto", "f32", "bf16", "f16", "--device cuda"})
    EXPECT_NE(line.find(v), std::string::npos) << v << " missing from: " << line;
  // The README documents the same values.
  const std::string readme = read_all(kSrc + "/README.md");
  EXPECT_NE(readme.find("--act auto|f16|bf16"), std::string::npos);
  EXPECT_NE(readme.find("`auto|f32|bf16`"), std::string::npos);
  for (const char* act_value : {"f32", "bf16", "auto"}) {
    RunResult ok =
        run_llamarun({"generate", "-m", kGolden + "/mha_tied", "-p", "x", "--act", act_value, "-n", "1"});
    // mha_tied has no tokenizer: the run gets past option checking to the tokenizer.
    EXPECT_NE(ok.err.find("no tokenizer"), std::string::npos) << act_value << ": " << ok.err;
  }
}

// chat keeps the conversation in the engine's prefix cache and, once it outgrows --ctx, drops the oldest
// turns (the system prompt stays) and says so on stderr.
TEST(CliNewUser, ChatDropsTheOldestTurnsPastTheContext) {
  TempRoot root;
  const std::string dir = model_dir_with_tokenizer(root.path);
  std::string input;
  for (int i = 0; i < 12; ++i) input += "hi\n";
  // One turn takes ~90 tokens with this byte-level vocabulary: every turn after the first overflows.
  RunResult r = run_llamarun(
      {"chat", "-m", dir, "--ctx", "128", "-n", "8", "--temp", "0", "--ignore-eos", "--system", "x"}, input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dropped the"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("llamarun chat: the prompt"), std::string::npos) << r.err;
  // Every turn answered (8 tokens each), and later turns reuse the conversation from the prefix cache.
  size_t turns = 0;
  for (size_t p = r.err.find("[8 tokens"); p != std::string::npos; p = r.err.find("[8 tokens", p + 1))
    ++turns;
  EXPECT_EQ(turns, 12u) << r.err;
  std::regex turn(R"(\[8 tokens, [0-9.]+ tok/s; ([0-9]+) of ([0-9]+) prompt tokens from the cache\])");
  int reused = 0;
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), turn); it != std::sregex_iterator(); ++it)
    reused += std::stoi((*it)[1]) > 0;
  EXPECT_GE(reused, 1) << "no turn reused the conversation from the prefix cache: " << r.err;
}

}  // namespace
