// load_tokenizer_file / load_tokenizer_dir: tokenizer.model (sentencepiece) or tokenizer.json
// (Hugging Face), plus the BOS/EOS settings a model directory's JSON configs give.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kMaxTokenizerFile = size_t(1) << 30;

std::string read_file(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) fail(path, ": cannot open: ", ec.message());
  if (size > kMaxTokenizerFile) fail(path, ": file of ", size, " bytes is too large for a tokenizer");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return ss.str();
}

bool looks_like_json(std::string_view s) {
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '{';
  }
  return false;
}

// Parses JSON, refusing nesting deeper than 64 (real configs nest a few levels).
json parse_json_limited(const std::string& text, const std::string& what) {
  try {
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > 64) throw Error("JSON nested more than 64 deep");
      return true;
    });
  } catch (const json::exception& e) {
    fail(what, ": not valid JSON: ", e.what());
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
}

// Parses an optional JSON config file; null json when absent.
json read_json_if_exists(const fs::path& p) {
  if (!fs::exists(p)) return json();
  return parse_json_limited(read_file(p.string()), p.string());
}

// A token given as "<s>" or {"content": "<s>", ...} in tokenizer_config.json.
std::string token_string(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return "";
}

// eos_token_id given as an integer or a list of integers.
std::vector<int64_t> id_list(const json& j) {
  std::vector<int64_t> out;
  if (j.is_number_integer()) out.push_back(j.get<int64_t>());
  if (j.is_array()) {
    for (const auto& e : j) {
      if (e.is_number_integer()) out.push_back(e.get<int64_t>());
    }
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_spm_proto(std::string_view proto, const std::string& what) {
  return std::make_unique<SpmTokenizer>(parse_spm_model(proto, what), what);
}

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path) {
  const std::string data = read_file(path);
  if (looks_like_json(data)) return tokenizer_from_hf_json(data, path);
  if (data.compare(0, 4, "GGUF") == 0) {
    fail(path, ": a GGUF model file, not a tokenizer file (its tokenizer comes from tokenizer_from_gguf)");
  }
  return tokenizer_from_spm_proto(data, path);
}

std::unique_ptr<Tokenizer> load_tokenizer_dir(const std::string& dir) {
  const fs::path d(dir);
  const fs::path tj = d / "tokenizer.json", tm = d / "tokenizer.model";
  std::unique_ptr<Tokenizer> tok;
  if (fs::exists(tj)) {
    const std::string text = read_file(tj.string());
    // A tokenizer.json converted from sentencepiece (byte_fallback BPE) next to its original
    // tokenizer.model: use the original (sentencepiece's own handling of invalid UTF-8).
    bool spm_style = false;
    if (fs::exists(tm)) {
      const json j = parse_json_limited(text, tj.string());
      const json& model = j.is_object() && j.contains("model") ? j["model"] : j;
      spm_style = model.is_object() && model.contains("byte_fallback") &&
                  model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>();
    }
    if (spm_style && fs::exists(tm)) {
      tok = load_tokenizer_file(tm.string());
    } else {
      tok = tokenizer_from_hf_json(text, tj.string());
    }
  } else if (fs::exists(tm)) {
    tok = load_tokenizer_file(tm.string());
  } else {
    fail(dir, ": no tokenizer.json or tokenizer.model");
  }

  auto valid = [&](int64_t id) { return id >= 0 && id < tok->vocab_size(); };
  std::vector<int64_t> extra_stops;
  for (const char* name : {"config.json", "generation_config.json"}) {
    const json c = read_json_if_exists(d / name);
    if (!c.is_object()) continue;
    if (c.contains("bos_token_id") && c["bos_token_id"].is_number_integer() &&
        valid(c["bos_token_id"].get<int64_t>())) {
      tok->set_bos(static_cast<int>(c["bos_token_id"].get<int64_t>()));
    }
    if (c.contains("eos_token_id")) {
      const auto ids = id_list(c["eos_token_id"]);
      if (!ids.empty() && valid(ids[0])) tok->set_eos(static_cast<int>(ids[0]));
      extra_stops.insert(extra_stops.end(), ids.begin(), ids.end());
    }
  }
  const json tc = read_json_if_exists(d / "tokenizer_config.json");
  if (tc.is_object()) {
    if (tc.contains("bos_token")) {
      const int32_t id = tok->find_token(token_string(tc["bos_token"]));
      if (id >= 0) tok->set_bos(id);
    }
    if (tc.contains("eos_token")) {
      const int32_t id = tok->find_token(token_string(tc["eos_token"]));
      if (id >= 0) tok->set_eos(id);
    }
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) {
      tok->set_add_bos(tc["add_bos_token"].get<bool>());
    }
  }
  for (int64_t id : extra_stops) {
    if (valid(id)) tok->add_stop_id(static_cast<int>(id));
  }
  if (tok->add_bos() && tok->bos_id() < 0) tok->set_add_bos(false);
  return tok;
}

}  // namespace llamarun
