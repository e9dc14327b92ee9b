#include "model/convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "formats/gguf_writer.h"
#include "model/llama_tensors.h"
#include "model/quantize_model.h"
#include "tokenizer/pretokenizer.h"
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

// A tensor to write: its bytes either in the source mapping or, once materialize() ran, in `owned` (a
// permuted copy, or data made here such as rope_freqs). `qk_heads` > 0: wq/wk rows to permute.
struct OutTensor {
  std::string name;
  const TensorInfo* src = nullptr;
  int qk_heads = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t nbytes = 0;
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
    o.dtype = t.dtype;
    o.shape = t.shape;
    o.nbytes = t.nbytes;
    if (r.qk_heads && c.rope_layout != target) {
      o.qk_heads = r.qk_heads;
      // Checked up front, so a bad shape fails before anything is written.
      if (t.shape.size() != 2 || t.shape[0] != int64_t(r.qk_heads) * c.head_dim)
        fail(t.file, ": tensor '", t.name, "' has ", t.shape.empty() ? 0 : t.shape[0], " rows, not ",
             r.qk_heads, " x ", c.head_dim);
    }
    out.push_back(std::move(o));
  }
  return out;
}

// Makes the permuted copy of a wq/wk tensor (a no-op for the others); release() drops it again.
void materialize(OutTensor& o, const LlamaConfig& c, RopeLayout target) {
  if (o.qk_heads && o.owned.empty())
    o.owned = permute_qk(*o.src, o.qk_heads, c.head_dim, c.rope_layout, target);
}
void release(OutTensor& o) {
  if (o.src) std::vector<uint8_t>().swap(o.owned);
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
      materialize(t, *src.cfg, RopeLayout::kHalf);
      write_all(f, t.data(), t.src->nbytes, st);
      release(t);
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

namespace {

using nlohmann::json;

// A JSON file of `dir`, or null when it is absent. Throws Error naming the file when it does not parse.
json read_json_if_present(const std::string& dir, const char* name) {
  const fs::path p = fs::path(dir) / name;
  if (!fs::exists(p)) return nullptr;
  std::ifstream f(p);
  if (!f) fail(p.string(), ": cannot open");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    fail(p.string(), ": not valid JSON: ", e.what());
  }
}

std::string read_text_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(p.string(), ": cannot open");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// GGUF token types (llama.cpp's llama_token_type; sentencepiece's numbering).
constexpr int32_t kTokNormal = 1, kTokControl = 3, kTokUserDefined = 4, kTokUnused = 5;

// The string content of a tokenizer_config.json special-token entry ("<s>" or {"content": "<s>", ...}).
std::string token_content(const json& e) {
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("content") && e["content"].is_string())
    return e["content"].get<std::string>();
  return "";
}

