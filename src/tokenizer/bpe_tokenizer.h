// BPE with ranked merges, encoding as Hugging Face tokenizers does. Two flavours:
//  - byte-level (GPT-2 style; SmolLM2, Llama 3): added tokens are split out first (special ones
//    only when parse_special), the rest is pre-tokenized (regex splits), each piece's bytes become
//    symbols (GPT-2's byte-to-unicode alphabet);
//  - byte fallback (sentencepiece models converted to tokenizer.json: Llama 2, Mistral): each
//    plain segment is normalized (Prepend "▁", Replace " " -> "▁", or Metaspace) and is one word
//    of UTF-8 characters; a character missing from the vocabulary becomes <0xXX> byte tokens.
// Then the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no merge
// applies. Invalid UTF-8 input is first repaired to U+FFFD (maximal subparts), as a user of that
// library must do before handing it text.
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
  // [n] strings as stored (byte-level alphabet, or sentencepiece pieces); "" for unused ids
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order (rank 0 first)
  // Added tokens: matched literally in the text before pre-tokenization. Special ones only when
  // encode(parse_special=true); they are control tokens (decode drops them).
  struct Added {
    int32_t id;
    std::string content;
    bool special;
    bool lstrip = false, rstrip = false;  // absorb whitespace before / after a match (HF)
  };
  std::vector<Added> added;
  PreTokenizer pre;            // byte-level flavour only
  bool ignore_merges = false;  // a word that is itself a token is not merged (Llama 3)
  int32_t unk_id = -1;         // characters missing from the vocabulary (else they are dropped)
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;

  // Byte-fallback flavour.
  bool byte_fallback = false;
  bool fuse_unk = false;  // consecutive unknown characters give one unk
  struct NormOp {
    enum class Kind { kPrepend, kReplace } kind;
    std::string a, b;             // prepend a / replace a with b
    bool first_only = false;      // prepend only to a segment at the start of the text
    bool unless_present = false;  // prepend only if the text does not already start with a
  };
  std::vector<NormOp> normalizer;   // applied in order to each plain segment
  bool decode_strip_space = false;  // the decoder strips one leading space (HF Strip decoder)
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Validates the vocabulary and merges; throws Error naming `what`.
  BpeTokenizer(BpeVocab vocab, const std::string& what);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const override;
  std::vector<int32_t> encode_spans(
      std::string_view text, const std::vector<std::pair<size_t, size_t>>& special_spans) const override;
  size_t find_unencodable(std::string_view text) const override;
  std::string token_bytes(int32_t id) const override;
  std::string piece(int32_t id) const override;
  int32_t find_token(std::string_view piece) const override;
  const char* kind() const override { return "bpe"; }
  // Byte-fallback flavour: decodes as HF's ByteFallback decoder does (a run of byte tokens that
  // is not valid UTF-8 gives one U+FFFD per token).
  std::string decode(const std::vector<int32_t>& ids) const override;
  bool strips_leading_space(int32_t id) const override;

 private:
  void encode_segment(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  // Byte-level: one pre-tokenized piece (raw bytes).
  void encode_word(const std::string& word, std::vector<int32_t>& out) const;
  // Byte fallback: one normalized segment.
  void encode_chars(const std::string& word, std::vector<int32_t>& out) const;
  // Applies the merges to a symbol sequence in place.
  void merge(std::vector<int32_t>& ids) const;

  std::vector<std::string> tokens_;   // [n] as stored
  std::vector<std::string> bytes_;    // [n] raw bytes each token stands for
  std::vector<uint8_t> is_byte_;      // [n] byte-fallback <0xXX> tokens
  StringMap<int32_t> by_string_;      // stored string -> id
  StringMap<int32_t> model_;          // model vocabulary: raw bytes (byte-level) or piece -> id
  std::array<int32_t, 256> byte_id_;  // single-byte symbols / <0xXX> tokens (-1: none)
  struct MergeInfo {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, MergeInfo> merges_;  // (left id << 32 | right id) -> merge
  PreTokenizer pre_;
  SpecialMatcher added_all_;    // every added token
  SpecialMatcher added_plain_;  // non-special added tokens (always matched)
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  std::vector<BpeVocab::NormOp> normalizer_;
  bool decode_strip_space_ = false;

  // Word -> ids cache for the byte-level flavour (pre-tokenized words repeat a lot).
  static constexpr size_t kCacheMax = 50000;
  mutable std::mutex cache_mu_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace llamarun
