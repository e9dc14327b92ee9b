#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/weight_map.h"
#include "model/llama_tensors.h"

namespace llamarun {

// Upper bounds that keep every derived size (buffers, rope tables, KV cache) far from overflow while
// staying well above any real Llama-family model.
namespace {
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxHidden = 1 << 17;
constexpr int64_t kMaxIntermediate = 1 << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMaxPosition = 1 << 24;

void check_range(const std::string& where, const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) fail(where, ": ", name, " = ", v, " is out of range [", lo, ", ", hi, "]");
}
}  // namespace

void LlamaConfig::validate(const std::string& where) const {
  check_range(where, "vocab_size", vocab_size, 1, kMaxVocab);
  check_range(where, "hidden_size", hidden_size, 1, kMaxHidden);
  check_range(where, "intermediate_size", intermediate_size, 1, kMaxIntermediate);
  check_range(where, "num_layers", num_layers, 1, kMaxLayers);
  check_range(where, "num_heads", num_heads, 1, kMaxHeads);
  check_range(where, "num_kv_heads", num_kv_heads, 1, num_heads);
  check_range(where, "head_dim", head_dim, 2, kMaxHeadDim);
  check_range(where, "max_position", max_position, 1, kMaxPosition);
  if (num_heads % num_kv_heads != 0)
    fail(where, ": num_heads ", num_heads, " is not divisible by num_kv_heads ", num_kv_heads);
  if (head_dim % 2 != 0) fail(where, ": head_dim ", head_dim, " must be even (RoPE rotates pairs)");
  if (!(std::isfinite(rms_eps) && rms_eps > 0.0f && rms_eps < 1.0f))
    fail(where, ": rms_norm_eps = ", rms_eps, " must be in (0, 1)");
  if (!(std::isfinite(rope_theta) && rope_theta > 0.0f))
    fail(where, ": rope_theta = ", rope_theta, " must be positive and finite");
  const RopeScaling& rs = rope_scaling;
  if (rs.type != RopeScaling::Type::kNone && !(std::isfinite(rs.factor) && rs.factor > 0.0f))
    fail(where, ": rope scaling factor = ", rs.factor, " must be positive and finite");
  if (rs.type == RopeScaling::Type::kLlama3) {
    if (!(std::isfinite(rs.low_freq_factor) && std::isfinite(rs.high_freq_factor) &&
          rs.low_freq_factor > 0.0f && rs.high_freq_factor > rs.low_freq_factor))
      fail(where, ": llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got ",
           rs.low_freq_factor, " and ", rs.high_freq_factor);
    check_range(where, "rope_scaling.original_max_position_embeddings", rs.original_max_position, 1,
                kMaxPosition);
  }
  if (bos_id != -1) check_range(where, "bos_token_id", bos_id, 0, vocab_size - 1);
  for (int e : eos_ids) check_range(where, "eos_token_id", e, 0, vocab_size - 1);
}

// ---------------------------------------------------------------- Hugging Face config.json

namespace {

using json = nlohmann::json;

// Integer field: absent or null -> def; present -> must be an integer that fits in int.
int64_t json_int(const json& j, const char* key, int64_t def, const std::string& where,
                 bool required = false) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail(where, ": required field '", key, "' is missing");
    return def;
  }
  if (!it->is_number_integer()) fail(where, ": '", key, "' must be an integer, got ", it->dump());
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int>::max()))
    fail(where, ": '", key, "' = ", it->dump(), " is too large");
  int64_t v = it->get<int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(where, ": '", key, "' = ", v, " is out of range");
  return v;
}

