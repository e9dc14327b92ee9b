// Writers behind `llamarun convert`: a loaded Llama model (any source: Meta checkpoint, Hugging Face
// directory, GGUF) out as a Hugging Face safetensors directory or a GGUF file.
//
// Q/K row order: Hugging Face checkpoints rotate halves (RopeLayout::kHalf), GGUF and Meta rotate
// interleaved pairs (kInterleaved). The source's order is cfg.rope_layout; wq/wk rows are permuted
// when the target's order differs (per head: interleaved row 2i + j <-> half row j * head_dim/2 + i,
// the permutation of transformers' convert_llama_weights_to_hf.py and its inverse).
#pragma once

#include <map>
#include <string>

#include "formats/weight_map.h"
#include "model/config.h"

namespace llamarun {

struct ConvertSource {
  const LlamaConfig* cfg = nullptr;
  const WeightMap* weights = nullptr;
  bool gguf_names = false;    // tensors named as in GGUF (GGUF files and Meta checkpoints), else HF
  std::string tokenizer_dir;  // where tokenizer.model / tokenizer.json / tokenizer_config.json live; "" none
  std::string name;           // general.name for GGUF
};

// Writes OUT_DIR/config.json, OUT_DIR/model.safetensors (HF names, half-rotation Q/K) and copies the
// tokenizer files of the source (tokenizer.model, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json; a tokenizer_config.json naming BOS/EOS is written
// when the source has only tokenizer.model). Weights must be F32, F16 or BF16 (safetensors has no
// GGML block types). `out_dir` is created; existing files in it are replaced.
void write_hf_safetensors(const ConvertSource& src, const std::string& out_dir);

struct QuantScheme;

// What write_gguf_model wrote.
struct GgufWriteSummary {
  size_t tensors = 0;
  std::map<std::string, int> types;  // tensor count per dtype name
  size_t in_bytes = 0, out_bytes = 0;
};

// Writes a GGUF v3 file as llama.cpp's convert_hf_to_gguf.py lays a Llama model out:
//  - general.* (architecture, type, name, file_type, quantization_version) and the llama.* hyperparameters
//    (context/embedding/feed-forward length, block count, head counts, key/value length, rope dimension
//    count and freq base, RMS epsilon, vocab size, linear rope scaling);
//  - the vocabulary (see add_gguf_vocabulary);
//  - tensors under GGUF names, wq/wk rows in the interleaved RoPE order, in llama.cpp's order
//    (token_embd, rope_freqs, blk.0.*, blk.1.*, ..., output_norm, output: gguf_tensor_order_less), Llama 3
//    rope scaling as the F32 rope_freqs.weight tensor of per-frequency divisors.
// Without `quant` every matrix keeps its stored dtype (quantised types too); 1-D tensors are written F32.
// With it the matrices are converted under the scheme's mixing rules (choose_quant_type: what `llamarun
// quantize` does to a GGUF file), so quantising a Hugging Face directory gives the same file as converting it
// to GGUF at its own dtype and quantising that. `progress_label` names the progress bar.
GgufWriteSummary write_gguf_model(const ConvertSource& src, const std::string& out_path,
                                  const QuantScheme* quant = nullptr,
                                  const std::string& progress_label = "convert -> gguf");

class GgufWriter;

// The tokenizer metadata convert_hf_to_gguf.py writes for a Llama model, from the files of `dir`:
//  - tokenizer.model (SentencePiece; preferred when present, as llama.cpp does): tokenizer.ggml.model
//    "llama", pre "default", tokens, scores, token types, bos/eos/unk from the model, add_space_prefix;
//  - else a tokenizer.json with a byte-level BPE model: model "gpt2", pre "smollm" (Digits + ByteLevel
//    pre-tokenizer) or "llama-bpe" (Llama 3's Split regex), tokens (vocabulary and added tokens; added
//    tokens CONTROL when special or shaped <|...|>, else USER_DEFINED), token types, merges (a pair's
//    spaces written as U+0120, as the gguf package does);
//  then the special tokens as the gguf package's SpecialVocab reads them: bos/eos/unk/sep/pad/cls/mask ids
//  (tokenizer_config.json's *_token among the added tokens, else config.json's *_token_id), add_bos/eos
//  (tokenizer_config.json, else the tokenizer.json TemplateProcessing post-processor) and the chat
//  template (tokenizer_config.json's chat_template, else chat_template.jinja). The token list is padded to
//  `vocab_size` with UNUSED "[PADn]" tokens. Returns false (writing nothing) when `dir` has neither
//  file; throws Error naming the file for a tokenizer it cannot write (another pre-tokenizer, a
//  byte-fallback tokenizer.json without tokenizer.model, more tokens than vocab_size).
bool add_gguf_vocabulary(GgufWriter& w, const std::string& dir, const LlamaConfig& cfg);

}  // namespace llamarun
