#include "model/convert.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "formats/gguf_writer.h"
#include "model/llama_tensors.h"
#include "tokenizer/spm_model.h"

namespace llamarun {

namespace fs = std::filesystem;

namespace {

// One tensor of a Llama model under both naming schemes. `qk_heads` > 0 marks wq/wk (their rows are
// heads of head_dim rows whose order depends on the RoPE layout).
struct Role {
  std::string hf, gguf;
  int qk_heads = 0;
};

// Every tensor of the model in the shared table's order (model/llama_tensors.h), named both ways.
std::vector<Role> llama_roles(const LlamaConfig& c) {
  std::vector<Role> r;
  for (const LlamaTensorSpec& spec : llama_tensor_table()) {
    if (spec.role == LlamaTensor::kLmHead && c.tie_embeddings) continue;
    const int qk = spec.role == LlamaTensor::kQ   ? c.num_heads
                   : spec.role == LlamaTensor::kK ? c.num_kv_heads
                                                  : 0;
    for (int l = 0; l < (spec.per_layer ? c.num_layers : 1); ++l)
      r.push_back({llama_tensor_name(spec.role, l, TensorNaming::kHf),
                   llama_tensor_name(spec.role, l, TensorNaming::kGguf), qk});
  }
  return r;
}

// A tensor ready to write: its bytes either in the source mapping or in `owned` (permuted copy).
struct OutTensor {
  std::string name;
  const TensorInfo* src = nullptr;
  std::vector<uint8_t> owned;
  const void* data() const { return owned.empty() ? src->data : owned.data(); }
};

// Reorders the rows of a [heads * head_dim, cols] tensor from layout `from` to layout `to`.
std::vector<uint8_t> permute_qk(const TensorInfo& t, int heads, int head_dim, RopeLayout from,
                                RopeLayout to) {
  if (t.shape.size() != 2 || t.shape[0] != int64_t(heads) * head_dim)
    fail(t.file, ": tensor '", t.name, "' has ", t.shape.empty() ? 0 : t.shape[0], " rows, not ", heads,
         " x ", head_dim);
  const size_t rb = t.nbytes / size_t(t.shape[0]);
  std::vector<uint8_t> out(t.nbytes);
  const auto* in = static_cast<const uint8_t*>(t.data);
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h)
    for (int j = 0; j < 2; ++j)
      for (int i = 0; i < half; ++i) {
        const size_t inter = size_t(h) * head_dim + 2 * i + j,
                     halfrow = size_t(h) * head_dim + size_t(j) * half + i;
        const size_t s = from == RopeLayout::kInterleaved ? inter : halfrow;
        const size_t d = to == RopeLayout::kInterleaved ? inter : halfrow;
        std::memcpy(out.data() + d * rb, in + s * rb, rb);
      }
  return out;
}

std::vector<OutTensor> collect(const ConvertSource& src, bool to_gguf) {
  const LlamaConfig& c = *src.cfg;
  const RopeLayout target = to_gguf ? RopeLayout::kInterleaved : RopeLayout::kHalf;
  std::vector<OutTensor> out;
  for (const Role& r : llama_roles(c)) {
    const std::string& from_name = src.gguf_names ? r.gguf : r.hf;
    const TensorInfo& t = src.weights->get(from_name);
    OutTensor o;
    o.name = to_gguf ? r.gguf : r.hf;
    o.src = &t;
    if (r.qk_heads && c.rope_layout != target)
      o.owned = permute_qk(t, r.qk_heads, c.head_dim, c.rope_layout, target);
    out.push_back(std::move(o));
  }
  return out;
}

void write_all(std::ofstream& f, const void* p, size_t n, const std::string& path) {
  f.write(static_cast<const char*>(p), std::streamsize(n));
  if (!f) fail(path, ": write failed");
}

std::ofstream open_out(const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, ": cannot open for writing");
  return f;
}

nlohmann::json hf_config_json(const LlamaConfig& c, DType dt) {
  nlohmann::json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position;
  j["rms_norm_eps"] = c.rms_eps;
  j["rope_theta"] = c.rope_theta;
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = dt == DType::BF16 ? "bfloat16" : dt == DType::F16 ? "float16" : "float32";
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1)
    j["eos_token_id"] = c.eos_ids[0];
  else if (!c.eos_ids.empty())
    j["eos_token_id"] = c.eos_ids;
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rs.factor},
                         {"low_freq_factor", rs.low_freq_factor},
                         {"high_freq_factor", rs.high_freq_factor},
                         {"original_max_position_embeddings", rs.original_max_position}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (!c.rope_freq_factors.empty())
    fail("the source's rope_freqs factors have no Hugging Face config equivalent that llamarun writes");
  return j;
}

const char* st_dtype(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    default:
      return nullptr;
  }
}

}  // namespace

