// The content of a SentencePiece model (the `tokenizer.model` protobuf, or the equivalent GGUF
// `llama` vocabulary): pieces with scores and types, and the normalizer flags the BPE encoder needs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llamarun {

// sentencepiece's ModelProto.SentencePiece.Type (GGUF token_type uses the same numbers).
enum class SpmPieceType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SpmModel {
  std::vector<std::string> pieces;  // [n] piece strings ("▁the", "<0x0A>", "<s>")
  std::vector<float> scores;        // [n] merge priority (higher merges first)
  std::vector<SpmPieceType> types;  // [n]
  int model_type = 2;               // TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // TrainerSpec ids (-1: none)
  std::string unk_surface = " \xE2\x81\x87 ";           // what decode prints for <unk>
  // NormalizerSpec (no precompiled charsmap: only the identity normalization is supported).
  std::string normalizer_name;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;
};

// Parses a serialized ModelProto. Throws Error naming `what` for corrupt or unsupported content.
SpmModel parse_spm_model(std::string_view data, const std::string& what);
// Reads and parses a `tokenizer.model` file.
SpmModel read_spm_model_file(const std::string& path);

}  // namespace llamarun
