// Sentencepiece models converted to tokenizer.json (BPE with byte_fallback; Llama 2 / Mistral hub
// format): goldens from Hugging Face tokenizers on a shrunken Llama 2 vocabulary
// (tools/make_spm_json_goldens.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace llamarun {
namespace {

using namespace testutil;
using nlohmann::json;

const std::string kSmallJson = fixture_path("llama2_small_tokenizer.json");

// "<index>\t<ids>" lines -> map.
std::map<size_t, std::vector<int32_t>> read_diff(const std::string& name) {
  std::map<size_t, std::vector<int32_t>> out;
  std::istringstream in(slurp_file(fixture_path(name)));
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    out[std::stoul(line.substr(0, tab))] = parse_ids(line.substr(tab + 1));
  }
  return out;
}

void expect_lines(const Tokenizer& tok, bool parse_special,
                  const std::map<size_t, std::vector<int32_t>>& overrides) {
  const auto corpus = read_corpus();
  const auto ids = read_ids("llama2_small.ids");
  ASSERT_EQ(ids.size(), 400u);
  size_t bad = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = overrides.find(i);
    const auto& expect = it == overrides.end() ? ids[i] : it->second;
    const auto got = tok.encode(corpus[i], parse_special);
    if (got != expect && bad++ == 0) {
      ADD_FAILURE() << "first mismatch at corpus line " << i << ": \"" << escaped(corpus[i])
                    << "\"\n  got      " << show_ids(got) << "\n  expected " << show_ids(expect);
    }
  }
  EXPECT_EQ(bad, 0u);
}

TEST(TokenizerSpmJson, CorpusMatchesHfTokenizers) {
  auto tok = load_tokenizer_file(kSmallJson);
  EXPECT_STREQ(tok->kind(), "bpe");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_TRUE(tok->add_bos());  // the TemplateProcessing post-processor puts <s> first
  EXPECT_TRUE(tok->is_control(1));
  expect_lines(*tok, false, {});
  expect_lines(*tok, true, read_diff("llama2_small.special.ids"));
}

TEST(TokenizerSpmJson, MetaspaceVariantMatchesHfTokenizers) {
  json j = json::parse(slurp_file(kSmallJson));
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
  auto tok = tokenizer_from_hf_json(j.dump(), "metaspace");
  expect_lines(*tok, true, read_diff("llama2_small.metaspace.ids"));
  j["pre_tokenizer"]["split"] = true;
  EXPECT_THROW(tokenizer_from_hf_json(j.dump(), "split"), Error);
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THROW(tokenizer_from_hf_json(j.dump(), "whitespace"), Error);
  j["pre_tokenizer"] = nullptr;
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THROW(tokenizer_from_hf_json(j.dump(), "nfkc"), Error);
}

TEST(TokenizerSpmJson, DecodeMatchesHfTokenizers) {
  auto tok = load_tokenizer_file(kSmallJson);
  const auto cases = read_decode_cases("llama2_small.decode.jsonl");
  ASSERT_GE(cases.size(), 300u);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(tok->decode(cases[i].ids), cases[i].text) << "case " << i << " ids " << show_ids(cases[i].ids);
  }
  // Streaming gives the same text when byte runs are valid UTF-8 (an invalid run can only be
  // judged when it ends, so StreamDecoder repairs byte by byte instead of per token).
  size_t streamed_cases = 0;
  for (const auto& c : cases) {
    if (c.text.find("\xEF\xBF\xBD") != std::string::npos) continue;
    StreamDecoder sd(*tok);
    std::string streamed;
    for (int32_t id : c.ids) streamed += sd.push(id);
    streamed += sd.flush();
    EXPECT_EQ(streamed, c.text) << show_ids(c.ids);
    ++streamed_cases;
  }
  EXPECT_GT(streamed_cases, 50u);
}

TEST(TokenizerSpmJson, DirPrefersTokenizerModel) {
  const auto dir = std::filesystem::temp_directory_path() / "llamarun_spm_json_dir_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kSmallJson, dir / "tokenizer.json");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true})";
  auto from_json = load_tokenizer_dir(dir.string());
  EXPECT_STREQ(from_json->kind(), "bpe");
  EXPECT_EQ(from_json->eos_id(), 2);
  EXPECT_TRUE(from_json->add_bos());
  std::filesystem::copy_file(shared_asset("llama2-tokenizer.model"), dir / "tokenizer.model");
  auto from_model = load_tokenizer_dir(dir.string());
  EXPECT_STREQ(from_model->kind(), "spm");
  EXPECT_EQ(from_model->bos_id(), 1);
  EXPECT_EQ(from_model->eos_id(), 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llamarun