double json_num(const json& j, const char* key, double def, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) fail(where, ": '", key, "' must be a number, got ", it->dump());
  return it->get<double>();
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5) object.
RopeScaling parse_rope_scaling(const json& rs, const char* field, const std::string& where) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) fail(where, ": '", field, "' must be an object or null, got ", rs.dump());
  std::string type;
  for (const char* k : {"rope_type", "type"}) {
    auto it = rs.find(k);
    if (it != rs.end() && !it->is_null()) {
      if (!it->is_string()) fail(where, ": '", field, ".", k, "' must be a string, got ", it->dump());
      type = it->get<std::string>();
      break;
    }
  }
  const std::string w = where + ": " + field;
  if (type.empty() || type == "default") return out;
  if (type == "linear") {
    out.type = RopeScaling::Type::kLinear;
    out.factor = float(json_num(rs, "factor", -1.0, w));
    if (!rs.contains("factor")) fail(where, ": ", field, " of type linear needs 'factor'");
  } else if (type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    for (const char* k :
         {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!rs.contains(k)) fail(where, ": ", field, " of type llama3 needs '", k, "'");
    out.factor = float(json_num(rs, "factor", 1.0, w));
    out.low_freq_factor = float(json_num(rs, "low_freq_factor", 1.0, w));
    out.high_freq_factor = float(json_num(rs, "high_freq_factor", 4.0, w));
    out.original_max_position = int(json_int(rs, "original_max_position_embeddings", 8192, w));
  } else {
    fail(where, ": unsupported rope scaling type '", type, "' in '", field,
         "' (supported: default, linear, llama3)");
  }
  return out;
}

}  // namespace

LlamaConfig config_from_hf_json(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(where, ": config must be a JSON object");

  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty()) fail(where, ": 'architectures' must be a non-empty list");
    bool ok = false;
    std::string names;
    for (const auto& a : *it) {
      if (!a.is_string()) fail(where, ": 'architectures' must list strings, got ", a.dump());
      if (a.get<std::string>() == "LlamaForCausalLM") ok = true;
      names += (names.empty() ? "" : ", ") + a.get<std::string>();
    }
    if (!ok) fail(where, ": unsupported architecture '", names, "' (only LlamaForCausalLM is supported)");
  }
  if (auto it = j.find("model_type"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "llama")
      fail(where, ": unsupported model_type ", it->dump(), " (only \"llama\" is supported)");
  }
  if (!j.contains("architectures") && !j.contains("model_type"))
    fail(where, ": neither 'architectures' nor 'model_type' is given; cannot tell the model is a Llama");

  // Llama variants this engine does not implement must not load silently with wrong numerics.
  for (const char* k : {"attention_bias", "mlp_bias"}) {
    auto it = j.find(k);
    if (it != j.end() && !it->is_null() && !(it->is_boolean() && !it->get<bool>()))
      fail(where, ": '", k, "' = ", it->dump(), " is not supported (no bias tensors)");
  }
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null() && *it != "silu")
    fail(where, ": hidden_act ", it->dump(), " is not supported (only \"silu\")");
  if (auto it = j.find("pretraining_tp"); it != j.end() && it->is_number_integer() && it->get<int64_t>() > 1)
    fail(where, ": pretraining_tp = ", it->dump(), " is not supported (only 1)");

  LlamaConfig c;
  c.architecture = "llama";
  c.vocab_size = int(json_int(j, "vocab_size", 0, where, true));
  c.hidden_size = int(json_int(j, "hidden_size", 0, where, true));
  c.intermediate_size = int(json_int(j, "intermediate_size", 0, where, true));
  c.num_layers = int(json_int(j, "num_hidden_layers", 0, where, true));
  c.num_heads = int(json_int(j, "num_attention_heads", 0, where, true));
  if (c.num_heads <= 0) fail(where, ": num_attention_heads = ", c.num_heads, " must be positive");
  c.num_kv_heads = int(json_int(j, "num_key_value_heads", c.num_heads, where));
  c.head_dim = int(json_int(j, "head_dim", c.hidden_size / c.num_heads, where));
  if (!j.contains("head_dim") && c.hidden_size % c.num_heads != 0)
    fail(where, ": hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ", c.num_heads,
         " and no head_dim is given");
  c.max_position = int(json_int(j, "max_position_embeddings", 2048, where));
  c.rms_eps = float(json_num(j, "rms_norm_eps", 1e-6, where));
  // One rule whether or not rope_parameters (transformers 5) is there: every rope field present is
  // parsed and checked (an unknown scaling type or a bad theta is an error wherever it is), and
  // where the old fields (rope_theta, rope_scaling) and rope_parameters both give a value they
  // must agree.
  c.rope_theta = float(json_num(j, "rope_theta", 10000.0, where));
  const bool top_theta = j.contains("rope_theta") && !j["rope_theta"].is_null();
  if (top_theta && !(std::isfinite(c.rope_theta) && c.rope_theta > 0.0f))
    fail(where, ": rope_theta = ", c.rope_theta, " must be positive and finite");
  RopeScaling scaling;
  const auto it2 = j.find("rope_scaling");
  const bool has_scaling = it2 != j.end() && !it2->is_null();
  if (has_scaling) scaling = parse_rope_scaling(*it2, "rope_scaling", where);
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    const RopeScaling params = parse_rope_scaling(*it, "rope_parameters", where);
    if (has_scaling && (params.type != scaling.type || params.factor != scaling.factor ||
                        params.low_freq_factor != scaling.low_freq_factor ||
                        params.high_freq_factor != scaling.high_freq_factor ||
                        params.original_max_position != scaling.original_max_position))
      fail(where, ": 'rope_scaling' and 'rope_parameters' describe different rope scaling; give one");
    c.rope_scaling = params;
    if (it->is_object() && it->contains("rope_theta") && !(*it)["rope_theta"].is_null()) {
      const float t = float(json_num(*it, "rope_theta", c.rope_theta, where + ": rope_parameters"));
      if (!(std::isfinite(t) && t > 0.0f))
        fail(where, ": rope_parameters.rope_theta = ", t, " must be positive and finite");
      if (top_theta && t != c.rope_theta)
        fail(where, ": rope_theta ", c.rope_theta, " and rope_parameters.rope_theta ", t, " differ");
      c.rope_theta = t;
    }
  } else {
    c.rope_scaling = scaling;
  }
  c.rope_layout = RopeLayout::kHalf;
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail(where, ": 'tie_word_embeddings' must be true or false, got ", it->dump());
    c.tie_embeddings = it->get<bool>();
  }
  c.bos_id = int(json_int(j, "bos_token_id", -1, where));
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer()) fail(where, ": 'eos_token_id' entries must be integers, got ", e.dump());
        int64_t v = e.get<int64_t>();
        if (v < 0 || v > std::numeric_limits<int>::max())
          fail(where, ": eos_token_id ", v, " is out of range");
        c.eos_ids.push_back(int(v));
      }
    } else {
      c.eos_ids.push_back(int(json_int(j, "eos_token_id", -1, where)));
    }
  }
  c.validate(where);
  return c;
}

