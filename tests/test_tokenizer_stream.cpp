// StreamDecoder and UTF-8 helpers: characters split across byte tokens are held back until
// complete; concatenated pushes + flush equal decode().
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/utf8.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace llamarun {
namespace {

using namespace testutil;

const Tokenizer& spm() {
  static auto t = load_tokenizer_file(shared_asset("llama2-tokenizer.model"));
  return *t;
}
const Tokenizer& bpe() {
  static auto t = load_tokenizer_file(fixture_path("smollm2_tokenizer.json"));
  return *t;
}

// Streams ids one by one; checks no piece is invalid UTF-8 and the total equals decode().
std::vector<std::string> stream(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder sd(tok);
  std::vector<std::string> parts;
  std::string all;
  for (int32_t id : ids) {
    parts.push_back(sd.push(id));
    EXPECT_TRUE(utf8_is_valid(parts.back())) << escaped(parts.back());
    all += parts.back();
  }
  parts.push_back(sd.flush());
  EXPECT_TRUE(utf8_is_valid(parts.back()));
  all += parts.back();
  EXPECT_EQ(all, tok.decode(ids)) << show_ids(ids);
  return parts;
}

TEST(TokenizerStream, SpmEmojiSplitAcrossByteTokens) {
  // "Hi 🦙你" -> ▁Hi ▁ <0xF0><0x9F><0xA6><0x99> 你
  const auto ids = spm().encode("Hi \xF0\x9F\xA6\x99\xE4\xBD\xA0");
  const auto parts = stream(spm(), ids);
  ASSERT_EQ(parts.size(), ids.size() + 1);
  EXPECT_EQ(parts[0], "Hi");  // leading dummy-prefix space dropped
  std::string joined;
  size_t emoji_at = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].find("\xF0\x9F\xA6\x99") != std::string::npos) emoji_at = i;
    joined += parts[i];
  }
  EXPECT_EQ(joined, "Hi \xF0\x9F\xA6\x99\xE4\xBD\xA0");
  // The three bytes before the last one produced nothing.
  EXPECT_EQ(parts[emoji_at - 1], "");
  EXPECT_EQ(parts[emoji_at - 2], "");
  EXPECT_EQ(parts[emoji_at - 3], "");
}

TEST(TokenizerStream, BpeCjkAndEmojiSplitAcrossTokens) {
  // Single-byte tokens for each byte of "日🦙": the characters appear only when complete.
  std::vector<int32_t> ids;
  for (unsigned char c : std::string("\xE6\x97\xA5\xF0\x9F\xA6\x99")) {
    ids.push_back(bpe().find_token(bytes_to_byte_level(std::string(1, static_cast<char>(c)))));
    ASSERT_GE(ids.back(), 0);
  }
  const auto parts = stream(bpe(), ids);
  EXPECT_EQ(parts, (std::vector<std::string>{"", "", "\xE6\x97\xA5", "", "", "", "\xF0\x9F\xA6\x99", ""}));
}

TEST(TokenizerStream, InvalidAndTruncatedBytes) {
  const int32_t f0 = bpe().find_token(bytes_to_byte_level("\xF0"));
  const int32_t x9f = bpe().find_token(bytes_to_byte_level("\x9F"));
  const int32_t a = bpe().find_token("a");
  ASSERT_GE(f0, 0);
  ASSERT_GE(x9f, 0);
  // A lone continuation byte is emitted at once as U+FFFD.
  EXPECT_EQ(stream(bpe(), {x9f, a}), (std::vector<std::string>{"\xEF\xBF\xBD", "a", ""}));
  // A truncated sequence followed by ASCII: one U+FFFD (maximal subpart) when "a" arrives.
  EXPECT_EQ(stream(bpe(), {f0, x9f, a}), (std::vector<std::string>{"", "",
                                                                   "\xEF\xBF\xBD"
                                                                   "a",
                                                                   ""}));
  // Left pending at the end: flush repairs it.
  EXPECT_EQ(stream(bpe(), {a, f0, x9f}), (std::vector<std::string>{"a", "", "", "\xEF\xBF\xBD"}));
  // sentencepiece repairs byte by byte: two bytes, two U+FFFD.
  EXPECT_EQ(stream(spm(), {3 + 0xF0, 3 + 0x9F}),
            (std::vector<std::string>{"", "", "\xEF\xBF\xBD\xEF\xBF\xBD"}));
  // and a control token ends a byte run.
  EXPECT_EQ(stream(spm(), {3 + 0xE4, 2, 3 + 0xBD, 3 + 0xA0}).size(), 5u);
}

