// tokenizer.json (Hugging Face tokenizers) -> BpeTokenizer.
#include <initializer_list>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace llamarun {
namespace {

using nlohmann::json;

// j[key], or a null value when absent (a reference: deep values are never copied).
const json& member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

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
    const json& p = member(j, "pattern");
    std::string pattern;
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      pattern = p["Regex"].get<std::string>();
    } else if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      pattern = regex_escape(p["String"].get<std::string>());
    } else {
      fail("Split pre-tokenizer without a Regex or String pattern");
    }
    pre.add_regex(pattern, what, parse_behavior(member(j, "behavior")), get_bool(j, "invert", false));
  } else {
    fail("pre_tokenizer type '", t, "' is not supported (supported: ByteLevel, Split, Digits, Sequence)");
  }
}

constexpr const char* kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

std::string string_pattern(const json& j, const char* where) {
  if (j.is_object() && j.contains("pattern") && j["pattern"].is_object() && j["pattern"].contains("String") &&
      j["pattern"]["String"].is_string()) {
    return j["pattern"]["String"].get<std::string>();
  }
  fail(where, " with a non-literal pattern is not supported");
}

// Normalizers of converted sentencepiece models: Prepend, Replace (literal), Sequence of these.
void add_normalizer(const json& j, std::vector<BpeVocab::NormOp>& ops, int depth = 0) {
  if (j.is_null()) return;
  if (depth > 8) fail("normalizer Sequences nested more than 8 deep");
  const std::string t = type_of(j);
  using K = BpeVocab::NormOp::Kind;
  if (t == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      fail("normalizer Sequence without 'normalizers'");
    for (const auto& c : j["normalizers"]) add_normalizer(c, ops, depth + 1);
  } else if (t == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string()) fail("Prepend normalizer without 'prepend'");
    ops.push_back({K::kPrepend, j["prepend"].get<std::string>(), "", false, false});
  } else if (t == "Replace") {
    if (!j.contains("content") || !j["content"].is_string()) fail("Replace normalizer without 'content'");
    ops.push_back({K::kReplace, string_pattern(j, "Replace normalizer"), j["content"].get<std::string>(),
                   false, false});
  } else {
    fail("normalizer '", t, "' is not supported (supported: Prepend, Replace, Sequence)");
  }
}

// Metaspace pre-tokenizer (split = false): spaces become the replacement character, which is also
// prepended (prepend_scheme "always", or "first": only at the start of the text).
void add_metaspace(const json& j, std::vector<BpeVocab::NormOp>& ops) {
  if (j.is_null()) return;
  const std::string t = type_of(j);
  if (t == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array() &&
      j["pretokenizers"].size() == 1) {
    add_metaspace(j["pretokenizers"][0], ops);
    return;
  }
  if (t != "Metaspace")
    fail("pre_tokenizer '", t, "' is not supported with byte_fallback BPE (only Metaspace)");
  if (get_bool(j, "split", false)) fail("Metaspace with split = true is not supported");
  const std::string rep = j.contains("replacement") && j["replacement"].is_string()
                              ? j["replacement"].get<std::string>()
                              : std::string(kMetaspace);
  std::string scheme = "always";
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    scheme = j["prepend_scheme"].get<std::string>();
  } else if (!get_bool(j, "add_prefix_space", true)) {
    scheme = "never";
  }
  using K = BpeVocab::NormOp::Kind;
  ops.push_back({K::kReplace, " ", rep, false, false});
  if (scheme == "always" || scheme == "first") {
    ops.push_back({K::kPrepend, rep, "", scheme == "first", true});
  } else if (scheme != "never") {
    fail("Metaspace prepend_scheme '", scheme, "' is not supported");
  }
}

// Refuses a decoder or post_processor that Hugging Face tokenizers would not load: not null or an
// object, no string "type", an unknown type, or a Sequence whose members are not a list of valid
// entries. (Garbage here used to pass silently, leaving decode and BOS handling to guesses.)
void check_component(const json& j, const char* field, const char* list_key,
                     std::initializer_list<const char*> known, int depth = 0) {
  if (j.is_null()) return;
  if (!j.is_object()) fail("'", field, "' must be an object or null, got ", j.type_name());
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) fail("'", field, "' has no string 'type'");
  const std::string type = t->get<std::string>();
  bool ok = false;
  for (const char* k : known) ok |= type == k;
  if (!ok) {
    std::string names;
    for (const char* k : known) names += std::string(names.empty() ? "" : ", ") + k;
    fail("'", field, "' type '", type.substr(0, 60), "' is unknown (Hugging Face tokenizers has ", names,
         ")");
  }
  if (type == "Sequence") {
    auto m = j.find(list_key);
    if (m == j.end() || !m->is_array()) fail("'", field, "' Sequence needs a list '", list_key, "'");
    if (depth > 8) fail("'", field, "' Sequences nest too deep");
    for (const auto& c : *m) check_component(c, field, list_key, known, depth + 1);
  }
  if (type == "TemplateProcessing") {
    for (const char* k : {"single", "pair"})
      if (j.contains(k) && !j[k].is_array() && !j[k].is_string())
        fail("'", field, "' TemplateProcessing '", k, "' must be a list");
    if (j.contains("special_tokens") && !j["special_tokens"].is_object())
      fail("'", field, "' TemplateProcessing 'special_tokens' must be an object");
  }
}