// ---------------------------------------------------------------- GGUF metadata

namespace {

int64_t gguf_required_int(const WeightMap& wm, const std::string& key, const std::string& where) {
  if (!meta_has(wm, key)) fail(where, ": required metadata key '", key, "' is missing");
  return meta_int(wm, key, 0);
}

int to_int(int64_t v, const std::string& key, const std::string& where) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(where, ": metadata '", key, "' = ", v, " is out of range");
  return int(v);
}

// GGUF's `rope_freqs.weight` (llama.cpp bakes Llama 3 scaling into it): per-dimension divisors of
// the RoPE frequencies, applied as they are.
std::vector<float> read_rope_freq_factors(const TensorInfo& t, const LlamaConfig& c,
                                          const std::string& where) {
  const int64_t half = c.head_dim / 2;
  if (t.dtype != DType::F32 || t.shape.size() != 1 || t.shape[0] != half)
    fail(where, ": rope_freqs.weight must be f32 [", half, "] (head_dim / 2), got ", dtype_name(t.dtype),
         " with ", t.shape.size(), " dims");
  const float* f = static_cast<const float*>(t.data);
  std::vector<float> out(f, f + half);
  for (int64_t i = 0; i < half; ++i)
    if (!std::isfinite(out[i]) || out[i] <= 0)
      fail(where, ": rope_freqs.weight[", i, "] = ", out[i], " is not positive");
  return out;
}

LlamaConfig config_from_gguf_impl(const WeightMap& wm, const std::string& where);

}  // namespace

LlamaConfig config_from_gguf(const WeightMap& wm, const std::string& where) {
  try {
    return config_from_gguf_impl(wm, where);
  } catch (const Error& e) {
    // Metadata accessors name the mapped file; make sure `where` leads every message.
    std::string m = e.what();
    if (m.rfind(where, 0) == 0) throw;
    fail(where, ": ", m);
  }
}

