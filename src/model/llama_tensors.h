// One description of a Llama checkpoint: the table of its tensors (role, name in each naming scheme,
// shape from the config, allowed dtypes) and the one validator every backend loads through.
//
//   role       Hugging Face                             GGUF                    Meta (original)
//   tok_embd   model.embed_tokens.weight                token_embd.weight       tok_embeddings.weight
//   out_norm   model.norm.weight                        output_norm.weight      norm.weight
//   lm_head    lm_head.weight                           output.weight           output.weight
//   per layer N (prefix model.layers.N. / blk.N. / layers.N.):
//   attn_norm  input_layernorm.weight                   attn_norm.weight        attention_norm.weight
//   q k v o    self_attn.{q,k,v,o}_proj.weight          attn_{q,k,v,output}     attention.w{q,k,v,o}.weight
//   ffn_norm   post_attention_layernorm.weight          ffn_norm.weight         ffn_norm.weight
//   gate up    mlp.{gate,up}_proj.weight                ffn_{gate,up}.weight    feed_forward.w{1,3}.weight
//   down       mlp.down_proj.weight                     ffn_down.weight         feed_forward.w2.weight
//
// A new naming scheme is one more column (TensorNaming + one name per row); a new stored dtype is one
// more bit in kMatrixDTypes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llamarun {

struct LlamaConfig;
struct LlamaWeights;
struct WeightMap;
struct WeightView;

// The naming scheme of a checkpoint's tensors (a column of the table).
enum class TensorNaming : uint8_t { kHf, kGguf, kMeta };
inline constexpr int kNumTensorNamings = 3;
const char* tensor_naming_name(TensorNaming n);  // "Hugging Face", "GGUF", "Meta"

// What a tensor is in the model (a row of the table).
enum class LlamaTensor : uint8_t {
  kTokEmbd,
  kOutNorm,
  kLmHead,
  kAttnNorm,
  kFfnNorm,
  kQ,
  kK,
  kV,
  kO,
  kGate,
  kUp,
  kDown,
};
inline constexpr int kNumLlamaTensors = 12;

// The config quantity one dimension of a tensor comes from.
enum class LlamaDim : uint8_t {
  kVocab,         // vocab_size
  kHidden,        // hidden_size
  kIntermediate,  // intermediate_size
  kQ,             // num_heads * head_dim
  kKV,            // num_kv_heads * head_dim
};
int64_t llama_dim_value(LlamaDim d, const LlamaConfig& cfg);
// The config field(s) behind `d`, as the naming's config file calls them ("hidden_size",
// "llama.embedding_length", "dim").
const char* llama_dim_label(LlamaDim d, TensorNaming n);

// A set of stored dtypes: one bit per DType.
using DTypeSet = uint32_t;
constexpr DTypeSet dtype_bit(DType t) { return DTypeSet(1) << unsigned(t); }
// Norm weights: plain floating point, never quantised.
inline constexpr DTypeSet kNormDTypes =
    dtype_bit(DType::F32) | dtype_bit(DType::F16) | dtype_bit(DType::BF16);
// Matrices (embedding, projections, lm_head): every dtype the loaders read and the backends convert or
// multiply. Add a bit here when a loader and the kernels learn a new dtype.
inline constexpr DTypeSet kMatrixDTypes =
    kNormDTypes | dtype_bit(DType::Q8_0) | dtype_bit(DType::Q4_0) | dtype_bit(DType::Q4_1) |
    dtype_bit(DType::Q5_0) | dtype_bit(DType::Q5_1) | dtype_bit(DType::Q2_K) | dtype_bit(DType::Q3_K) |
    dtype_bit(DType::Q4_K) | dtype_bit(DType::Q5_K) | dtype_bit(DType::Q6_K) | dtype_bit(DType::IQ4_NL) |
    dtype_bit(DType::IQ4_XS);
bool dtype_in(DType t, DTypeSet s);
std::string dtype_set_str(DTypeSet s);  // "f32, f16 or bf16"

struct LlamaTensorSpec {
  LlamaTensor role;
  const char* role_name;         // "attn_q", ...: for messages and `llamarun info --tensors`
  bool per_layer;                // one per layer; `names` then follow the layer prefix
  int ndim;                      // 1 (norms) or 2 (matrices: [rows, cols])
  std::array<LlamaDim, 2> dims;  // the first `ndim` are used
  DTypeSet dtypes;               // the dtypes it may be stored in
  std::array<const char*, kNumTensorNamings> names;  // indexed by TensorNaming
};

// The table, in load order (global tensors, then per-layer norms, then per-layer matrices).
const std::array<LlamaTensorSpec, kNumLlamaTensors>& llama_tensor_table();
const LlamaTensorSpec& llama_tensor_spec(LlamaTensor t);

// "model.layers.", "blk.", "layers.".
const char* llama_layer_prefix(TensorNaming n);
// The stored name of tensor `t` of layer `layer` (ignored for global tensors) in naming `n`.
std::string llama_tensor_name(LlamaTensor t, int layer, TensorNaming n);

struct LlamaTensorId {
  LlamaTensor role;
  int layer = -1;  // -1 for global tensors
};
// The role of a stored name in naming `n`; nullopt for names outside the table (rope_freqs.weight,
// rotary_emb.inv_freq, ...).
std::optional<LlamaTensorId> parse_llama_tensor_name(const std::string& name, TensorNaming n);

// The shape (outermost-first: [rows, cols] for matrices) that `cfg` implies for `t`.
std::vector<int64_t> llama_tensor_shape(LlamaTensor t, const LlamaConfig& cfg);

// The naming whose token-embedding tensor is in `wm`. Throws Error naming `where` when none is.
TensorNaming detect_tensor_naming(const WeightMap& wm, const std::string& where);

// Whether lm_head is the token embedding (the one rule, for every backend):
//   Hugging Face: iff cfg.tie_embeddings (config.json's tie_word_embeddings);
//   GGUF and Meta: iff the file has no lm_head tensor (llama.cpp's convention: no output.weight).
bool llama_lm_head_tied(const LlamaConfig& cfg, const WeightMap& wm, TensorNaming n);

// The validator. Checks every tensor of the table against `cfg` and binds it:
//   - presence (lm_head only when not tied, see llama_lm_head_tied; for GGUF and Meta cfg.tie_embeddings
//     must agree with the file);
//   - shape (exactly llama_tensor_shape), stored bytes (whole rows of the dtype), dtype (the row's
//     DTypeSet; quantised matrices need whole blocks per row);
//   - no `.bias` tensors (the Llama model has none; a checkpoint with them would load with wrong numerics).
// Tensors outside the table are ignored. Throws Error naming `where` (the model path), the tensor, its
// role, its shard when that differs from `where`, its shape / dtype and what the config expects, e.g.
//   "m/config.json: hidden_size = 64 in the config but tensor 'model.embed_tokens.weight' (tok_embd) is
//    [100, 32] (expected [100, 64])".
// Every backend (the CPU LlamaModel, CudaLlama) takes its weights from this result.
LlamaWeights bind_llama_weights(const LlamaConfig& cfg, const WeightMap& wm, TensorNaming n,
                                const std::string& where);

// The view of tensor `t` (layer ignored for global tensors) in bound weights.
const WeightView& llama_weight(const LlamaWeights& w, LlamaTensor t, int layer);

}  // namespace llamarun
