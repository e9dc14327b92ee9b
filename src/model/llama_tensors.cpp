#include "model/llama_tensors.h"

#include <cstdlib>

#include "core/error.h"
#include "core/tensor.h"
#include "formats/weight_map.h"
#include "model/config.h"
#include "model/llama.h"

namespace llamarun {

namespace {

using D = LlamaDim;
using T = LlamaTensor;

// clang-format off
// The table. Names of per-layer tensors follow llama_layer_prefix(). Meta's names are those of the
// original consolidated.*.pth checkpoints (llama/model.py); gate/up/down are its w1/w3/w2.
constexpr DTypeSet kN = kNormDTypes, kM = kMatrixDTypes;
constexpr std::array<LlamaTensorSpec, kNumLlamaTensors> kTable = {{
  // {role,        name,        per_layer, ndim, dims,                     dtypes,
  //   {Hugging Face,                     GGUF,                  Meta}}
  {T::kTokEmbd,  "tok_embd",  false, 2, {D::kVocab, D::kHidden},        kM,
   {"model.embed_tokens.weight",       "token_embd.weight",   "tok_embeddings.weight"}},
  {T::kOutNorm,  "out_norm",  false, 1, {D::kHidden, D::kHidden},       kN,
   {"model.norm.weight",               "output_norm.weight",  "norm.weight"}},
  {T::kLmHead,   "lm_head",   false, 2, {D::kVocab, D::kHidden},        kM,
   {"lm_head.weight",                  "output.weight",       "output.weight"}},
  {T::kAttnNorm, "attn_norm", true,  1, {D::kHidden, D::kHidden},       kN,
   {"input_layernorm.weight",          "attn_norm.weight",    "attention_norm.weight"}},
  {T::kFfnNorm,  "ffn_norm",  true,  1, {D::kHidden, D::kHidden},       kN,
   {"post_attention_layernorm.weight", "ffn_norm.weight",     "ffn_norm.weight"}},
  {T::kQ,        "attn_q",    true,  2, {D::kQ, D::kHidden},            kM,
   {"self_attn.q_proj.weight",         "attn_q.weight",       "attention.wq.weight"}},
  {T::kK,        "attn_k",    true,  2, {D::kKV, D::kHidden},           kM,
   {"self_attn.k_proj.weight",         "attn_k.weight",       "attention.wk.weight"}},
  {T::kV,        "attn_v",    true,  2, {D::kKV, D::kHidden},           kM,
   {"self_attn.v_proj.weight",         "attn_v.weight",       "attention.wv.weight"}},
  {T::kO,        "attn_o",    true,  2, {D::kHidden, D::kQ},            kM,
   {"self_attn.o_proj.weight",         "attn_output.weight",  "attention.wo.weight"}},
  {T::kGate,     "ffn_gate",  true,  2, {D::kIntermediate, D::kHidden}, kM,
   {"mlp.gate_proj.weight",            "ffn_gate.weight",     "feed_forward.w1.weight"}},
  {T::kUp,       "ffn_up",    true,  2, {D::kIntermediate, D::kHidden}, kM,
   {"mlp.up_proj.weight",              "ffn_up.weight",       "feed_forward.w3.weight"}},
  {T::kDown,     "ffn_down",  true,  2, {D::kHidden, D::kIntermediate}, kM,
   {"mlp.down_proj.weight",            "ffn_down.weight",     "feed_forward.w2.weight"}},
}};

const char* const kLayerPrefix[kNumTensorNamings] = {"model.layers.", "blk.", "layers."};
const char* const kNamingName[kNumTensorNamings] = {"Hugging Face", "GGUF", "Meta"};

// Config field names per LlamaDim, per naming (config.json, GGUF metadata, Meta's params.json).
const char* const kDimLabel[5][kNumTensorNamings] = {
  {"vocab_size", "vocab size (llama.vocab_size / tokenizer.ggml.tokens)", "vocab_size"},
  {"hidden_size", "llama.embedding_length", "dim"},
  {"intermediate_size", "llama.feed_forward_length",
   "FFN hidden dim (from dim, multiple_of, ffn_dim_multiplier)"},
  {"num_attention_heads x head_dim", "llama.attention.head_count x head_dim", "n_heads x head_dim"},
  {"num_key_value_heads x head_dim", "llama.attention.head_count_kv x head_dim", "n_kv_heads x head_dim"},
};
// clang-format on

constexpr bool table_in_enum_order() {
  for (int i = 0; i < kNumLlamaTensors; ++i)
    if (int(kTable[i].role) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kTable rows must follow LlamaTensor's order");

// "attn_q of layer 3" / "tok_embd".
std::string describe(const LlamaTensorSpec& s, int layer) {
  return s.per_layer ? detail::concat(s.role_name, " of layer ", layer) : std::string(s.role_name);
}

// Checks one tensor against the table and the config; returns its view.
WeightView bind_one(const LlamaConfig& cfg, const WeightMap& wm, const LlamaTensorSpec& s, int layer,
                    TensorNaming n, const std::string& where) {
  const std::string name = llama_tensor_name(s.role, layer, n);
  const std::string desc = describe(s, layer);
  const TensorInfo* t = wm.find(name);
  if (!t) fail(where, ": tensor '", name, "' (", desc, ") is missing from the weights");
  const std::string in_file =
      t->file.empty() || t->file == where ? std::string() : detail::concat(" (in ", t->file, ")");
  const std::vector<int64_t> want = llama_tensor_shape(s.role, cfg);
  if (t->shape.size() != want.size())
    fail(where, ": tensor '", name, "' (", desc, ") is ", shape_str(t->shape), " but the config expects ",
         want.size(), "-D ", shape_str(want), in_file);
  for (int i = 0; i < s.ndim; ++i)
    if (t->shape[i] != want[i])
      fail(where, ": ", llama_dim_label(s.dims[i], n), " = ", want[i], " in the config but tensor '", name,
           "' (", desc, ") is ", shape_str(t->shape), " (expected ", shape_str(want), ")", in_file);
  if (!dtype_in(t->dtype, s.dtypes))
    fail(where, ": tensor '", name, "' (", desc, ") is ", dtype_name(t->dtype), " but ", s.role_name,
         " weights must be ", dtype_set_str(s.dtypes), in_file);
  const int64_t rows = s.ndim == 2 ? want[0] : 1, cols = want.back();
  if (cols % dtype_block_size(t->dtype) != 0)
    fail(where, ": tensor '", name, "' (", desc, ") is ", dtype_name(t->dtype), " with rows of ", cols,
         " values, not a whole number of ", dtype_block_size(t->dtype), "-value blocks", in_file);
  const size_t need = dtype_row_bytes(t->dtype, cols) * size_t(rows);
  if (t->nbytes != need)
    fail(where, ": tensor '", name, "' (", desc, ") holds ", t->nbytes, " bytes but ", shape_str(t->shape),
         " of ", dtype_name(t->dtype), " needs ", need, in_file);
  WeightView v;
  v.dtype = t->dtype;
  v.rows = rows;
  v.cols = cols;
  v.data = t->data;
  return v;
}

}  // namespace

const char* tensor_naming_name(TensorNaming n) { return kNamingName[int(n)]; }

int64_t llama_dim_value(LlamaDim d, const LlamaConfig& c) {
  switch (d) {
    case LlamaDim::kVocab:
      return c.vocab_size;
    case LlamaDim::kHidden:
      return c.hidden_size;
    case LlamaDim::kIntermediate:
      return c.intermediate_size;
    case LlamaDim::kQ:
      return int64_t(c.num_heads) * c.head_dim;
    case LlamaDim::kKV:
      return int64_t(c.num_kv_heads) * c.head_dim;
  }
  return 0;
}

const char* llama_dim_label(LlamaDim d, TensorNaming n) { return kDimLabel[int(d)][int(n)]; }

bool dtype_in(DType t, DTypeSet s) { return (s & dtype_bit(t)) != 0; }

std::string dtype_set_str(DTypeSet s) {
  std::vector<const char*> names;
  for (unsigned i = 0; i < 32; ++i)  // only bits of real DTypes are ever set
    if ((s >> i) & 1u) names.push_back(dtype_name(DType(i)));
  std::string r;
  for (size_t i = 0; i < names.size(); ++i)
    r += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return r;
}

const std::array<LlamaTensorSpec, kNumLlamaTensors>& llama_tensor_table() { return kTable; }

const LlamaTensorSpec& llama_tensor_spec(LlamaTensor t) { return kTable[int(t)]; }

const char* llama_layer_prefix(TensorNaming n) { return kLayerPrefix[int(n)]; }

std::string llama_tensor_name(LlamaTensor t, int layer, TensorNaming n) {
  const LlamaTensorSpec& s = llama_tensor_spec(t);
  if (!s.per_layer) return s.names[int(n)];
  return detail::concat(kLayerPrefix[int(n)], layer, ".", s.names[int(n)]);
}

std::optional<LlamaTensorId> parse_llama_tensor_name(const std::string& name, TensorNaming n) {
  for (const auto& s : kTable)
    if (!s.per_layer && name == s.names[int(n)]) return LlamaTensorId{s.role, -1};
  const std::string prefix = kLayerPrefix[int(n)];
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  size_t i = prefix.size(), j = i;
  while (j < name.size() && j - i < 9 && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '.' || (name[i] == '0' && j - i > 1)) return std::nullopt;
  const int layer = std::atoi(name.c_str() + i);
  const std::string rest = name.substr(j + 1);
  for (const auto& s : kTable)
    if (s.per_layer && rest == s.names[int(n)]) return LlamaTensorId{s.role, layer};
  return std::nullopt;
}

std::vector<int64_t> llama_tensor_shape(LlamaTensor t, const LlamaConfig& cfg) {
  const LlamaTensorSpec& s = llama_tensor_spec(t);
  std::vector<int64_t> shape;
  for (int i = 0; i < s.ndim; ++i) shape.push_back(llama_dim_value(s.dims[i], cfg));
  return shape;
}

TensorNaming detect_tensor_naming(const WeightMap& wm, const std::string& where) {
  const LlamaTensorSpec& e = llama_tensor_spec(LlamaTensor::kTokEmbd);
  std::string tried;
  for (int i = 0; i < kNumTensorNamings; ++i) {
    if (wm.find(e.names[i])) return TensorNaming(i);
    tried += detail::concat(i ? ", " : "", "'", e.names[i], "' (", kNamingName[i], ")");
  }
  fail(where, ": no token embedding tensor: none of ", tried, " is present");
}

bool llama_lm_head_tied(const LlamaConfig& cfg, const WeightMap& wm, TensorNaming n) {
  if (n == TensorNaming::kHf) return cfg.tie_embeddings;
  return wm.find(llama_tensor_name(LlamaTensor::kLmHead, -1, n)) == nullptr;
}

LlamaWeights bind_llama_weights(const LlamaConfig& cfg, const WeightMap& wm, TensorNaming n,
                                const std::string& where) {
  cfg.validate(where);
  for (const auto& [name, t] : wm.tensors)
    if (name.ends_with(".bias"))
      fail(where, ": tensor '", name, "': bias tensors are not supported by the Llama model");
  auto one = [&](LlamaTensor t, int layer) {
    return bind_one(cfg, wm, llama_tensor_spec(t), layer, n, where);
  };

  LlamaWeights w;
  w.tok_embd = one(LlamaTensor::kTokEmbd, -1);
  w.out_norm = one(LlamaTensor::kOutNorm, -1);
  const std::string head = llama_tensor_name(LlamaTensor::kLmHead, -1, n);
  const std::string embd = llama_tensor_name(LlamaTensor::kTokEmbd, -1, n);
  const bool tied = llama_lm_head_tied(cfg, wm, n);
  if (n == TensorNaming::kHf) {
    if (!tied && !wm.find(head))
      fail(where, ": tensor '", head,
           "' (lm_head) is missing and tie_word_embeddings is false in the config (a tied model reuses '",
           embd, "')");
  } else if (tied != cfg.tie_embeddings) {
    fail(where, ": the config says tie_embeddings = ", cfg.tie_embeddings ? "true" : "false", " but the ",
         tensor_naming_name(n), " file ", tied ? "has no" : "has", " '", head, "' (", tensor_naming_name(n),
         " files tie the lm_head to '", embd, "' exactly when '", head, "' is absent)");
  }
  w.lm_head = tied ? w.tok_embd : one(LlamaTensor::kLmHead, -1);
  w.layers.resize(size_t(cfg.num_layers));
  for (int l = 0; l < cfg.num_layers; ++l) {
    LlamaLayerWeights& L = w.layers[size_t(l)];
    L.attn_norm = one(LlamaTensor::kAttnNorm, l);
    L.ffn_norm = one(LlamaTensor::kFfnNorm, l);
    L.wq = one(LlamaTensor::kQ, l);
    L.wk = one(LlamaTensor::kK, l);
    L.wv = one(LlamaTensor::kV, l);
    L.wo = one(LlamaTensor::kO, l);
    L.w_gate = one(LlamaTensor::kGate, l);
    L.w_up = one(LlamaTensor::kUp, l);
    L.w_down = one(LlamaTensor::kDown, l);
  }
  return w;
}

const WeightView& llama_weight(const LlamaWeights& w, LlamaTensor t, int layer) {
  switch (t) {
    case LlamaTensor::kTokEmbd:
      return w.tok_embd;
    case LlamaTensor::kOutNorm:
      return w.out_norm;
    case LlamaTensor::kLmHead:
      return w.lm_head;
    default:
      break;
  }
  if (layer < 0 || size_t(layer) >= w.layers.size())
    fail("llama_weight: layer ", layer, " is outside the model's ", w.layers.size(), " layers");
  const LlamaLayerWeights& L = w.layers[size_t(layer)];
  switch (t) {
    case LlamaTensor::kAttnNorm:
      return L.attn_norm;
    case LlamaTensor::kFfnNorm:
      return L.ffn_norm;
    case LlamaTensor::kQ:
      return L.wq;
    case LlamaTensor::kK:
      return L.wk;
    case LlamaTensor::kV:
      return L.wv;
    case LlamaTensor::kO:
      return L.wo;
    case LlamaTensor::kGate:
      return L.w_gate;
    case LlamaTensor::kUp:
      return L.w_up;
    default:
      return L.w_down;
  }
}

}  // namespace llamarun