void write_hf_safetensors(const ConvertSource& src, const std::string& out_dir) {
  std::vector<OutTensor> ts = collect(src, false);
  for (auto& t : ts)
    if (!st_dtype(t.src->dtype))
      fail(t.src->file, ": tensor '", t.src->name, "' is ", dtype_name(t.src->dtype),
           "; safetensors output needs F32, F16 or BF16 weights");
  // Larger elements first, so every tensor starts on a multiple of its element size.
  std::stable_sort(ts.begin(), ts.end(), [](const OutTensor& a, const OutTensor& b) {
    return dtype_row_bytes(a.src->dtype, 1) > dtype_row_bytes(b.src->dtype, 1);
  });
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (auto& t : ts) {
    header[t.name] = {{"dtype", st_dtype(t.src->dtype)},
                      {"shape", t.src->shape},
                      {"data_offsets", {off, off + t.src->nbytes}}};
    off += t.src->nbytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h.push_back(' ');
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail(out_dir, ": cannot create directory: ", ec.message());
  const std::string st = out_dir + "/model.safetensors";
  {
    std::ofstream f = open_out(st);
    const uint64_t n = h.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
    write_all(f, len, 8, st);
    write_all(f, h.data(), h.size(), st);
    size_t total = 0;
    for (auto& t : ts) total += t.src->nbytes;
    Progress bar("convert -> safetensors", total);
    for (auto& t : ts) {
      write_all(f, t.data(), t.src->nbytes, st);
      bar.add(t.src->nbytes);
    }
    bar.finish();
    f.close();
    if (!f) fail(st, ": write failed");
  }
  {
    const std::string cp = out_dir + "/config.json";
    std::ofstream f = open_out(cp);
    f << hf_config_json(*src.cfg, ts.front().src->dtype).dump(2) << "\n";
    if (!f) fail(cp, ": write failed");
  }
  if (src.tokenizer_dir.empty()) return;
  bool have_config = false;
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"}) {
    const fs::path from = fs::path(src.tokenizer_dir) / name;
    if (!fs::exists(from)) continue;
    fs::copy_file(from, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(from.string(), ": cannot copy to ", out_dir, ": ", ec.message());
    have_config |= std::string(name) == "tokenizer_config.json";
  }
  const std::string spm = src.tokenizer_dir + "/tokenizer.model";
  if (!have_config && file_exists(spm)) {
    // Meta ships only tokenizer.model; say what Llama's tokenizer does with it.
    SpmModel m = read_spm_model_file(spm);
    auto piece = [&](int id) {
      return id >= 0 && size_t(id) < m.pieces.size() ? m.pieces[size_t(id)] : std::string();
    };
    nlohmann::json tc = {{"tokenizer_class", "LlamaTokenizer"},
                         {"add_bos_token", true},
                         {"add_eos_token", false},
                         {"model_max_length", src.cfg->max_position}};
    if (!piece(m.bos_id).empty()) tc["bos_token"] = piece(m.bos_id);
    if (!piece(m.eos_id).empty()) tc["eos_token"] = piece(m.eos_id);
    if (!piece(m.unk_id).empty()) tc["unk_token"] = piece(m.unk_id);
    const std::string tp = out_dir + "/tokenizer_config.json";
    std::ofstream f = open_out(tp);
    f << tc.dump(2) << "\n";
    if (!f) fail(tp, ": write failed");
  }
}

// ---- GGUF ----------------------------------------------------------------------------------------

void write_gguf_model(const ConvertSource& src, const std::string& out_path) {
  const LlamaConfig& c = *src.cfg;
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3 || !c.rope_freq_factors.empty())
    fail(out_path, ": Llama 3 rope scaling is not written to GGUF yet (convert to safetensors instead)");
  std::vector<OutTensor> ts = collect(src, true);
  GgufWriter w;  // formats/gguf_writer.h: the one GGUF writer (quantize uses it too)
  w.set_str("general.architecture", "llama");
  w.set_str("general.name", src.name.empty() ? "llama" : src.name);
  w.set_u32("llama.context_length", uint32_t(c.max_position));
  w.set_u32("llama.embedding_length", uint32_t(c.hidden_size));
  w.set_u32("llama.block_count", uint32_t(c.num_layers));
  w.set_u32("llama.feed_forward_length", uint32_t(c.intermediate_size));
  w.set_u32("llama.attention.head_count", uint32_t(c.num_heads));
  w.set_u32("llama.attention.head_count_kv", uint32_t(c.num_kv_heads));
  w.set_u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  w.set_u32("llama.vocab_size", uint32_t(c.vocab_size));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_f32("llama.rope.freq_base", c.rope_theta);
  if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    w.set_str("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", c.rope_scaling.factor);
  }
  const std::string spm_path = src.tokenizer_dir.empty() ? "" : src.tokenizer_dir + "/tokenizer.model";
  if (!spm_path.empty() && file_exists(spm_path)) {
    SpmModel m = read_spm_model_file(spm_path);
    if (int64_t(m.pieces.size()) > c.vocab_size)
      fail(spm_path, ": ", m.pieces.size(), " pieces but the model's vocab_size is ", c.vocab_size);
    std::vector<int32_t> types;
    for (auto t : m.types) types.push_back(int32_t(t));
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_strs("tokenizer.ggml.tokens", m.pieces);
    w.set_f32s("tokenizer.ggml.scores", m.scores);
    w.set_i32s("tokenizer.ggml.token_type", types);
    if (m.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(m.bos_id));
    if (m.eos_id >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(m.eos_id));
    if (m.unk_id >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(m.unk_id));
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_bool("tokenizer.ggml.add_space_prefix", m.add_dummy_prefix);
  } else {
    if (c.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
    if (!c.eos_ids.empty()) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_ids[0]));
  }
  size_t total = 0;
  for (auto& t : ts) {
    w.add_tensor(t.name, t.src->dtype, t.src->shape);
    total += t.src->nbytes;
  }
  Progress bar("convert -> gguf", total);
  w.write(out_path, [&](size_t i, uint8_t* dst, size_t nbytes) {
    if (nbytes != ts[i].src->nbytes)
      fail(out_path, ": tensor '", ts[i].name, "' holds ", ts[i].src->nbytes, " bytes, its shape needs ",
           nbytes);
    std::memcpy(dst, ts[i].data(), nbytes);
    bar.add(nbytes);
  });
  bar.finish();
}

}  // namespace llamarun
