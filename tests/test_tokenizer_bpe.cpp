// Byte-level BPE: goldens from Hugging Face tokenizers on the corpus
// (tools/make_bpe_tokenizer_goldens.py): SmolLM2's tokenizer.json, the same vocabulary as a GGUF
// `gpt2` vocabulary, and a Llama-3-regex variant; decode goldens; loader errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/utf8.h"
#include "formats/weight_map.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"
#if __has_include("formats/gguf.h")
#include "formats/gguf.h"
#define LLAMARUN_HAVE_GGUF_READER 1
#endif

namespace llamarun {
namespace {

using namespace testutil;
using nlohmann::json;

const std::string kJsonPath = fixture_path("smollm2_tokenizer.json");

const Tokenizer& smollm2() {
  static std::unique_ptr<Tokenizer> tok = load_tokenizer_file(kJsonPath);
  return *tok;
}

// Every corpus line against `golden`; `diff` (optional) replaces some lines ("<index>\t<ids>").
void expect_corpus_matches(const Tokenizer& tok, const std::string& golden, const std::string& diff = "") {
  const auto corpus = read_corpus();
  auto ids = read_ids(golden);
  ASSERT_EQ(corpus.size(), ids.size());
  ASSERT_GE(corpus.size(), 2000u);
  if (!diff.empty()) {
    std::istringstream in(slurp_file(fixture_path(diff)));
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
      const size_t tab = line.find('\t');
      ASSERT_NE(tab, std::string::npos);
      ids.at(std::stoul(line.substr(0, tab))) = parse_ids(line.substr(tab + 1));
      ++n;
    }
    ASSERT_GT(n, 0u);
  }
  size_t bad = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto got = tok.encode(corpus[i]);
    if (got != ids[i] && bad++ == 0) {
      ADD_FAILURE() << "first mismatch at corpus line " << i << ": \"" << escaped(corpus[i])
                    << "\"\n  got      " << show_ids(got) << "\n  expected " << show_ids(ids[i]);
    }
  }
  EXPECT_EQ(bad, 0u) << "mismatching lines of " << corpus.size();
}

// The GGUF `gpt2` vocabulary equivalent of smollm2_tokenizer.json (what convert_hf_to_gguf writes).
WeightMap smollm2_gguf_meta() {
  const json j = json::parse(slurp_file(kJsonPath));
  std::vector<std::string> tokens(j["model"]["vocab"].size());
  for (const auto& [t, id] : j["model"]["vocab"].items()) tokens.at(id.get<size_t>()) = t;
  std::vector<int64_t> types(tokens.size(), 1);
  for (const auto& a : j["added_tokens"]) types.at(a["id"].get<size_t>()) = 3;
  std::vector<std::string> merges;
  for (const auto& m : j["model"]["merges"])
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  WeightMap wm;
  wm.meta["tokenizer.ggml.model"] = std::string("gpt2");
  wm.meta["tokenizer.ggml.pre"] = std::string("smollm");
  wm.meta["tokenizer.ggml.tokens"] = tokens;
  wm.meta["tokenizer.ggml.token_type"] = types;
  wm.meta["tokenizer.ggml.merges"] = merges;
  wm.meta["tokenizer.ggml.bos_token_id"] = uint64_t{1};
  wm.meta["tokenizer.ggml.eos_token_id"] = uint64_t{2};
  wm.meta["tokenizer.ggml.unknown_token_id"] = uint64_t{0};
  wm.meta["tokenizer.ggml.add_bos_token"] = false;
  return wm;
}

TEST(TokenizerBpe, Header) {
  const auto& tok = smollm2();
  EXPECT_STREQ(tok.kind(), "bpe");
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.find_token("<|im_start|>"), 1);
  EXPECT_TRUE(tok.is_control(1));
  EXPECT_FALSE(tok.is_control(17));
  EXPECT_EQ(tok.token_bytes(1), "");
  EXPECT_EQ(tok.piece(1), "<|im_start|>");
  // <|im_end|> and <|endoftext|> stop generation even without configs.
  EXPECT_NE(std::find(tok.stop_ids().begin(), tok.stop_ids().end(), 2), tok.stop_ids().end());
  EXPECT_NE(std::find(tok.stop_ids().begin(), tok.stop_ids().end(), 0), tok.stop_ids().end());
}

TEST(TokenizerBpe, CorpusMatchesHfTokenizers) { expect_corpus_matches(smollm2(), "smollm2.ids"); }

