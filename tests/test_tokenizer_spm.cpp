// SentencePiece BPE (Llama 2): goldens from the sentencepiece library on the corpus
// (tools/make_tokenizer_goldens.py), decode goldens, GGUF `llama` vocabulary, corrupt files.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/utf8.h"
#include "formats/weight_map.h"
#include "tokenizer/spm_model.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace llamarun {
namespace {

using namespace testutil;

const std::string kModel = shared_asset("llama2-tokenizer.model");

const Tokenizer& llama2() {
  static std::unique_ptr<Tokenizer> tok = load_tokenizer_file(kModel);
  return *tok;
}

void expect_corpus_matches(const Tokenizer& tok, const std::string& golden) {
  const auto corpus = read_corpus();
  const auto ids = read_ids(golden);
  ASSERT_EQ(corpus.size(), ids.size());
  ASSERT_GE(corpus.size(), 2000u);
  size_t bad = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto got = tok.encode(corpus[i]);
    if (got != ids[i]) {
      if (bad++ == 0) {
        ADD_FAILURE() << "first mismatch at corpus line " << i << ": \"" << escaped(corpus[i])
                      << "\"\n  got      " << show_ids(got) << "\n  expected " << show_ids(ids[i]);
      }
    }
  }
  EXPECT_EQ(bad, 0u) << "mismatching lines of " << corpus.size();
}

TEST(TokenizerSpm, ModelHeader) {
  const auto& tok = llama2();
  EXPECT_STREQ(tok.kind(), "spm");
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_TRUE(tok.is_control(1));
  EXPECT_TRUE(tok.is_control(2));
  EXPECT_FALSE(tok.is_control(0));
  EXPECT_EQ(tok.stop_ids(), std::vector<int32_t>{2});
  EXPECT_EQ(tok.piece(29871), "\xE2\x96\x81");
  EXPECT_EQ(tok.token_bytes(3 + 0x41), "A");
  EXPECT_EQ(tok.find_token("<s>"), 1);
  EXPECT_EQ(tok.find_token("no such piece"), -1);
}

TEST(TokenizerSpm, ReadmeExample) {
  // From tests/fixtures/assets/README.md (sentencepiece's output).
  const auto ids = llama2().encode("Hello world! \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x99");
  std::vector<std::string> pieces;
  for (auto id : ids) pieces.push_back(llama2().piece(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xE2\x96\x81Hello", "\xE2\x96\x81world", "!", "\xE2\x96\x81",
                                              "\xE4\xBD\xA0", "\xE5\xA5\xBD", "\xE2\x96\x81", "<0xF0>",
                                              "<0x9F>", "<0xA6>", "<0x99>"}));
}

TEST(TokenizerSpm, CorpusMatchesSentencepiece) { expect_corpus_matches(llama2(), "llama2_spm.ids"); }

TEST(TokenizerSpm, DecodeMatchesSentencepiece) {
  const auto cases = read_decode_cases("llama2_spm.decode.jsonl");
  ASSERT_GE(cases.size(), 400u);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(llama2().decode(cases[i].ids), cases[i].text)
        << "case " << i << " ids " << show_ids(cases[i].ids);
  }
}

TEST(TokenizerSpm, RoundTripValidUtf8) {
  // Identity normalization: valid UTF-8 text without a literal "▁" comes back unchanged.
  size_t checked = 0;
  for (const auto& line : read_corpus()) {
    if (!utf8_is_valid(line) || line.find("\xE2\x96\x81") != std::string::npos) continue;
    EXPECT_EQ(llama2().decode(llama2().encode(line)), line) << escaped(line);
    ++checked;
  }
  EXPECT_GT(checked, 1500u);
}

TEST(TokenizerSpm, ParseSpecial) {
  const auto& tok = llama2();
  const std::string text = "<s>[INST] hi [/INST] ok </s><s>";
  const auto plain = tok.encode(text);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  const auto special = tok.encode(text, true);
  ASSERT_GE(special.size(), 3u);
  EXPECT_EQ(special.front(), 1);
  EXPECT_EQ(special.back(), 1);
  EXPECT_EQ(special[special.size() - 2], 2);
  // Each plain segment is encoded on its own, with a dummy prefix ("▁[" after <s>).
  std::vector<int32_t> expect = {1};
  auto seg = tok.encode("[INST] hi [/INST] ok ");
  expect.insert(expect.end(), seg.begin(), seg.end());
  expect.push_back(2);
  expect.push_back(1);
  EXPECT_EQ(special, expect);
}

