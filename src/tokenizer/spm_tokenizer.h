// SentencePiece-style BPE with byte fallback (Llama 2), encoding exactly as the `sentencepiece`
// library does: identity normalization (invalid UTF-8 bytes become U+FFFD one byte at a time), an
// optional dummy prefix "▁", spaces escaped to "▁"; then the text is split into characters
// (user-defined pieces match literally and are never merged) and the adjacent pair whose
// concatenation is a piece with the highest score is merged (leftmost on ties) until none is left.
// Pieces not in the vocabulary become byte tokens <0xXX> (byte fallback) or <unk>.
#pragma once

#include <array>

#include "tokenizer/special_tokens.h"
#include "tokenizer/spm_model.h"
#include "tokenizer/string_map.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {

class SpmTokenizer final : public Tokenizer {
 public:
  // Validates the model (duplicate pieces, byte pieces, ids in range); throws Error naming `what`.
  SpmTokenizer(SpmModel model, const std::string& what);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const override;
  std::vector<int32_t> encode_spans(
      std::string_view text, const std::vector<std::pair<size_t, size_t>>& special_spans) const override;
  std::string token_bytes(int32_t id) const override;
  std::string piece(int32_t id) const override;
  int32_t find_token(std::string_view piece) const override;
  const char* kind() const override { return "spm"; }
  bool strips_leading_space(int32_t id) const override;

  const SpmModel& model() const { return m_; }

 private:
  // Normalized text ("▁"-escaped, dummy prefix) of one plain-text segment.
  std::string normalize(std::string_view text) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  // Appends the ids for one final symbol (piece lookup, else byte fallback or unk).
  void emit_piece(std::string_view piece, std::vector<int32_t>& out) const;

  SpmModel m_;
  StringMap<int32_t> normal_;    // NORMAL, USER_DEFINED and UNUSED pieces (mergeable)
  StringMap<int32_t> reserved_;  // CONTROL, UNKNOWN and BYTE pieces
  std::array<int32_t, 256> byte_id_;
  SpecialMatcher user_defined_;     // USER_DEFINED pieces: matched literally, never merged
  SpecialMatcher control_text_;     // CONTROL/UNKNOWN pieces: matched when parse_special
  std::vector<std::string> bytes_;  // [n] token_bytes per id
  bool has_unused_ = false;
};

}  // namespace llamarun