// Lines of a "<index>\t<ids>" file, encoded with parse_special.
void expect_special_lines(const Tokenizer& tok, const std::string& golden) {
  const auto corpus = read_corpus();
  std::istringstream in(slurp_file(fixture_path(golden)));
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos);
    const size_t idx = std::stoul(line.substr(0, tab));
    ASSERT_LT(idx, corpus.size());
    const auto expect = parse_ids(line.substr(tab + 1));
    ASSERT_EQ(tok.encode(corpus[idx], true), expect) << "corpus line " << idx << ": " << escaped(corpus[idx]);
    ++n;
  }
  EXPECT_GT(n, 50u);
}

TEST(TokenizerBpe, ParseSpecialMatchesHfTokenizers) {
  expect_special_lines(smollm2(), "smollm2.special.ids");
  EXPECT_EQ(smollm2().encode("<|im_start|>user\nhi<|im_end|>", true).front(), 1);
}

TEST(TokenizerBpe, AddedTokenStripMatchesHfTokenizers) {
  // As STRIP_FLAGS in tools/make_bpe_tokenizer_goldens.py.
  json j = json::parse(slurp_file(kJsonPath));
  for (auto& a : j["added_tokens"]) {
    const std::string c = a["content"].get<std::string>();
    if (c == "<|im_start|>") a["lstrip"] = true;
    if (c == "<|im_end|>") a["rstrip"] = true;
    if (c == "<|endoftext|>") a["lstrip"] = a["rstrip"] = true;
  }
  auto tok = tokenizer_from_hf_json(j.dump(), "strip");
  expect_special_lines(*tok, "smollm2.strip.ids");
  EXPECT_EQ(tok->encode("a \u3000 <|endoftext|>\n\tb", true), smollm2().encode("a<|endoftext|>b", true));
}

TEST(TokenizerBpe, DecodeMatchesHfTokenizers) {
  const auto cases = read_decode_cases("smollm2.decode.jsonl");
  ASSERT_GE(cases.size(), 400u);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(smollm2().decode(cases[i].ids), cases[i].text)
        << "case " << i << " ids " << show_ids(cases[i].ids);
  }
}

TEST(TokenizerBpe, RoundTrip) {
  // Byte-level BPE is lossless when every byte has a token (SmolLM2 lacks a few lead bytes such as
  // 0xF2, which are dropped as HF does); invalid input comes back repaired.
  size_t checked = 0;
  for (const auto& line : read_corpus()) {
    const std::string fixed = utf8_repair(line, Utf8Repair::kMaximalSubpart);
    bool all_bytes = true;
    for (char c : fixed) all_bytes &= smollm2().find_token(bytes_to_byte_level(std::string(1, c))) >= 0;
    if (!all_bytes) continue;
    ASSERT_EQ(smollm2().decode(smollm2().encode(line)), fixed) << escaped(line);
    ++checked;
  }
  EXPECT_GT(checked, 1500u);
}

TEST(TokenizerBpe, FromGgufVocabulary) {
  auto tok = tokenizer_from_gguf(smollm2_gguf_meta());
  EXPECT_STREQ(tok->kind(), "bpe");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_FALSE(tok->add_bos());
  expect_corpus_matches(*tok, "smollm2.ids");
}

TEST(TokenizerBpe, GgufVocabularyErrors) {
  WeightMap wm = smollm2_gguf_meta();
  wm.meta["tokenizer.ggml.pre"] = std::string("qwen2");
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm = smollm2_gguf_meta();
  wm.meta["tokenizer.ggml.eos_token_id"] = uint64_t{1} << 40;
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm = smollm2_gguf_meta();
  std::get<std::vector<std::string>>(wm.meta["tokenizer.ggml.merges"])[5] = "nospace";
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm = smollm2_gguf_meta();
  std::get<std::vector<std::string>>(wm.meta["tokenizer.ggml.merges"])[5] = "zzzq qqqz";
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm = smollm2_gguf_meta();
  std::get<std::vector<int64_t>>(wm.meta["tokenizer.ggml.token_type"]).pop_back();
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm = smollm2_gguf_meta();
  wm.meta.erase("tokenizer.ggml.merges");
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  EXPECT_THROW(tokenizer_from_gguf(WeightMap{}), Error);
}

