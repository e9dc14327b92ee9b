// Tokenizers: SentencePiece-style BPE with byte fallback (Llama 2; from tokenizer.model or a GGUF
// `llama` vocabulary; spm_tokenizer.h) and BPE with ranked merges (bpe_tokenizer.h): byte-level
// (GPT-2 style; from tokenizer.json or a GGUF `gpt2` vocabulary; SmolLM2, Llama 3) or byte-fallback
// (sentencepiece models converted to tokenizer.json). Chat prompts: chat_template.h.
//
// Thread safety: a loaded Tokenizer is immutable; encode/decode may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llamarun {

struct WeightMap;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids, without BOS (callers add bos_id() when add_bos() says so).
  // parse_special=false: special-token strings in `text` ("<s>", "<|im_start|>") are plain text.
  // parse_special=true: they map to their ids (chat templates use this); each plain segment
  // between them is encoded on its own (sentencepiece: with its own dummy prefix, as HF does).
  // Invalid UTF-8 never throws: it is tokenised as the reference implementation does
  // (sentencepiece: each invalid byte becomes U+FFFD; BPE: the text is first repaired as
  // Python's errors="replace" does, since HF tokenizers only takes valid text).
  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const = 0;
  // As encode(text, true), except that a special-token string is matched only where it lies
  // entirely inside one of `special_spans` (sorted, disjoint byte ranges [first, second));
  // elsewhere it is plain text (chat prompts: the template's markers are special, message content
  // is not). Non-special added tokens match everywhere, as in encode().
  virtual std::vector<int32_t> encode_spans(
      std::string_view text, const std::vector<std::pair<size_t, size_t>>& special_spans) const = 0;

  // The byte offset in `text` of the first byte that encode() drops because the vocabulary has no
  // token for it and no unknown token (Hugging Face's byte-level BPE does the same, silently:
  // SmolLM2's vocabulary lacks the bytes 0xF1/0xF2, the lead bytes of U+40000-U+BFFFF, and some
  // control characters), or npos when nothing is lost. Callers that take outside text report it.
  virtual size_t find_unencodable(std::string_view text) const { return std::string_view::npos; }

  // The raw bytes a token contributes to the output text (byte tokens give their byte, "▁" gives a
  // space, byte-level BPE symbols are mapped back to bytes). Control tokens (BOS/EOS, ...) give "".
  virtual std::string token_bytes(int32_t id) const = 0;
  // The token's string as stored in the vocabulary (for `tokenize` output and debugging).
  virtual std::string piece(int32_t id) const = 0;

  // Ids -> text, always valid UTF-8. Drops control tokens and out-of-range ids; for SentencePiece
  // drops the leading space that the dummy prefix added to the first token, as sentencepiece's
  // decode does. Matches sentencepiece's decode / HF's decode(skip_special_tokens=True).
  virtual std::string decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const { return vocab_size_; }
  int bos_id() const { return bos_id_; }  // -1 when none
  int eos_id() const { return eos_id_; }  // -1 when none
  bool add_bos() const { return add_bos_; }
  // End-of-generation ids: eos_id, the eos ids of config.json / generation_config.json, and the
  // control tokens <|eot_id|>, <|im_end|>, <|end_of_text|>, <|endoftext|>, <|eom_id|> when present.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  bool is_control(int32_t id) const;
  // Id of an exact vocabulary string, or -1.
  virtual int32_t find_token(std::string_view piece) const = 0;
  // "spm" or "bpe"
  virtual const char* kind() const = 0;

  // True when, at the start of decoded text, this token's leading space is dropped (sentencepiece
  // removes the space that its dummy prefix added). Used by decode() and StreamDecoder.
  virtual bool strips_leading_space(int32_t id) const { return false; }
  // How decode()/StreamDecoder replace invalid UTF-8 with U+FFFD: one per invalid byte
  // (sentencepiece) or one per maximal ill-formed subsequence (Hugging Face tokenizers).
  bool repairs_per_byte() const { return repair_per_byte_; }
  // True when a control token between byte tokens ends the byte run (sentencepiece repairs each
  // run of byte tokens on its own); false when control tokens are simply skipped (HF).
  bool control_breaks_bytes() const { return control_breaks_bytes_; }

  void set_bos(int id) { bos_id_ = id; }
  void set_eos(int id);
  void set_add_bos(bool b) { add_bos_ = b; }
  void add_stop_id(int id);

 protected:
  int vocab_size_ = 0;
  int bos_id_ = -1;
  int eos_id_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_ids_;
  std::vector<uint8_t> control_;  // per id: 1 when a control/special token
  bool repair_per_byte_ = false;
  bool control_breaks_bytes_ = false;

  // Adds eos and the known end-of-turn tokens present in the vocabulary to stop_ids_.
  void init_stop_ids();
};

// Loads a tokenizer from a file: `tokenizer.model` (SentencePiece protobuf, BPE type) or
// `tokenizer.json` (Hugging Face tokenizers; BPE models only: other model types, normalizers other
// than Prepend/Replace, and pre-tokenizers other than ByteLevel/Split/Digits/Metaspace are a clear
// Error). Throws Error naming the file on failure.
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path);

// Loads from a Hugging Face model directory: tokenizer.json if present (but tokenizer.model when
// both exist and the json is a sentencepiece conversion), else tokenizer.model; then bos/eos from
// config.json and generation_config.json (bos_token_id, eos_token_id: an int or a list, all of which
// become stop ids), overridden by tokenizer_config.json (bos_token, eos_token: a string or
// {"content": ...}; add_bos_token). Without add_bos_token: sentencepiece true, BPE from the
// tokenizer.json post-processor (TemplateProcessing starting with a special token), else false.
std::unique_ptr<Tokenizer> load_tokenizer_dir(const std::string& dir);

// Builds the tokenizer embedded in a GGUF file (tokenizer.ggml.model = "llama" or "gpt2").
// "llama": tokens, scores, token_type, bos/eos/unknown_token_id, add_bos_token, add_space_prefix.
// "gpt2": tokens, merges, token_type (3 = control -> special, 4 = user-defined -> added token),
// tokenizer.ggml.pre selecting the pre-tokenizer ("smollm", "llama-bpe"/"llama3", "gpt2"/"default").
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const WeightMap& wm);

// The same builders on in-memory content (`what` names the source in error messages).
// A tokenizer.json (Hugging Face tokenizers) with a BPE model.
std::unique_ptr<Tokenizer> tokenizer_from_hf_json(std::string_view json_text, const std::string& what);
// A serialized sentencepiece ModelProto (BPE type).
std::unique_ptr<Tokenizer> tokenizer_from_spm_proto(std::string_view proto, const std::string& what);

// Streaming detokenisation: push ids one at a time and get back only complete UTF-8 text; bytes of
// a character split across tokens are held until the character is complete. Never emits a broken
// UTF-8 sequence; flush() emits what is left (invalid bytes as U+FFFD).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;
  bool first_ = true;
};

}  // namespace llamarun