// The special tokens, add_*_token flags and chat template, read as the gguf package's SpecialVocab reads
// them (the part convert_hf_to_gguf.py uses for Llama models).
void add_special_vocab(GgufWriter& w, const std::string& dir, const json& tok, int64_t n_vocab) {
  const json tc = read_json_if_present(dir, "tokenizer_config.json");
  const json cfg = read_json_if_present(dir, "config.json");
  std::vector<std::pair<std::string, int64_t>> added;  // (content, id)
  if (tok.is_object() && tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const json& a : tok["added_tokens"])
      if (a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id") &&
          a["id"].is_number_integer())
        added.emplace_back(a["content"].get<std::string>(), a["id"].get<int64_t>());
  const bool have_tc = tc.is_object() && !tc.empty();
  std::string bos = have_tc && tc.contains("bos_token") ? token_content(tc["bos_token"]) : "";
  std::string eos = have_tc && tc.contains("eos_token") ? token_content(tc["eos_token"]) : "";
  std::map<std::string, bool> add_special;
  // A TemplateProcessing post-processor whose single-sequence template starts (ends) with a special
  // token adds BOS (EOS) when that token is the BOS (EOS) token.
  if (tok.is_object() && tok.contains("post_processor") && tok["post_processor"].is_object()) {
    const json& pp = tok["post_processor"];
    std::vector<json> procs;
    if (pp.contains("processors") && pp["processors"].is_array())
      procs.assign(pp["processors"].begin(), pp["processors"].end());
    else
      procs.push_back(pp);
    for (const json& p : procs) {
      if (!p.is_object() || p.value("type", "") != "TemplateProcessing" || !p.contains("single") ||
          !p["single"].is_array() || p["single"].size() < 2)
        continue;
      auto special_id = [](const json& e) {
        return e.is_object() && e.contains("SpecialToken") && e["SpecialToken"].is_object()
                   ? e["SpecialToken"].value("id", std::string())
                   : std::string();
      };
      const std::string first = special_id(p["single"].front()), last = special_id(p["single"].back());
      if (!first.empty()) {
        if (!have_tc) bos = first;
        add_special["bos"] = first == bos;
      }
      if (!last.empty()) {
        if (!have_tc) eos = last;
        add_special["eos"] = last == eos;
      }
    }
  }
  // Ids: tokenizer_config.json's *_token among the added tokens first, then config.json's *_token_id.
  static const std::pair<const char*, const char*> kTypes[] = {
      {"bos", "bos_token_id"},       {"eos", "eos_token_id"}, {"unk", "unknown_token_id"},
      {"sep", "seperator_token_id"},  // llama.cpp's spelling
      {"pad", "padding_token_id"},   {"cls", "cls_token_id"}, {"mask", "mask_token_id"}};
  std::map<std::string, int64_t> ids;
  std::vector<std::string> order;
  auto set_id = [&](const std::string& typ, int64_t id) {
    if (id < 0 || id >= n_vocab || ids.count(typ)) return;
    ids[typ] = id;
    order.push_back(typ);
  };
  if (have_tc) {
    for (auto& [typ, _] : kTypes) {
      const std::string k = std::string(typ) + "_token";
      if (tc.contains("add_" + k) && tc["add_" + k].is_boolean())
        add_special[typ] = tc["add_" + k].get<bool>();
      if (!tc.contains(k)) continue;
      const std::string content = token_content(tc[k]);
      if (content.empty()) continue;
      for (auto& [c, id] : added)
        if (c == content) {
          set_id(typ, id);
          break;
        }
    }
  }
  if (cfg.is_object())
    for (auto& [typ, _] : kTypes) {
      const std::string k = std::string(typ) + "_token_id";
      if (cfg.contains(k) && cfg[k].is_number_integer()) set_id(typ, cfg[k].get<int64_t>());
    }
  for (const std::string& typ : order)
    for (auto& [t, key] : kTypes)
      if (typ == t) w.set_u32(std::string("tokenizer.ggml.") + key, uint32_t(ids[typ]));
  for (const char* typ : {"bos", "eos", "unk", "sep", "pad", "cls", "mask"})
    if (add_special.count(typ))
      w.set_bool(std::string("tokenizer.ggml.add_") + typ + "_token", add_special[typ]);
  // The chat template: tokenizer_config.json's (a string, or a list of named templates: "default" is
  // tokenizer.chat_template, the others tokenizer.chat_template.NAME), else chat_template.jinja.
  if (have_tc && tc.contains("chat_template") && tc["chat_template"].is_string()) {
    w.set_str("tokenizer.chat_template", tc["chat_template"].get<std::string>());
  } else if (have_tc && tc.contains("chat_template") && tc["chat_template"].is_array()) {
    for (const json& t : tc["chat_template"]) {
      if (!t.is_object() || !t.contains("template") || !t["template"].is_string()) continue;
      const std::string name = t.value("name", "default");
      w.set_str(name == "default" ? "tokenizer.chat_template" : "tokenizer.chat_template." + name,
                t["template"].get<std::string>());
    }
  } else if (fs::exists(fs::path(dir) / "chat_template.jinja")) {
    w.set_str("tokenizer.chat_template", read_text_file(fs::path(dir) / "chat_template.jinja"));
  }
}