TEST(TokenizerStream, CorpusStreamsEqualDecode) {
  const auto corpus = read_corpus();
  for (size_t i = 0; i < corpus.size(); i += 7) {
    stream(spm(), spm().encode(corpus[i]));
    stream(bpe(), bpe().encode(corpus[i]));
  }
  // Random id sequences with many byte tokens and control tokens.
  uint32_t s = 99;
  for (int k = 0; k < 300; ++k) {
    std::vector<int32_t> ids;
    for (int j = 0; j < 12; ++j) {
      s = s * 1664525u + 1013904223u;
      ids.push_back(static_cast<int32_t>((s >> 8) % (k % 2 ? 300 : 32000)));
    }
    stream(spm(), ids);
    stream(bpe(), ids);
  }
}

TEST(TokenizerUtf8, ScanAndRepair) {
  EXPECT_TRUE(utf8_is_valid("a\xC3\xA9\xE4\xBD\xA0\xF0\x9F\xA6\x99"));
  EXPECT_FALSE(utf8_is_valid("\xC0\x80"));
  EXPECT_FALSE(utf8_is_valid("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(utf8_is_valid("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_EQ(utf8_repair("\xE4\xBD"
                        "a",
                        Utf8Repair::kMaximalSubpart),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(utf8_repair("\xE4\xBD"
                        "a",
                        Utf8Repair::kPerByte),
            "\xEF\xBF\xBD\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(utf8_repair("\xED\xA0\x80", Utf8Repair::kMaximalSubpart), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_incomplete_tail("ab\xF0\x9F\xA6"), 3u);
  EXPECT_EQ(utf8_incomplete_tail("ab\xF0\x9F\xA6\x99"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("ab\x9F"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("\xE0\x80"), 0u);  // can never complete
}

TEST(TokenizerUtf8, ByteLevelMapping) {
  EXPECT_EQ(bytes_to_byte_level(" \n!"), "\xC4\xA0\xC4\x8A!");  // "ĠĊ!"
  std::string all, back;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  ASSERT_TRUE(byte_level_to_bytes(bytes_to_byte_level(all), &back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(byte_level_to_bytes(" ", &back));  // a plain space is not in the alphabet
}

}  // namespace
}  // namespace llamarun

namespace llamarun {
namespace {

TEST(TokenizerThreads, ConcurrentEncodeIsConsistent) {
  const auto corpus = testutil::read_corpus();
  auto tok = load_tokenizer_file(testutil::fixture_path("smollm2_tokenizer.json"));
  std::vector<std::vector<int32_t>> expect;
  for (size_t i = 0; i < 400; ++i) expect.push_back(tok->encode(corpus[i]));
  auto fresh = load_tokenizer_file(testutil::fixture_path("smollm2_tokenizer.json"));  // empty word cache
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < 400; i += 2) {
        if (fresh->encode(corpus[i]) != expect[i]) ++bad;
        if (spm().encode(corpus[i]).empty() && !corpus[i].empty()) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace llamarun

namespace llamarun {
namespace {

TEST(TokenizerFuzz, RandomBytesNeverThrow) {
  std::vector<std::unique_ptr<Tokenizer>> toks;
  toks.push_back(load_tokenizer_file(testutil::shared_asset("llama2-tokenizer.model")));
  toks.push_back(load_tokenizer_file(testutil::fixture_path("smollm2_tokenizer.json")));
  toks.push_back(load_tokenizer_file(testutil::fixture_path("llama2_small_tokenizer.json")));
  const char* pieces[] = {"<s>",          "</s>",     "<|im_start|>", "<|im_end|>", " ", "\n",
                          "\xE2\x96\x81", "\xF0\x9F", "\xFF",         "a",          "1", "\xE4\xBD\xA0",
                          "\xC3",         "<unk>",    "'s",           "\t\t"};
  uint32_t st = 2024;
  auto rnd = [&] {
    st = st * 1664525u + 1013904223u;
    return st >> 8;
  };
  for (int round = 0; round < 400; ++round) {
    std::string s;
    const int n = rnd() % 40;
    for (int k = 0; k < n; ++k) {
      if (rnd() % 2) {
        s += static_cast<char>(rnd() & 0xFF);
      } else {
        s += pieces[rnd() % (sizeof(pieces) / sizeof(pieces[0]))];
      }
    }
    for (const auto& tok : toks) {
      for (bool special : {false, true}) {
        std::vector<int32_t> ids;
        ASSERT_NO_THROW(ids = tok->encode(s, special)) << testutil::escaped(s);
        for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
        const std::string text = tok->decode(ids);
        ASSERT_TRUE(utf8_is_valid(text)) << testutil::escaped(s);
        StreamDecoder sd(*tok);
        for (int32_t id : ids) ASSERT_TRUE(utf8_is_valid(sd.push(id)));
        ASSERT_TRUE(utf8_is_valid(sd.flush()));
      }
      // Arbitrary ids, including out-of-range ones, decode to valid UTF-8.
      std::vector<int32_t> ids;
      for (int k = 0; k < 10; ++k) ids.push_back(static_cast<int32_t>(rnd() % (tok->vocab_size() + 10)) - 5);
      ASSERT_TRUE(utf8_is_valid(tok->decode(ids)));
    }
  }
}

}  // namespace
}  // namespace llamarun
