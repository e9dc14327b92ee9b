// Writers behind `llamarun convert`: a loaded Llama model (any source: Meta checkpoint, Hugging Face
// directory, GGUF) out as a Hugging Face safetensors directory or a GGUF file.
//
// Q/K row order: Hugging Face checkpoints rotate halves (RopeLayout::kHalf), GGUF and Meta rotate
// interleaved pairs (kInterleaved). The source's order is cfg.rope_layout; wq/wk rows are permuted
// when the target's order differs (per head: interleaved row 2i + j <-> half row j * head_dim/2 + i,
// the permutation of transformers' convert_llama_weights_to_hf.py and its inverse).
#pragma once

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

// Writes a GGUF v3 file: llama.* hyperparameters, the SentencePiece vocabulary of
// tokenizer_dir/tokenizer.model (tokens, scores, types, bos/eos/unk, add_bos_token) when present,
// tensors under GGUF names in interleaved Q/K order and their stored dtype (quantised types too).
// Llama 3 rope scaling is refused (GGUF carries it as a rope_freqs tensor, not written yet).
void write_gguf_model(const ConvertSource& src, const std::string& out_path);

}  // namespace llamarun
