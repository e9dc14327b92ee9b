// Meta's original Llama checkpoints: a directory with params.json, tokenizer.model and
// consolidated.00.pth .. consolidated.NN.pth (one file per model-parallel rank: 1 for 7B, 2 for 13B,
// 8 for 70B).
//
// Loading keeps Meta's Q/K row order: Meta rotates interleaved pairs (2i, 2i+1), which is exactly the
// order GGUF llama files store, so the tensors are renamed to GGUF names (blk.N.attn_q.weight, ...)
// and the config says RopeLayout::kInterleaved; nothing is permuted. Hugging Face checkpoints are
// permuted to rotate halves instead; `llamarun convert` permutes when writing safetensors.
//
// Shards are joined along each tensor's model-parallel dimension: wq/wk/wv/w1/w3/output along rows
// (dim 0), wo/w2 along columns (dim 1), tok_embeddings along columns (Llama 2's ParallelEmbedding) or
// rows (Llama 3's VocabParallelEmbedding: told apart by the shard's shape), norms replicated (must be
// identical). One shard is used in place from the mapping; several are joined into owned buffers.
#pragma once

#include <string>

#include "formats/weight_map.h"
#include "model/config.h"

namespace llamarun {

// True when `dir` is a directory holding params.json and consolidated.00.pth.
bool is_meta_checkpoint_dir(const std::string& dir);

// Where a Meta checkpoint's tokenizer.model is: `dir` itself, else its parent (Meta's Llama 2
// download keeps one tokenizer.model beside the llama-2-7b/, llama-2-13b/ .. folders); "" if neither.
std::string meta_tokenizer_dir(const std::string& dir);

// Reads and joins the shards of a Meta checkpoint directory; tensors get GGUF names (rope.freqs,
// a buffer Meta's code recomputes, is dropped). The shards must be consolidated.00.pth ..
// consolidated.{n-1}.pth with no gaps. Throws Error naming the file and tensor.
WeightMap load_meta_checkpoint(const std::string& dir);

// The Meta name -> GGUF name table ("" for tensors that are dropped). Throws Error for a name that
// is not part of a Llama checkpoint.
// (To move into the shared tensor-name table of src/model when it exists.)
std::string meta_to_gguf_name(const std::string& meta_name, const std::string& where);

// params.json -> LlamaConfig (rope_layout kInterleaved). vocab_size -1 (or absent) is taken from the
// embedding's rows. intermediate_size follows Meta's FeedForward: int(2 * 4 * dim / 3), times
// ffn_dim_multiplier, rounded up to multiple_of; it must equal ffn_gate's rows. use_scaled_rope
// (Llama 3.1) gives Llama 3 rope scaling (factor 8, low 1, high 4, original context 8192).
// Context length: params' max_seq_len when present, else 131072 with use_scaled_rope, 8192 for a
// vocabulary of >= 128000 (Llama 3), else 4096 (Llama 2).
LlamaConfig config_from_meta_params(const std::string& json_text, const WeightMap& wm,
                                    const std::string& where);

}  // namespace llamarun
