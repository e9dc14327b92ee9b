// The libFuzzer targets' seed corpora (fuzz/corpus/) and regression inputs (fuzz/regressions/:
// inputs that once crashed a target) run through the same harnesses in the ordinary build, so CI
// checks them even where clang/libFuzzer is absent (scripts/fuzz.sh fuzzes with sanitizers).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#define LLAMARUN_FUZZ_ENTRY fuzz_gguf_one
#include "../fuzz/fuzz_gguf.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_safetensors_one
#include "../fuzz/fuzz_safetensors.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_tokenizer_json_one
#include "../fuzz/fuzz_tokenizer_json.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_tokenizer_model_one
#include "../fuzz/fuzz_tokenizer_model.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_chat_template_one
#include "../fuzz/fuzz_chat_template.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_http_one
#include "../fuzz/fuzz_http.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_openai_one
#include "../fuzz/fuzz_openai.cpp"
#undef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY fuzz_pth_one
#include "../fuzz/fuzz_pth.cpp"
#undef LLAMARUN_FUZZ_ENTRY

namespace {

namespace fs = std::filesystem;

// Runs every file of fuzz/corpus/<target> and fuzz/regressions/<target>; returns how many.
size_t run_inputs(const std::string& target, int (*fn)(const uint8_t*, size_t)) {
  size_t n = 0;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(LLAMARUN_SOURCE_DIR) / "fuzz" / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      SCOPED_TRACE(e.path().string());
      EXPECT_NO_THROW(fn(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
      ++n;
    }
  }
  return n;
}

TEST(FuzzInputs, Pth) { EXPECT_GE(run_inputs("fuzz_pth", fuzz_pth_one), 4u); }
TEST(FuzzInputs, Gguf) { EXPECT_GE(run_inputs("fuzz_gguf", fuzz_gguf_one), 2u); }
TEST(FuzzInputs, Safetensors) { EXPECT_GE(run_inputs("fuzz_safetensors", fuzz_safetensors_one), 3u); }
TEST(FuzzInputs, TokenizerJson) { EXPECT_GE(run_inputs("fuzz_tokenizer_json", fuzz_tokenizer_json_one), 3u); }
TEST(FuzzInputs, TokenizerModel) {
  EXPECT_GE(run_inputs("fuzz_tokenizer_model", fuzz_tokenizer_model_one), 2u);
}
TEST(FuzzInputs, ChatTemplate) { EXPECT_GE(run_inputs("fuzz_chat_template", fuzz_chat_template_one), 7u); }
TEST(FuzzInputs, Http) { EXPECT_GE(run_inputs("fuzz_http", fuzz_http_one), 5u); }
TEST(FuzzInputs, OpenAi) { EXPECT_GE(run_inputs("fuzz_openai", fuzz_openai_one), 5u); }

// The seeds are valid inputs: each parses (so the fuzzer starts from the interesting paths).
TEST(FuzzInputs, SeedsParse) {
  const fs::path c = fs::path(LLAMARUN_SOURCE_DIR) / "fuzz" / "corpus";
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  for (const auto& e : fs::directory_iterator(c / "fuzz_gguf")) {
    WeightMap wm = read_gguf(e.path().string());
    EXPECT_NO_THROW(config_from_gguf(wm, e.path().string())) << e.path();
    EXPECT_NO_THROW(tokenizer_from_gguf(wm)) << e.path();
  }
  for (const auto& e : fs::directory_iterator(c / "fuzz_tokenizer_json"))
    EXPECT_NO_THROW(tokenizer_from_hf_json(slurp(e.path()), e.path().string())) << e.path();
  for (const auto& e : fs::directory_iterator(c / "fuzz_tokenizer_model"))
    EXPECT_NO_THROW(tokenizer_from_spm_proto(slurp(e.path()), e.path().string())) << e.path();
  for (const auto& e : fs::directory_iterator(c / "fuzz_safetensors")) {
    const std::string s = slurp(e.path());
    EXPECT_NO_THROW(config_from_hf_json(s.substr(0, s.find('\xff')), "config.json")) << e.path();
  }
}

}  // namespace
