#include "model/meta_checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "formats/pth.h"
#include "model/llama_tensors.h"

namespace llamarun {

namespace fs = std::filesystem;

namespace {

std::string shard_name(int r) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "consolidated.%02d.pth", r);
  return buf;
}

// Model-parallel split dimension of a GGUF-named tensor: 0 rows, 1 columns, -1 replicated,
// 2 "the embedding: tell from the shape".
int split_dim(const std::string& gguf_name) {
  auto has = [&](const char* s) { return gguf_name.find(s) != std::string::npos; };
  if (gguf_name == "token_embd.weight") return 2;
  if (gguf_name == "output.weight" || has(".attn_q.") || has(".attn_k.") || has(".attn_v.") ||
      has(".ffn_gate.") || has(".ffn_up."))
    return 0;
  if (has(".attn_output.") || has(".ffn_down.")) return 1;
  return -1;
}

}  // namespace

std::string meta_to_gguf_name(const std::string& n, const std::string& where) {
  if (n == "rope.freqs") return "";  // recomputed from params.json's rope_theta
  if (auto id = parse_llama_tensor_name(n, TensorNaming::kMeta))
    return llama_tensor_name(id->role, id->layer, TensorNaming::kGguf);
  fail(where, ": tensor '", n, "' is not part of a Meta Llama checkpoint");
}

bool is_meta_checkpoint_dir(const std::string& dir) {
  return is_directory(dir) && file_exists(dir + "/params.json") && file_exists(dir + "/" + shard_name(0));
}

std::string meta_tokenizer_dir(const std::string& dir) {
  if (file_exists(dir + "/tokenizer.model")) return dir;
  const std::string parent = (fs::path(dir) / "..").lexically_normal().string();
  if (file_exists(parent + "/tokenizer.model")) return parent;
  return "";
}

WeightMap load_meta_checkpoint(const std::string& dir) {
  int n = 0;
  while (n < 100 && file_exists(dir + "/" + shard_name(n))) ++n;
  if (n == 0) fail(dir, ": no consolidated.00.pth");
  // A stray consolidated.*.pth beyond the contiguous run means a missing shard.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("consolidated.", 0) == 0 && e.path().extension() == ".pth") {
      bool ours = false;
      for (int r = 0; r < n && !ours; ++r) ours = f == shard_name(r);
      if (!ours)
        fail(dir, ": ", f, " does not continue consolidated.00 .. ", shard_name(n - 1),
             " (a shard is missing)");
    }
  }
  if (ec) fail(dir, ": cannot list directory: ", ec.message());

  std::vector<WeightMap> shards(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) read_pth(dir + "/" + shard_name(r), shards[size_t(r)]);

  WeightMap out;
  for (auto& s : shards)
    for (auto& f : s.files) out.files.push_back(f);
  const std::string s0 = dir + "/" + shard_name(0);
  for (int r = 1; r < n; ++r)
    if (shards[size_t(r)].tensors.size() != shards[0].tensors.size())
      fail(dir, ": ", shard_name(r), " holds ", shards[size_t(r)].tensors.size(), " tensors but ",
           shard_name(0), " holds ", shards[0].tensors.size());
  for (auto& [meta_name, t0] : shards[0].tensors) {
    const std::string name = meta_to_gguf_name(meta_name, s0);
    if (name.empty()) continue;
    std::vector<const TensorInfo*> parts;
    for (int r = 0; r < n; ++r) {
      const std::string sr = dir + "/" + shard_name(r);
      const TensorInfo* t = shards[size_t(r)].find(meta_name);
      if (!t) fail(sr, ": tensor '", meta_name, "' is missing (", shard_name(0), " has it)");
      if (t->dtype != t0.dtype || t->shape.size() != t0.shape.size())
        fail(sr, ": tensor '", meta_name, "' is ", dtype_name(t->dtype), " ", shape_str(t->shape), " but in ",
             shard_name(0), " ", dtype_name(t0.dtype), " ", shape_str(t0.shape));
      parts.push_back(t);
    }
    TensorInfo ti = t0;
    ti.name = name;
    if (n == 1) {
      out.tensors.emplace(name, std::move(ti));
      continue;
    }
    int d = split_dim(name);
    if (d >= 0 && t0.shape.size() != 2)
      fail(s0, ": tensor '", meta_name, "' is ", shape_str(t0.shape), ", not 2-D");
    if (d == 2) {
      // Llama 2 splits the embedding's columns (hidden), Llama 3 its rows (vocabulary). The norm's
      // length is the hidden size.
      const TensorInfo* norm = shards[0].find("norm.weight");
      if (!norm || norm->shape.size() != 1) fail(s0, ": norm.weight is missing or not 1-D");
      d = t0.shape[1] == norm->shape[0] ? 0 : 1;
    }
    if (d < 0) {
      for (int r = 1; r < n; ++r)
        if (parts[size_t(r)]->shape != t0.shape ||
            std::memcmp(parts[size_t(r)]->data, t0.data, t0.nbytes) != 0)
          fail(dir + "/" + shard_name(r), ": replicated tensor '", meta_name, "' differs from ",
               shard_name(0), "'s copy");
      out.tensors.emplace(name, std::move(ti));
      continue;
    }
    int64_t total = 0;
    for (int r = 0; r < n; ++r) {
      // Model parallelism splits evenly: every shard's slice has shard 0's shape.
      if (parts[size_t(r)]->shape != t0.shape)
        fail(dir + "/" + shard_name(r), ": tensor '", meta_name, "' is ", shape_str(parts[size_t(r)]->shape),
             " but in ", shard_name(0), " ", shape_str(t0.shape),
             " (the shards of one checkpoint split evenly)");
      total += parts[size_t(r)]->shape[size_t(d)];
    }
    ti.shape[size_t(d)] = total;
    const size_t es = t0.nbytes / size_t(std::max<int64_t>(1, t0.numel()));
    ti.nbytes = size_t(ti.numel()) * es;
    auto buf = std::make_shared<std::vector<uint8_t>>(ti.nbytes);
    uint8_t* dst = buf->data();
    if (d == 0) {
      for (auto* p : parts) {
        std::memcpy(dst, p->data, p->nbytes);
        dst += p->nbytes;
      }
    } else {
      const int64_t rows = t0.shape[0];
      for (int64_t row = 0; row < rows; ++row)
        for (auto* p : parts) {
          const size_t rb = size_t(p->shape[1]) * es;
          std::memcpy(dst, static_cast<const uint8_t*>(p->data) + size_t(row) * rb, rb);
          dst += rb;
        }
    }
    ti.data = buf->data();
    ti.file = dir + "/consolidated.*.pth";
    out.buffers.push_back(std::move(buf));
    out.tensors.emplace(name, std::move(ti));
  }
  return out;
}