namespace {

LlamaConfig config_from_gguf_impl(const WeightMap& wm, const std::string& where) {
  std::string arch = meta_str(wm, "general.architecture", "");
  if (arch.empty()) fail(where, ": metadata key 'general.architecture' is missing");
  if (arch != "llama") fail(where, ": unsupported architecture '", arch, "' (only 'llama' is supported)");
  const std::string p = "llama.";
  LlamaConfig c;
  c.architecture = "llama";
  auto req = [&](const std::string& k) { return to_int(gguf_required_int(wm, p + k, where), p + k, where); };
  auto opt = [&](const std::string& k, int64_t def) {
    return to_int(meta_int(wm, p + k, def), p + k, where);
  };
  if (meta_int(wm, p + "expert_count", 0) > 0)
    fail(where, ": llama.expert_count = ", meta_int(wm, p + "expert_count", 0),
         ": mixture-of-experts models are not supported");
  c.num_layers = req("block_count");
  c.hidden_size = req("embedding_length");
  c.intermediate_size = req("feed_forward_length");
  c.num_heads = req("attention.head_count");
  if (c.num_heads <= 0) fail(where, ": llama.attention.head_count = ", c.num_heads, " must be positive");
  c.num_kv_heads = opt("attention.head_count_kv", c.num_heads);
  if (meta_has(wm, p + "attention.key_length")) {
    c.head_dim = opt("attention.key_length", 0);
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail(where, ": llama.embedding_length ", c.hidden_size,
           " is not divisible by llama.attention.head_count ", c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (meta_has(wm, p + "attention.value_length") && opt("attention.value_length", 0) != c.head_dim)
    fail(where, ": llama.attention.value_length ", opt("attention.value_length", 0),
         " differs from head_dim ", c.head_dim, " (not supported)");
  if (meta_has(wm, p + "rope.dimension_count") && opt("rope.dimension_count", 0) != c.head_dim)
    fail(where, ": llama.rope.dimension_count ", opt("rope.dimension_count", 0), " differs from head_dim ",
         c.head_dim, " (partial rotary embeddings are not supported)");
  c.max_position = opt("context_length", 2048);
  c.rms_eps = float(meta_float(wm, p + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = float(meta_float(wm, p + "rope.freq_base", 10000.0));

  // Vocabulary size: explicit key, else the tokenizer's token list, else the embedding rows.
  if (meta_has(wm, p + "vocab_size")) {
    c.vocab_size = opt("vocab_size", 0);
  } else if (auto* toks = meta_strs(wm, "tokenizer.ggml.tokens")) {
    c.vocab_size = to_int(int64_t(toks->size()), "tokenizer.ggml.tokens", where);
  } else if (auto* emb = wm.find(llama_tensor_name(LlamaTensor::kTokEmbd, -1, TensorNaming::kGguf));
             emb && emb->shape.size() == 2) {
    c.vocab_size = to_int(emb->shape[0], "token_embd.weight rows", where);
  } else {
    fail(where,
         ": cannot tell the vocabulary size (no llama.vocab_size, tokenizer.ggml.tokens or "
         "token_embd.weight)");
  }

  std::string scaling = meta_str(wm, p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScaling::Type::kLinear;
    if (!meta_has(wm, p + "rope.scaling.factor"))
      fail(where, ": llama.rope.scaling.type is linear but llama.rope.scaling.factor is missing");
    c.rope_scaling.factor = float(meta_float(wm, p + "rope.scaling.factor", 1.0));
  } else if (scaling == "none") {
    if (meta_has(wm, p + "rope.scale_linear")) {  // older files
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      c.rope_scaling.factor = float(meta_float(wm, p + "rope.scale_linear", 1.0));
    }
  } else {
    fail(where, ": unsupported llama.rope.scaling.type '", scaling, "' (supported: none, linear)");
  }
  c.rope_layout = RopeLayout::kInterleaved;
  c.tie_embeddings = llama_lm_head_tied(c, wm, TensorNaming::kGguf);  // no output.weight: tied
  c.bos_id = to_int(meta_int(wm, "tokenizer.ggml.bos_token_id", -1), "tokenizer.ggml.bos_token_id", where);
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (!meta_has(wm, k)) continue;
    int id = to_int(meta_int(wm, k, -1), k, where);
    if (std::find(c.eos_ids.begin(), c.eos_ids.end(), id) == c.eos_ids.end()) c.eos_ids.push_back(id);
  }
  c.validate(where);  // before fitting rope factors: head_dim and theta must be sane
  if (const TensorInfo* rf = wm.find("rope_freqs.weight")) {
    if (c.rope_scaling.type != RopeScaling::Type::kNone)
      fail(where, ": both rope_freqs.weight and llama.rope.scaling.type are given");
    c.rope_freq_factors = read_rope_freq_factors(*rf, c, where);
    c.validate(where);
  }
  return c;
}

}  // namespace

}  // namespace llamarun