// llama.cpp's name for a byte-level BPE pre-tokenizer (tokenizer.json "pre_tokenizer"); "" when unknown.
std::string bpe_pre_name(const json& pre) {
  if (!pre.is_object()) return "";
  std::vector<json> steps;
  if (pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array())
    steps.assign(pre["pretokenizers"].begin(), pre["pretokenizers"].end());
  else
    steps.push_back(pre);
  auto is = [](const json& s, const char* type) { return s.is_object() && s.value("type", "") == type; };
  // SmolLM2 (and StarCoder-style vocabularies): single digits, then GPT-2's regex.
  if (steps.size() == 2 && is(steps[0], "Digits") && steps[0].value("individual_digits", false) &&
      is(steps[1], "ByteLevel") && steps[1].value("use_regex", true))
    return "smollm";
  // Llama 3: its Split regex, then ByteLevel without a regex.
  if (steps.size() == 2 && is(steps[0], "Split") && steps[0].contains("pattern") &&
      steps[0]["pattern"].is_object() && steps[0]["pattern"].value("Regex", "") == kLlama3Pattern &&
      is(steps[1], "ByteLevel") && !steps[1].value("use_regex", true))
    return "llama-bpe";
  return "";
}

// The tokens, types and merges of a byte-level BPE tokenizer.json (convert_hf_to_gguf.py's
// _set_vocab_gpt2 for Llama models).
void add_bpe_vocab(GgufWriter& w, const std::string& path, const json& tok, int64_t vocab_size) {
  const json& model = tok.contains("model") ? tok["model"] : json();
  if (!model.is_object() || model.value("type", "BPE") != "BPE" || !model.contains("vocab") ||
      !model["vocab"].is_object())
    fail(path,
         ": model is not a BPE model with a vocab object (only byte-level BPE tokenizer.json is written "
         "to GGUF; for a SentencePiece model put its tokenizer.model beside it)");
  if (model.value("byte_fallback", false))
    fail(path,
         ": a byte-fallback (SentencePiece-style) tokenizer.json needs the tokenizer.model it was made "
         "from beside it to be written to GGUF");
  const std::string pre = bpe_pre_name(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json());
  if (pre.empty())
    fail(path, ": pre_tokenizer ", tok.contains("pre_tokenizer") ? tok["pre_tokenizer"].dump() : "(none)",
         " has no llama.cpp name llamarun knows (known: SmolLM2's Digits + ByteLevel = smollm, Llama 3's "
         "Split + ByteLevel = llama-bpe)");
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int32_t> types(size_t(vocab_size), kTokUnused);
  std::vector<bool> have(size_t(vocab_size), false);
  auto put = [&](int64_t id, const std::string& text, int32_t type) {
    if (id < 0 || id >= vocab_size)
      fail(path, ": token '", text, "' has id ", id, " but the model's vocab_size is ", vocab_size);
    tokens[size_t(id)] = text;
    types[size_t(id)] = type;
    have[size_t(id)] = true;
  };
  for (auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) fail(path, ": vocab entry '", text, "' has no integer id");
    put(id.get<int64_t>(), text, kTokNormal);
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        fail(path, ": added_tokens entry ", a.dump(), " lacks an integer id or a string content");
      const std::string text = a["content"].get<std::string>();
      // Special added tokens, and ones shaped like control tokens (<|...|>), are CONTROL tokens.
      const bool looks_special =
          text.size() >= 4 && text.rfind("<|", 0) == 0 && text.compare(text.size() - 2, 2, "|>") == 0;
      put(a["id"].get<int64_t>(), text,
          a.value("special", false) || looks_special ? kTokControl : kTokUserDefined);
    }
  for (int64_t i = 0; i < vocab_size; ++i)
    if (!have[size_t(i)]) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
  std::vector<std::string> merges;
  if (model.contains("merges") && model["merges"].is_array())
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        // The pair form (transformers >= 4.45) may hold spaces; GGUF's "a b" form writes them as U+0120.
        auto enc = [](const std::string& s) {
          std::string r;
          for (char c : s) r += c == ' ' ? std::string("\xC4\xA0") : std::string(1, c);
          return r;
        };
        merges.push_back(enc(m[0].get<std::string>()) + " " + enc(m[1].get<std::string>()));
      } else {
        fail(path, ": merges entry ", m.dump(), " is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  w.set_str("tokenizer.ggml.model", "gpt2");
  w.set_str("tokenizer.ggml.pre", pre);
  w.set_strs("tokenizer.ggml.tokens", tokens);
  w.set_i32s("tokenizer.ggml.token_type", types);
  if (!merges.empty()) w.set_strs("tokenizer.ggml.merges", merges);
}

// Llama 3 rope scaling as llama.cpp stores it: per-frequency divisors of inv_freq (rope_freqs.weight).
std::vector<float> llama3_rope_factors(const LlamaConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  const int half = c.head_dim / 2;
  const double old_ctx = rs.original_max_position, low_wl = old_ctx / rs.low_freq_factor,
               high_wl = old_ctx / rs.high_freq_factor;
  std::vector<float> f(size_t(half), 1.0f);
  for (int i = 0; i < half; ++i) {
    const float inv = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(c.head_dim));
    const double wavelen = 2 * M_PI / inv;
    if (wavelen < high_wl) {
      f[size_t(i)] = 1.0f;
    } else if (wavelen > low_wl) {
      f[size_t(i)] = rs.factor;
    } else {
      const double smooth =
          (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      f[size_t(i)] = float(1.0 / ((1 - smooth) / rs.factor + smooth));
    }
  }
  return f;
}

// llama.cpp's llama_ftype of a file whose matrices are all `t` (convert_hf_to_gguf's --outtype).
int file_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q4_1:
      return 3;
    case DType::Q8_0:
      return 7;
    case DType::BF16:
      return 32;
    default:
      return -1;
  }
}

}  // namespace