LlamaConfig config_from_meta_params(const std::string& text, const WeightMap& wm, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(where, ": not a JSON object");
  auto num = [&](const char* k, double def, bool required) -> double {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) {
      if (required) fail(where, ": '", k, "' is missing");
      return def;
    }
    if (!it->is_number()) fail(where, ": '", k, "' must be a number, got ", it->dump());
    return it->get<double>();
  };
  auto integer = [&](const char* k, int64_t def, bool required) -> int {
    const double v = num(k, double(def), required);
    if (v != std::floor(v) || v < -1 || v > std::numeric_limits<int>::max())
      fail(where, ": '", k, "' = ", v, " is not a valid integer");
    return int(v);
  };
  LlamaConfig c;
  c.hidden_size = integer("dim", 0, true);
  c.num_layers = integer("n_layers", 0, true);
  c.num_heads = integer("n_heads", 0, true);
  if (c.num_heads <= 0 || c.hidden_size <= 0) fail(where, ": dim and n_heads must be positive");
  if (c.hidden_size % c.num_heads)
    fail(where, ": dim ", c.hidden_size, " is not divisible by n_heads ", c.num_heads);
  c.num_kv_heads = integer("n_kv_heads", c.num_heads, false);
  c.head_dim = c.hidden_size / c.num_heads;
  c.rms_eps = float(num("norm_eps", 1e-5, false));
  c.rope_theta = float(num("rope_theta", 10000.0, false));
  c.rope_layout = RopeLayout::kInterleaved;

  const TensorInfo* emb = wm.find("token_embd.weight");
  if (!emb || emb->shape.size() != 2) fail(where, ": the checkpoint has no 2-D tok_embeddings.weight");
  const int vocab = integer("vocab_size", -1, false);
  c.vocab_size = vocab == -1 ? int(emb->shape[0]) : vocab;

  // Meta's FeedForward hidden size.
  const int multiple_of = integer("multiple_of", 256, false);
  if (multiple_of <= 0) fail(where, ": multiple_of = ", multiple_of, " must be positive");
  int64_t hidden = int64_t(2 * 4 * int64_t(c.hidden_size) / 3);
  if (auto it = j.find("ffn_dim_multiplier"); it != j.end() && !it->is_null())
    hidden = int64_t(num("ffn_dim_multiplier", 1.0, true) * double(hidden));
  hidden = int64_t(multiple_of) * ((hidden + multiple_of - 1) / multiple_of);
  if (hidden <= 0 || hidden > std::numeric_limits<int>::max())
    fail(where, ": the FFN size from dim, multiple_of and ffn_dim_multiplier is ", hidden);
  c.intermediate_size = int(hidden);
  if (const TensorInfo* w1 = wm.find("blk.0.ffn_gate.weight");
      w1 && !w1->shape.empty() && w1->shape[0] != hidden)
    fail(where, ": layers.0.feed_forward.w1.weight has ", w1->shape[0], " rows but Meta's formula gives ",
         hidden, " (dim ", c.hidden_size, ", multiple_of ", multiple_of, ", ffn_dim_multiplier ",
         j.contains("ffn_dim_multiplier") ? j["ffn_dim_multiplier"].dump() : "none", ")");

  bool scaled = false;
  if (auto it = j.find("use_scaled_rope"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail(where, ": 'use_scaled_rope' must be true or false");
    scaled = it->get<bool>();
  }
  if (scaled) {
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 8.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position = 8192;
  }
  c.max_position = integer("max_seq_len", scaled ? 131072 : c.vocab_size >= 128000 ? 8192 : 4096, false);
  c.tie_embeddings = wm.find("output.weight") == nullptr;
  c.validate(where);
  return c;
}

}  // namespace llamarun