// Whether the decoder removes one leading space (Strip start >= 1, or a prepending Metaspace).
bool decoder_strips_space(const json& j) {
  if (!j.is_object()) return false;
  const std::string t = type_of(j);
  if (t == "Sequence" && j.contains("decoders") && j["decoders"].is_array()) {
    for (const auto& c : j["decoders"]) {
      if (decoder_strips_space(c)) return true;
    }
    return false;
  }
  if (t == "Strip") {
    return j.contains("start") && j["start"].is_number_integer() && j["start"].get<int64_t>() >= 1 &&
           j.contains("content") && j["content"] == " ";
  }
  if (t == "Metaspace") {
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      return j["prepend_scheme"] != "never";
    return get_bool(j, "add_prefix_space", true);
  }
  return false;
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
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty()) {
      fail("model.", k, " is not supported");
    }
  }

  BpeVocab v;
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab is not an object");
  // Ids must be dense: below the number of vocabulary plus added entries (no huge allocations).
  const size_t n_added =
      j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0;
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
      v.added.push_back({static_cast<int32_t>(id), a["content"].get<std::string>(),
                         get_bool(a, "special", false), get_bool(a, "lstrip", false),
                         get_bool(a, "rstrip", false)});
    }
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string u = model["unk_token"].get<std::string>();
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      if (v.tokens[i] == u) v.unk_id = static_cast<int32_t>(i);
    }
  }
  v.ignore_merges = get_bool(model, "ignore_merges", false);
  const json& normalizer = member(j, "normalizer");
  const json& pre_tok = member(j, "pre_tokenizer");
  v.byte_fallback = get_bool(model, "byte_fallback", false);
  if (v.byte_fallback) {
    // A converted sentencepiece model: normalizer and Metaspace become per-segment operations.
    v.fuse_unk = get_bool(model, "fuse_unk", false);
    add_normalizer(normalizer, v.normalizer);
    add_metaspace(pre_tok, v.normalizer);
    v.decode_strip_space = decoder_strips_space(member(j, "decoder"));
  } else {
    if (!normalizer.is_null())
      fail("normalizer '", type_of(normalizer), "' is not supported with byte-level BPE");
    bool byte_level = false;
    add_pre(pre_tok, v.pre, &byte_level, what);
    if (!byte_level) fail("BPE without a ByteLevel pre-tokenizer or byte_fallback is not supported");
  }
  check_component(member(j, "decoder"), "decoder", "decoders",
                  {"ByteLevel", "Metaspace", "WordPiece", "BPEDecoder", "CTC", "Sequence", "Replace", "Fuse",
                   "Strip", "ByteFallback"});
  check_component(member(j, "post_processor"), "post_processor", "processors",
                  {"ByteLevel", "TemplateProcessing", "RobertaProcessing", "BertProcessing", "Sequence"});
  const std::string bos = template_bos(member(j, "post_processor"));
  if (!bos.empty()) {
    for (const auto& a : v.added) {
      if (a.content == bos) v.bos_id = a.id;
    }
    v.add_bos = v.bos_id >= 0;
  }
  return std::make_unique<BpeTokenizer>(std::move(v), what);
}

}  // namespace

constexpr int kMaxJsonDepth = 64;

std::unique_ptr<Tokenizer> tokenizer_from_hf_json(std::string_view json_text, const std::string& what) {
  json j;
  try {
    // Real tokenizer.json files nest about 6 deep; refuse deep nesting while parsing (before any
    // recursive copy or walk could exhaust the stack).
    j = json::parse(json_text.begin(), json_text.end(), [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) throw Error("JSON nested more than 64 deep");
      return true;
    });
  } catch (const json::exception& e) {
    fail(what, ": not valid JSON: ", e.what());
  } catch (const Error& e) {
    fail(what, ": ", e.what());
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
