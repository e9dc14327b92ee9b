// tokenizer.json (Hugging Face tokenizers) -> BpeTokenizer.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace llamarun {
namespace {

using nlohmann::json;

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

bool get_bool(const json& j, const char* key, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("'", key, "' is not a boolean");
  return j[key].get<bool>();
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          static_cast<unsigned char>(c) >= 0x80)) {
      out += '\\';
    }
    out += c;
  }
  return out;
}

PreTokenizerStep::Behavior parse_behavior(const json& j) {
  const std::string b = j.is_string() ? j.get<std::string>() : "Isolated";
  using B = PreTokenizerStep::Behavior;
  if (b == "Isolated") return B::kIsolated;
  if (b == "Removed") return B::kRemoved;
  if (b == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (b == "MergedWithNext") return B::kMergedWithNext;
  if (b == "Contiguous") return B::kContiguous;
  fail("Split behavior '", b, "' is not supported");
}

// Adds the steps of one pre_tokenizer node; sets *byte_level when a ByteLevel step is seen.
void add_pre(const json& j, PreTokenizer& pre, bool* byte_level, const std::string& what, int depth = 0) {
  if (j.is_null()) return;
  if (depth > 8) fail("pre_tokenizer Sequences nested more than 8 deep");
  const std::string t = type_of(j);
  if (t == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      fail("Sequence without 'pretokenizers'");
    for (const auto& c : j["pretokenizers"]) add_pre(c, pre, byte_level, what, depth + 1);
  } else if (t == "ByteLevel") {
    *byte_level = true;
    if (get_bool(j, "add_prefix_space", true)) pre.add_prefix_space();
    if (get_bool(j, "use_regex", true)) pre.add_regex(kGpt2Pattern, what);
  } else if (t == "Digits") {
    pre.add_digits(get_bool(j, "individual_digits", false), what);
  } else if (t == "Split") {
    const json& p = j.contains("pattern") ? j["pattern"] : json();
    std::string pattern;
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      pattern = p["Regex"].get<std::string>();
    } else if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      pattern = regex_escape(p["String"].get<std::string>());
    } else {
      fail("Split pre-tokenizer without a Regex or String pattern");
    }
    pre.add_regex(pattern, what, parse_behavior(j.contains("behavior") ? j["behavior"] : json()),
                  get_bool(j, "invert", false));
  } else {
    fail("pre_tokenizer type '", t, "' is not supported (supported: ByteLevel, Split, Digits, Sequence)");
  }
}

// The BOS a TemplateProcessing post-processor puts before the text, or "" if none.
std::string template_bos(const json& pp) {
  if (!pp.is_object()) return "";
  const std::string t = type_of(pp);
  if (t == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
    for (const auto& c : pp["processors"]) {
      std::string b = template_bos(c);
      if (!b.empty()) return b;
    }
    return "";
  }
  if (t != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array()) return "";
  const json& single = pp["single"];
  if (single.empty() || !single[0].is_object() || !single[0].contains("SpecialToken")) return "";
  const json& st = single[0]["SpecialToken"];
  return st.contains("id") && st["id"].is_string() ? st["id"].get<std::string>() : "";
}

std::unique_ptr<Tokenizer> build(const json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    fail("no 'model' object (not a tokenizer.json?)");
  }
  const json& model = j["model"];
  std::string type = type_of(model);
  if (type.empty() && model.contains("merges")) type = "BPE";
  if (type != "BPE") fail("model type '", type, "' is not supported (only BPE)");
  if (get_bool(model, "byte_fallback", false)) {
    fail(
        "BPE with byte_fallback (a converted sentencepiece model) is not supported from tokenizer.json; "
        "load tokenizer.model instead");
  }
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty()) {
      fail("model.", k, " is not supported");
    }
  }
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    fail("normalizer '", type_of(j["normalizer"]), "' is not supported (only null)");
  }

  BpeVocab v;
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab is not an object");
  // Ids must be dense: below the number of vocabulary plus added entries (no huge allocations).
  const size_t n_added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0;
  const int64_t max_id = static_cast<int64_t>(model["vocab"].size() + n_added);
  for (const auto& [tok, idj] : model["vocab"].items()) {
    if (!idj.is_number_integer()) fail("model.vocab['", tok, "'] is not an integer");
    const int64_t id = idj.get<int64_t>();
    if (id < 0 || id >= max_id) {
      fail("model.vocab['", tok, "'] = ", id, " is out of range (", max_id, " vocabulary and added entries)");
    }
    if (static_cast<size_t>(id) >= v.tokens.size()) v.tokens.resize(static_cast<size_t>(id) + 1);
    if (!v.tokens[id].empty())
      fail("model.vocab: id ", id, " is used by '", v.tokens[id], "' and '", tok, "'");
    if (tok.empty()) fail("model.vocab: empty token string for id ", id);
    v.tokens[id] = tok;
  }
  if (!model.contains("merges") || !model["merges"].is_array()) fail("model.merges is not an array");
  size_t mi = 0;
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail("merge ", mi, " ('", s, "') is not two tokens separated by one space");
      }
      v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail("merge ", mi, " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    ++mi;
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string()) {
        fail("added_tokens: an entry lacks an integer 'id' or a string 'content'");
      }
      const int64_t id = a["id"].get<int64_t>();
      if (id < 0 || id >= max_id) fail("added_tokens: id ", id, " is out of range (", max_id, " entries)");
      v.added.push_back(
          {static_cast<int32_t>(id), a["content"].get<std::string>(), get_bool(a, "special", false)});
    }
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string u = model["unk_token"].get<std::string>();
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      if (v.tokens[i] == u) v.unk_id = static_cast<int32_t>(i);
    }
  }
  v.ignore_merges = get_bool(model, "ignore_merges", false);
  bool byte_level = false;
  add_pre(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), v.pre, &byte_level, what);
  if (!byte_level) fail("only byte-level BPE is supported (the pre_tokenizer has no ByteLevel step)");
  const std::string bos = template_bos(j.contains("post_processor") ? j["post_processor"] : json());
  if (!bos.empty()) {
    for (const auto& a : v.added) {
      if (a.content == bos) v.bos_id = a.id;
    }
    v.add_bos = v.bos_id >= 0;
  }
  return std::make_unique<BpeTokenizer>(std::move(v), what);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_hf_json(std::string_view json_text, const std::string& what) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    fail(what, ": not valid JSON: ", e.what());
  }
  try {
    return build(j, what);
  } catch (const json::exception& e) {
    fail(what, ": unexpected tokenizer.json content: ", e.what());
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(what, 0) == 0) throw;
    fail(what, ": ", msg);
  }
}

}  // namespace llamarun