#ifdef LLAMARUN_HAVE_GGUF_READER
TEST(TokenizerBpe, FromDefaultModelGguf) {
  const std::string path = std::string(LLAMARUN_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is not present";
  const WeightMap wm = read_gguf(path);
  auto tok = tokenizer_from_gguf(wm);
  expect_corpus_matches(*tok, "smollm2.ids");
  const std::string tmpl = gguf_chat_template(wm);
  EXPECT_EQ(detect_chat_format(tmpl, *tok), ChatFormat::kChatML);
  EXPECT_EQ(chat_options_from_template(ChatFormat::kChatML, tmpl).default_system.value_or(""),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}
#endif

TEST(TokenizerBpe, Llama3RegexVariant) {
  // Same vocabulary, Llama 3's pre-tokenizer (Split regex + ByteLevel without regex), ignore_merges,
  // merges as "a b" strings: as in tools/make_bpe_tokenizer_goldens.py.
  json j = json::parse(slurp_file(kJsonPath));
  json merges = json::array();
  for (const auto& m : j["model"]["merges"])
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  j["model"]["merges"] = merges;
  j["model"]["ignore_merges"] = true;
  const std::string pat =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", pat}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  auto tok = tokenizer_from_hf_json(j.dump(), "llama3-variant");
  expect_corpus_matches(*tok, "smollm2.ids", "smollm2_llama3regex.ids");

  // The same through a GGUF vocabulary with pre "llama-bpe".
  WeightMap wm = smollm2_gguf_meta();
  wm.meta["tokenizer.ggml.pre"] = std::string("llama-bpe");
  expect_corpus_matches(*tokenizer_from_gguf(wm), "smollm2.ids", "smollm2_llama3regex.ids");
}

TEST(TokenizerBpe, JsonErrors) {
  EXPECT_THROW(tokenizer_from_hf_json("{", "x"), Error);
  EXPECT_THROW(tokenizer_from_hf_json("[]", "x"), Error);
  EXPECT_THROW(tokenizer_from_hf_json(R"({"model": {"type": "Unigram", "vocab": []}})", "x"), Error);
  EXPECT_THROW(tokenizer_from_hf_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "x"), Error);
  try {
    tokenizer_from_hf_json(R"({"model": {"type": "Unigram", "vocab": []}})", "my/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("my/tokenizer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos) << e.what();
  }
  const char* base = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [MERGES]},
                         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}})";
  auto with = [&](const std::string& merges) {
    std::string s = base;
    s.replace(s.find("MERGES"), 6, merges);
    return s;
  };
  auto ok = tokenizer_from_hf_json(with(R"("a b")"), "x");
  EXPECT_EQ(ok->encode("ab"), std::vector<int32_t>{2});
  EXPECT_EQ(ok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(ok->encode("aXb"),
            std::vector<int32_t>{2});  // a byte missing from the vocabulary is dropped (HF)
  EXPECT_THROW(tokenizer_from_hf_json(with(R"("a c")"), "x"), Error);  // c not in vocab
  EXPECT_THROW(tokenizer_from_hf_json(with(R"("ab")"), "x"), Error);   // not a pair
  EXPECT_THROW(tokenizer_from_hf_json(with(R"(["a"])"), "x"), Error);  // not a pair
  EXPECT_THROW(tokenizer_from_hf_json(with(R"(5)"), "x"), Error);
  std::string bad_regex = with(R"("a b")");
  bad_regex.replace(
      bad_regex.find(R"({"type": "ByteLevel")"), 0,
      R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(["}}, )");
  bad_regex.replace(bad_regex.rfind("}}"), 2, "}]}}");
  EXPECT_THROW(tokenizer_from_hf_json(bad_regex, "x"), Error);
  // Sparse ids far beyond the vocabulary (a huge allocation) are rejected.
  std::string sparse = with(R"("a b")");
  sparse.replace(sparse.find(R"("ab": 2)"), 8, R"("ab": 1000000000)");
  EXPECT_THROW(tokenizer_from_hf_json(sparse, "x"), Error);
  // Deeply nested pre-tokenizer sequences are rejected, not recursed into.
  std::string deep = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": )";
  for (int i = 0; i < 10000; ++i) deep += R"({"type": "Sequence", "pretokenizers": [)";
  deep += "null";
  for (int i = 0; i < 10000; ++i) deep += "]}";
  deep += "}";
  EXPECT_THROW(tokenizer_from_hf_json(deep, "x"), Error);
}

// Issue 9, fault 10: find_unencodable flags exactly the corpus lines that HF tokenizers cannot
// round-trip with this vocabulary (tools/make_lossy_goldens.py).
TEST(TokenizerBpe, UnencodableMatchesHfLoss) {
  const auto corpus = read_corpus();
  std::istringstream in(slurp_file(fixture_path("smollm2.lossy")));
  std::string line;
  size_t n = 0, lossy = 0;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    const size_t i = std::stoul(line.substr(0, tab));
    const bool want = line.substr(tab + 1) == "1";
    const size_t at = smollm2().find_unencodable(corpus.at(i));
    EXPECT_EQ(at != std::string::npos, want) << "corpus line " << i;
    if (at != std::string::npos) {
      EXPECT_LT(at, corpus[i].size());
      EXPECT_EQ(smollm2().find_unencodable(corpus[i].substr(0, at)), std::string::npos);
    }
    lossy += want;
    ++n;
  }
  EXPECT_GE(n, 2000u);
  EXPECT_GE(lossy, 20u);
  // U+40000 and U+BFFFF lose their first byte (0xF1 / 0xF2); U+3FFFF and U+C0000 do not.
  EXPECT_EQ(smollm2().find_unencodable("ab\xf1\x80\x80\x80"), 2u);
  EXPECT_EQ(smollm2().find_unencodable("\xf2\xbf\xbf\xbf"), 0u);
  EXPECT_EQ(smollm2().find_unencodable("\xf0\xbf\xbf\xbf \xf3\x80\x80\x80"), std::string::npos);
}

// Issue 9, fault 9: a garbage decoder or post_processor is refused, naming the field.
TEST(TokenizerBpe, GarbageDecoderOrPostProcessorRejected) {
  const json base = json::parse(slurp_file(kJsonPath));
  auto load_with = [&](const char* field, const json& v) {
    json j = base;
    j[field] = v;
    return tokenizer_from_hf_json(j.dump(), "t.json");
  };
  for (const char* field : {"decoder", "post_processor"}) {
    for (const json& bad : {json("garbage"), json(5), json::array(), json::object(), json{{"type", "Nope"}},
                            json{{"type", 3}}, json{{"type", "Sequence"}},
                            json{{"type", "Sequence"},
                                 {"decoders", {json{{"type", "X"}}}},
                                 {"processors", {json{{"type", "X"}}}}}}) {
      try {
        load_with(field, bad);
        ADD_FAILURE() << field << " = " << bad.dump() << " accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
      }
    }
    EXPECT_NO_THROW(load_with(field, nullptr));
  }
  EXPECT_NO_THROW(load_with("decoder", json{{"type", "ByteLevel"}}));
  EXPECT_THROW(load_with("post_processor", json{{"type", "TemplateProcessing"}, {"single", 5}}), Error);
}

TEST(TokenizerBpe, LoadDirReadsConfigs) {
  const auto dir = std::filesystem::temp_directory_path() / "llamarun_tok_dir_test";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kJsonPath, dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": true})";
  std::ofstream(dir / "config.json") << R"({"bos_token_id": 0, "eos_token_id": [0, 5]})";
  auto tok = load_tokenizer_dir(dir.string());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->add_bos());
  for (int id : {0, 2, 5}) {
    EXPECT_NE(std::find(tok->stop_ids().begin(), tok->stop_ids().end(), id), tok->stop_ids().end()) << id;
  }
  std::filesystem::remove_all(dir);
  EXPECT_THROW(load_tokenizer_dir(dir.string()), Error);
}

TEST(TokenizerBpe, HugeWhitespaceRunsDoNotHitRegexLimits) {
  // Llama 3's \s*[\r\n]+ backtracks over a whole run of spaces: 16M spaces exceed PCRE2's default
  // match limit, which must not turn into an error.
  Regex llama3(kLlama3Pattern, "llama3");
  std::string s(16'000'000, ' ');
  s += "x";
  const auto m = llama3.find_all(s);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{0, 15'999'999}));
  EXPECT_EQ(m[1], (std::pair<size_t, size_t>{15'999'999, 16'000'001}));
}

TEST(TokenizerBpe, EncodeSpeed) {
  std::string big;
  for (const auto& l : read_corpus()) big += l;
  auto tok = load_tokenizer_file(kJsonPath);  // fresh: no cached words
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(big);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("bpe: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)\n", big.size(), ids.size(), s,
              big.size() / s / 1e6);
  EXPECT_LT(s, 5.0);
}

}  // namespace
}  // namespace llamarun