bool add_gguf_vocabulary(GgufWriter& w, const std::string& dir, const LlamaConfig& c) {
  if (dir.empty()) return false;
  const std::string spm_path = dir + "/tokenizer.model";
  const std::string json_path = dir + "/tokenizer.json";
  json tok;
  if (file_exists(spm_path)) {
    SpmModel m = read_spm_model_file(spm_path);
    if (int64_t(m.pieces.size()) > c.vocab_size)
      fail(spm_path, ": ", m.pieces.size(), " pieces but the model's vocab_size is ", c.vocab_size);
    std::vector<std::string> pieces = m.pieces;
    std::vector<float> scores = m.scores;
    std::vector<int32_t> types;
    for (auto t : m.types) types.push_back(int32_t(t));
    for (int64_t i = int64_t(pieces.size()); i < c.vocab_size; ++i) {
      pieces.push_back("[PAD" + std::to_string(i) + "]");
      scores.push_back(-1000.0f);
      types.push_back(kTokUnused);
    }
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_str("tokenizer.ggml.pre", "default");
    w.set_strs("tokenizer.ggml.tokens", pieces);
    w.set_f32s("tokenizer.ggml.scores", scores);
    w.set_i32s("tokenizer.ggml.token_type", types);
    if (m.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(m.bos_id));
    if (m.eos_id >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(m.eos_id));
    if (m.unk_id >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(m.unk_id));
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_bool("tokenizer.ggml.add_space_prefix", m.add_dummy_prefix);
    tok = read_json_if_present(dir, "tokenizer.json");
  } else if (file_exists(json_path)) {
    tok = read_json_if_present(dir, "tokenizer.json");
    add_bpe_vocab(w, json_path, tok, c.vocab_size);
  } else {
    return false;
  }
  add_special_vocab(w, dir, tok, c.vocab_size);
  // convert_hf_to_gguf.py's LlamaModel: vocabularies of 49152 tokens (SmolLM, Granite small) never add BOS.
  if (c.vocab_size == 49152) w.set_bool("tokenizer.ggml.add_bos_token", false);
  return true;
}

