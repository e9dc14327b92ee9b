// Byte-level BPE with ranked merges (GPT-2 style; SmolLM2, Llama 3), encoding as Hugging Face
// tokenizers does: added tokens are split out first (special ones only when parse_special), the
// rest is pre-tokenized (regex splits), each piece's bytes become symbols (GPT-2's byte-to-unicode
// alphabet), and the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no
// merge applies. Invalid UTF-8 input is first repaired to U+FFFD (maximal subparts), as a
// reference user must do before handing text to that library.
#pragma once

#include <array>
#include <mutex>
#include <unordered_map>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/special_tokens.h"
#include "tokenizer/string_map.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {

struct BpeVocab {
  std::vector<std::string> tokens;  // [n] strings as stored (byte-level alphabet); "" for unused ids
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order (rank 0 first)
  // Added tokens: matched literally in the text before pre-tokenization. Special ones only when
  // encode(parse_special=true); they are control tokens (decode drops them).
  struct Added {
    int32_t id;
    std::string content;
    bool special;
  };
  std::vector<Added> added;
  PreTokenizer pre;
  bool ignore_merges = false;  // a piece that is itself a token is not merged (Llama 3)
  int32_t unk_id = -1;
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Validates the vocabulary and merges; throws Error naming `what`.
  BpeTokenizer(BpeVocab vocab, const std::string& what);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const override;
  std::string token_bytes(int32_t id) const override;
  std::string piece(int32_t id) const override;
  int32_t find_token(std::string_view piece) const override;
  const char* kind() const override { return "bpe"; }

 private:
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(const std::string& word, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;   // [n] as stored
  std::vector<std::string> bytes_;    // [n] raw bytes each token stands for
  StringMap<int32_t> by_string_;      // stored string -> id
  StringMap<int32_t> by_bytes_;       // raw bytes -> id (model vocabulary)
  std::array<int32_t, 256> byte_id_;  // single-byte symbols (-1: not in the vocabulary)
  struct MergeInfo {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, MergeInfo> merges_;  // (left id << 32 | right id) -> merge
  PreTokenizer pre_;
  SpecialMatcher added_all_;    // every added token
  SpecialMatcher added_plain_;  // non-special added tokens (always matched)
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;

  // Word -> ids cache (pre-tokenized pieces repeat a lot).
  static constexpr size_t kCacheMax = 50000;
  mutable std::mutex cache_mu_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace llamarun
