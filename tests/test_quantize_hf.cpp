// `llamarun quantize` with a Hugging Face directory as input, on the golden fixtures (tiny random Llama
// models saved by transformers, sharded and not, GQA / MQA / MHA, tied and untied, linear and Llama 3 rope
// scaling, bf16): the Q8_0 GGUF it writes computes the logits of transformers' golden.json within Q8_0's
// error, and quantizing the directory gives the same bytes as converting it to GGUF at its own dtype and
// quantizing that file; the vocabulary written from a tokenizer.json tokenizes as the directory does; and
// `bench --random-weights --quantize` counts the streamed bytes. (scripts/test-quantize-hf.sh checks the
// file's names, types, metadata and vocabulary with the `gguf` PyPI package.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "formats/gguf.h"
#include "model/model.h"

using namespace llamarun;
using namespace llamarun::testutil;
namespace fs = std::filesystem;

namespace {

const std::string kGoldenDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden";

std::vector<std::string> fixtures() {
  std::vector<std::string> v;
  if (!fs::exists(kGoldenDir)) return v;
  for (auto& e : fs::directory_iterator(kGoldenDir))
    if (e.is_directory() && fs::exists(e.path() / "golden.json") && fs::exists(e.path() / "config.json"))
      v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/llamarun-qhf-XXXXXX";
    path = mkdtemp(t);
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

class QuantizeHf : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizeHf, Q8_0LogitsMatchTransformers) {
  const std::string dir = kGoldenDir + "/" + GetParam();
  TmpDir tmp;
  const std::string out = tmp.path + "/q8_0.gguf";
  RunResult r = run_llamarun({"quantize", dir, out, "Q8_0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir + "/golden.json");
  const nlohmann::json g = nlohmann::json::parse(in);
  nlohmann::json q8_golden;
  if (fs::exists(dir + "/golden-q8_0.json")) {
    std::ifstream q8(dir + "/golden-q8_0.json");
    q8_golden = nlohmann::json::parse(q8);
  }
  // The transformers logits of the f32 computation (bf16 checkpoints carry them as logits_f32compute).
  const auto& ref_logits = g.contains("logits_f32compute") ? g["logits_f32compute"] : g["logits"];
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.activations = "f32";
  auto q = load_model(out, lo);
  auto hf = load_model(dir, lo);
  EXPECT_EQ(q->cfg.num_layers, hf->cfg.num_layers);
  EXPECT_EQ(q->cfg.tie_embeddings, hf->cfg.tie_embeddings);
  const int V = q->cfg.vocab_size;
  ASSERT_EQ(V, hf->cfg.vocab_size);
  for (size_t p = 0; p < g["prompts"].size(); ++p) {
    const std::vector<int32_t> prompt = g["prompts"][p].get<std::vector<int32_t>>();
    const std::vector<float> got = q->llama->prompt_logits(prompt);
    const std::vector<float> base = hf->llama->prompt_logits(prompt);
    // Q8_0 moves these tiny random models' logits by up to ~6% of their largest magnitude (transformers on
    // the gguf package's Q8_0 of gqa_untied, golden-q8_0.json, differs from golden.json by 0.152 for logits
    // up to 4.8); a Q/K row permutation error or wrong rope_freqs moves them by about their own size.
    double scale = 0, err_ref = 0, err_hf = 0;
    for (size_t t = 0; t < prompt.size(); ++t)
      for (int v = 0; v < V; ++v) {
        const double ref = ref_logits[p][t][v].get<double>();
        scale = std::max(scale, std::fabs(ref));
        err_ref = std::max(err_ref, std::fabs(got[t * V + v] - ref));
        err_hf = std::max(err_hf, double(std::fabs(got[t * V + v] - base[t * V + v])));
      }
    EXPECT_LT(err_ref, 0.1 * scale) << GetParam() << " prompt " << p << ": max |logit - transformers| "
                                    << err_ref << " for logits up to " << scale;
    EXPECT_LT(err_hf, 0.1 * scale) << GetParam() << " prompt " << p << ": max |Q8_0 - HF directory| "
                                   << err_hf << " for logits up to " << scale;
    // Where tools/hf_to_gguf.py made a Q8_0 golden (transformers on the gguf package's Q8_0 quantization of
    // every matrix, dequantized: what llama-quantize Q8_0 writes too), the logits match it as closely as
    // f32 logits match transformers.
    if (q8_golden.is_object()) {
      double e = 0;
      for (size_t t = 0; t < prompt.size(); ++t)
        for (int v = 0; v < V; ++v) {
          const double ref = q8_golden["logits"][p][t][v].get<double>();
          e = std::max(e, std::fabs(got[t * V + v] - ref));
          ASSERT_LE(std::fabs(got[t * V + v] - ref), 2e-4 + 2e-4 * std::fabs(ref))
              << GetParam() << " prompt " << p << " position " << t << " token " << v;
        }
      SUCCEED() << "max |logit - golden-q8_0| " << e;
    }
    EXPECT_GT(err_hf, 0.0) << "the Q8_0 file should not compute exactly the f32/bf16 logits";
  }
}

TEST_P(QuantizeHf, Q4_K_MEqualsConvertThenQuantize) {
  const std::string dir = kGoldenDir + "/" + GetParam();
  TmpDir tmp;
  const std::string direct = tmp.path + "/direct.gguf", conv = tmp.path + "/conv.gguf",
                    two = tmp.path + "/two.gguf";
  RunResult r = run_llamarun({"quantize", dir, direct, "Q4_K_M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_llamarun({"convert", dir, conv});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_llamarun({"quantize", conv, two, "Q4_K_M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string a = slurp(direct), b = slurp(two);
  ASSERT_GT(a.size(), 1000u);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << GetParam() << ": quantizing the directory and quantizing its GGUF conversion differ";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizeHf, ::testing::ValuesIn(fixtures()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string s = i.param;
                           for (auto& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(QuantizeHf);

// GPT-2's byte -> printable character map (bytes_to_unicode), UTF-8 encoded.
std::string byte_char(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// A byte-level BPE tokenizer.json for the 1001-token fixture: the 256 byte symbols, a few merges (pair
// form, as transformers >= 4.45 writes them), a special and a non-special added token, and either
// SmolLM2's pre-tokenizer (Digits + ByteLevel) or Llama 3's (Split + ByteLevel without regex).
nlohmann::json small_bpe_json(bool llama3) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string G = byte_char(' ');
  const std::vector<std::pair<std::string, std::string>> merges = {
      {G, "t"}, {"h", "e"}, {G + "t", "he"}, {"1", "2"}, {"12", "3"}, {"i", "t"}, {"'", "s"}};
  nlohmann::json m = nlohmann::json::array();
  int id = 256;
  for (auto& [a, b] : merges) {
    vocab[a + b] = id++;
    m.push_back({a, b});
  }
  nlohmann::json pre;
  if (llama3)
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Split"},
              {"pattern",
               {{"Regex",
                 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
              {"behavior", "Isolated"},
              {"invert", false}},
             {{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", false}}}}};
  else
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Digits"}, {"individual_digits", true}},
             {{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", true}}}}};
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 264},
             {"content", "<|endoftext|>"},
             {"special", true},
             {"normalized", false},
             {"lstrip", false},
             {"rstrip", false},
             {"single_word", false}},
            {{"id", 263},
             {"content", "<tool>"},
             {"special", false},
             {"normalized", false},
             {"lstrip", false},
             {"rstrip", false},
             {"single_word", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", nullptr},
          {"decoder",
           {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", llama3},
            {"vocab", vocab},
            {"merges", m}}}};
}

// The vocabulary written into the GGUF file tokenizes text as the directory's tokenizer.json does
// (llamarun's two loaders), for both pre-tokenizers llama.cpp names (smollm, llama-bpe).
TEST(QuantizeHfCli, VocabularyTokenizesAsTheDirectory) {
  for (bool llama3 : {false, true}) {
    TmpDir tmp;
    const std::string m = tmp.path + "/m";
    fs::create_directories(m);
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(kGoldenDir + "/headdim32_vocab1001/" + f, m + "/" + f);
    std::ofstream(m + "/tokenizer.json") << small_bpe_json(llama3).dump();
    std::ofstream(m + "/tokenizer_config.json")
        << R"({"eos_token": "<|endoftext|>", "add_bos_token": false, "chat_template": "{{ messages }}"})";
    const std::string out = tmp.path + "/q.gguf";
    RunResult r = run_llamarun({"quantize", m, out, "Q8_0"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto g = load_model(out);
    auto h = load_model(m);
    ASSERT_TRUE(g->tokenizer && h->tokenizer);
    EXPECT_EQ(meta_str(*g->weights, "tokenizer.ggml.pre", ""), llama3 ? "llama-bpe" : "smollm");
    EXPECT_EQ(g->chat_template, "{{ messages }}");
    EXPECT_EQ(g->tokenizer->eos_id(), 264);
    for (const char* text : {"Hello the world 12345 it's", "  spaces\n\nnew lines 2024 <tool>x", "the123the",
                             "<|endoftext|>", "caf\xC3\xA9 \xE2\x82\xAC 7"}) {
      EXPECT_EQ(g->tokenizer->encode(text, true), h->tokenizer->encode(text, true)) << text;
      EXPECT_EQ(g->tokenizer->encode(text, false), h->tokenizer->encode(text, false)) << text;
    }
    EXPECT_EQ(g->tokenizer->encode("<|endoftext|>", true), std::vector<int32_t>{264});
  }
}

// `bench --random-weights PRESET --quantize TYPE` quantizes the random model under the scheme's rules and
// counts the bytes a decode step streams. The "tiny" preset (hidden 64, intermediate 176, 2 layers, 4 heads
// of 16, 2 KV heads, vocab 512, untied) under Q8_0 (34 bytes per 32 values; ffn_down's 176-value rows fall
// back to F16): per layer q 64x68 + k 32x68 + v 32x68 + o 64x68 + gate/up 176x68 each + down 64x352 = 59520
// B, two layers, plus output 512x68 = 34816: 153856 B of matrices; norms 5 x 64 x 4 B + one Q8_0 embedding
// row 68 B = 1348 B.
TEST(QuantizeHfCli, BenchRandomQuantizedCountsStreamedBytes) {
  RunResult r = run_llamarun({"bench", "--random-weights", "tiny", "--quantize", "q8_0", "--pp", "8", "--tg",
                              "4", "-r", "1", "-t", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"], "random:tiny:Q8_0");
  const auto& b = j["bytes_streamed_per_token"];
  EXPECT_EQ(b["matrices"].get<int64_t>(), 153856);
  EXPECT_EQ(b["norms_and_embedding_row"].get<int64_t>(), 1348);
  // K and V of 2 layers x 2 KV heads x 16 values in f32, over depth 0 + tg/2 = 2 positions on average.
  EXPECT_DOUBLE_EQ(b["kv_mean"].get<double>(), 2.0 * 2 * 2 * 16 * 4 * 2);
  const double total = b["total"].get<double>();
  EXPECT_DOUBLE_EQ(total, 153856 + 1348 + b["kv_mean"].get<double>());
  const double tps = j["tg"]["tok_per_s_median"].get<double>(), gbs = j["tg"]["gbs"].get<double>();
  EXPECT_NEAR(gbs, tps * total / 1e9, 1e-9 * gbs);
  EXPECT_NEAR(j["tg"]["pct_of_read_bandwidth"].get<double>(),
              100 * gbs / j["machine"]["read_bandwidth_gbs"].get<double>(), 1e-9);
  r = run_llamarun({"bench", "--random-weights", "tiny", "--quantize", "q8_0", "--dtype", "f16"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--quantize"), std::string::npos) << r.err;
}

TEST(QuantizeHfCli, BadInput) {
  TmpDir tmp;
  // A directory that is not a model.
  RunResult r = run_llamarun({"quantize", tmp.path, tmp.path + "/x.gguf", "Q8_0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(tmp.path), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path + "/x.gguf"));
  // A model directory whose tokenizer.json has a pre-tokenizer llama.cpp has no name for here.
  const std::string m = tmp.path + "/m";
  fs::create_directories(m);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kGoldenDir + "/gqa_untied/" + f, m + "/" + f);
  std::ofstream(m + "/tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []},
             "pre_tokenizer": {"type": "Whitespace"}})";
  r = run_llamarun({"quantize", m, tmp.path + "/y.gguf", "Q8_0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Whitespace"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path + "/y.gguf"));
}

}  // namespace