GgufWriteSummary write_gguf_model(const ConvertSource& src, const std::string& out_path,
                                  const QuantScheme* quant, const std::string& progress_label) {
  const LlamaConfig& c = *src.cfg;
  std::vector<OutTensor> ts = collect(src, true);
  if (!c.rope_freq_factors.empty() || c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    OutTensor rf;
    rf.name = "rope_freqs.weight";
    const std::vector<float> f = c.rope_freq_factors.empty() ? llama3_rope_factors(c) : c.rope_freq_factors;
    rf.shape = {int64_t(f.size())};
    rf.nbytes = f.size() * sizeof(float);
    rf.owned.resize(rf.nbytes);
    std::memcpy(rf.owned.data(), f.data(), rf.nbytes);
    ts.push_back(std::move(rf));
  }
  std::stable_sort(ts.begin(), ts.end(), [](const OutTensor& a, const OutTensor& b) {
    return gguf_tensor_order_less(a.name, b.name);
  });
  const bool tied = c.tie_embeddings;
  // The type each tensor gets, and the file type: the scheme's, else that of the (uniform) matrices.
  std::vector<DType> types;
  int ftype = -2;
  for (const OutTensor& t : ts) {
    // convert_hf_to_gguf.py writes 1-D tensors (norms, rope_freqs) as F32 whatever the source's dtype.
    const DType src_t = t.shape.size() == 1 ? DType::F32 : t.dtype;
    const DType to = quant ? choose_quant_type(*quant, t.name, t.shape, src_t, c.num_layers, tied) : src_t;
    types.push_back(to);
    if (t.shape.size() == 2) ftype = ftype == -2 || ftype == file_type_of(to) ? file_type_of(to) : -1;
  }
  if (quant) ftype = int(quant->file_type);

  GgufWriter w;  // formats/gguf_writer.h: the one GGUF writer (quantize uses it too)
  w.set_str("general.architecture", "llama");
  w.set_str("general.type", "model");
  w.set_str("general.name", src.name.empty() ? "llama" : src.name);
  w.set_u32("llama.block_count", uint32_t(c.num_layers));
  w.set_u32("llama.context_length", uint32_t(c.max_position));
  w.set_u32("llama.embedding_length", uint32_t(c.hidden_size));
  w.set_u32("llama.feed_forward_length", uint32_t(c.intermediate_size));
  w.set_u32("llama.attention.head_count", uint32_t(c.num_heads));
  w.set_u32("llama.attention.head_count_kv", uint32_t(c.num_kv_heads));
  w.set_f32("llama.rope.freq_base", c.rope_theta);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_u32("llama.attention.key_length", uint32_t(c.head_dim));
  w.set_u32("llama.attention.value_length", uint32_t(c.head_dim));
  if (ftype >= 0) w.set_u32("general.file_type", uint32_t(ftype));
  if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    w.set_str("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", c.rope_scaling.factor);
  }
  w.set_u32("llama.vocab_size", uint32_t(c.vocab_size));
  w.set_u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  if (!add_gguf_vocabulary(w, src.tokenizer_dir, c)) {
    if (c.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
    if (!c.eos_ids.empty()) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_ids[0]));
  }
  w.set_u32("general.quantization_version", 2);

  GgufWriteSummary sum;
  for (size_t i = 0; i < ts.size(); ++i) {
    w.add_tensor(ts[i].name, types[i], ts[i].shape);
    sum.types[dtype_name(types[i])]++;
    sum.in_bytes += ts[i].nbytes;
    size_t rows = 1;
    for (size_t d = 0; d + 1 < ts[i].shape.size(); ++d) rows *= size_t(ts[i].shape[d]);
    sum.out_bytes += dtype_row_bytes(types[i], ts[i].shape.back()) * rows;
  }
  sum.tensors = ts.size();
  Progress bar(progress_label, sum.in_bytes);
  w.write(out_path, [&](size_t i, uint8_t* dst, size_t nbytes) {
    OutTensor& t = ts[i];
    materialize(t, c, RopeLayout::kInterleaved);
    if (types[i] == t.dtype) {
      if (nbytes != t.nbytes)
        fail(out_path, ": tensor '", t.name, "' holds ", t.nbytes, " bytes, its shape needs ", nbytes);
      std::memcpy(dst, t.data(), nbytes);
    } else {
      TensorInfo ti = *t.src;  // the source's view, over the permuted rows when there are any
      ti.name = t.name;
      ti.data = t.data();
      convert_tensor(ti, types[i], dst);
    }
    release(t);
    bar.add(t.nbytes);
  });
  bar.finish();
  return sum;
}

}  // namespace llamarun