TEST(TokenizerSpm, FromGgufVocabulary) {
  // A GGUF `llama` vocabulary holds the same pieces/scores/types; build one from the model.
  const SpmModel m = read_spm_model_file(kModel);
  WeightMap wm;
  std::vector<double> scores(m.scores.begin(), m.scores.end());
  std::vector<int64_t> types;
  for (auto t : m.types) types.push_back(static_cast<int64_t>(t));
  wm.meta["tokenizer.ggml.model"] = std::string("llama");
  wm.meta["tokenizer.ggml.tokens"] = m.pieces;
  wm.meta["tokenizer.ggml.scores"] = scores;
  wm.meta["tokenizer.ggml.token_type"] = types;
  wm.meta["tokenizer.ggml.bos_token_id"] = uint64_t{1};
  wm.meta["tokenizer.ggml.eos_token_id"] = int64_t{2};
  wm.meta["tokenizer.ggml.unknown_token_id"] = uint64_t{0};
  wm.meta["tokenizer.ggml.add_bos_token"] = true;
  auto tok = tokenizer_from_gguf(wm);
  EXPECT_STREQ(tok->kind(), "spm");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->add_bos());
  expect_corpus_matches(*tok, "llama2_spm.ids");

  wm.meta["tokenizer.ggml.eos_token_id"] = int64_t{32000};
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm.meta["tokenizer.ggml.eos_token_id"] = int64_t{2};
  wm.meta["tokenizer.ggml.scores"] = types;  // integers where floats are required
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm.meta["tokenizer.ggml.scores"] = std::vector<double>(10, 0.0);  // wrong length
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
  wm.meta["tokenizer.ggml.model"] = std::string("t5");
  EXPECT_THROW(tokenizer_from_gguf(wm), Error);
}

TEST(TokenizerSpm, UserDefinedAndUnusedPiecesMatchSentencepiece) {
  // The changes tools/make_spm_user_defined_goldens.py made to the model before encoding.
  SpmModel m = read_spm_model_file(kModel);
  auto index = [&](const std::string& p) {
    for (size_t i = 0; i < m.pieces.size(); ++i) {
      if (m.pieces[i] == p) return i;
    }
    ADD_FAILURE() << "no piece " << p;
    return size_t{0};
  };
  m.types[index("the")] = SpmPieceType::kUserDefined;
  m.types[index("\xE2\x96\x81world")] = SpmPieceType::kUnused;
  m.types[index("ing")] = SpmPieceType::kUnused;
  for (const char* p : {"<|user|>", "[INST]", "\xF0\x9F\xA6\x99", "123"}) {
    m.pieces.push_back(p);
    m.scores.push_back(0.0f);
    m.types.push_back(SpmPieceType::kUserDefined);
  }
  SpmTokenizer tok(m, "modified llama2 model");
  const auto corpus = read_corpus();
  const auto ids = read_ids("llama2_userdef.ids");
  ASSERT_EQ(ids.size(), 600u);
  size_t bad = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto got = tok.encode(corpus[i]);
    if (got != ids[i] && bad++ == 0) {
      ADD_FAILURE() << "first mismatch at corpus line " << i << ": \"" << escaped(corpus[i])
                    << "\"\n  got      " << show_ids(got) << "\n  expected " << show_ids(ids[i]);
    }
  }
  EXPECT_EQ(bad, 0u);
  // User-defined pieces decode as their text.
  EXPECT_EQ(tok.decode(tok.encode("say <|user|> 123")), "say <|user|> 123");
}

TEST(TokenizerSpm, CorruptModelsThrow) {
  const std::string good = slurp_file(kModel);
  // Every truncation is either a clean error or (at message boundaries) a valid smaller model.
  for (size_t cut :
       {size_t(0), size_t(1), size_t(2), size_t(5), size_t(100), good.size() / 2, good.size() - 1}) {
    try {
      auto t = tokenizer_from_spm_proto(std::string_view(good).substr(0, cut), "cut");
      (void)t->encode("hello world");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut"), std::string::npos) << e.what();
    }
  }
  // Random byte flips never crash.
  std::string bad = good;
  uint32_t state = 12345;
  for (int round = 0; round < 50; ++round) {
    bad = good;
    for (int k = 0; k < 20; ++k) {
      state = state * 1664525u + 1013904223u;
      bad[state % bad.size()] = static_cast<char>(state >> 24);
    }
    try {
      auto t = tokenizer_from_spm_proto(bad, "flipped");
      (void)t->encode("hello world \xF0\x9F\xA6\x99");
    } catch (const Error&) {
    }
  }
  EXPECT_THROW(tokenizer_from_spm_proto("\x0a\xff\xff\xff\xff\x0f", "len"), Error);  // length past end
  EXPECT_THROW(tokenizer_from_spm_proto("\x0a\x02\x18\x09", "type"), Error);         // piece type 9
  EXPECT_THROW(load_tokenizer_file("/nonexistent/tokenizer.model"), Error);
}

TEST(TokenizerSpm, EncodeSpeed) {
  std::string big;
  for (const auto& l : read_corpus()) big += l;
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = llama2().encode(big);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("spm: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)\n", big.size(), ids.size(), s,
              big.size() / s / 1e6);
  EXPECT_LT(s, 5.0);
}

}  // namespace
}  // namespace llamarun
