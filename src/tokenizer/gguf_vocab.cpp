// tokenizer_from_gguf: the tokenizer stored in GGUF metadata (tokenizer.ggml.*).
#include <algorithm>
#include <limits>

#include "core/error.h"
#include "formats/weight_map.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/spm_tokenizer.h"

namespace llamarun {
namespace {

struct Meta {
  const WeightMap& wm;
  std::string what;

  const MetaValue* find(const std::string& key) const {
    auto it = wm.meta.find(key);
    return it == wm.meta.end() ? nullptr : &it->second;
  }
  [[noreturn]] void wrong(const std::string& key, const char* expected) const {
    fail(what, ": metadata '", key, "' is not ", expected);
  }
  std::string str(const std::string& key, const std::string& def) const {
    const MetaValue* v = find(key);
    if (!v) return def;
    if (auto* s = std::get_if<std::string>(v)) return *s;
    wrong(key, "a string");
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }
  int64_t integer(const std::string& key, int64_t def) const {
    const MetaValue* v = find(key);
    if (!v) return def;
    if (auto* i = std::get_if<int64_t>(v)) return *i;
    if (auto* u = std::get_if<uint64_t>(v)) {
      if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(what, ": metadata '", key, "' = ", *u, " is out of range");
      }
      return static_cast<int64_t>(*u);
    }
    wrong(key, "an integer");
  }
  bool boolean(const std::string& key, bool def) const {
    const MetaValue* v = find(key);
    if (!v) return def;
    if (auto* b = std::get_if<bool>(v)) return *b;
    if (auto* i = std::get_if<int64_t>(v)) return *i != 0;
    if (auto* u = std::get_if<uint64_t>(v)) return *u != 0;
    wrong(key, "a boolean");
  }
  const std::vector<std::string>& strs(const std::string& key) const {
    const MetaValue* v = find(key);
    if (!v) fail(what, ": metadata '", key, "' is missing");
    if (auto* s = std::get_if<std::vector<std::string>>(v)) return *s;
    wrong(key, "an array of strings");
  }
  const std::vector<int64_t>* ints(const std::string& key) const {
    const MetaValue* v = find(key);
    if (!v) return nullptr;
    if (auto* s = std::get_if<std::vector<int64_t>>(v)) return s;
    if (auto* s = std::get_if<std::vector<std::string>>(v); s && s->empty()) return nullptr;
    wrong(key, "an array of integers");
  }
  const std::vector<double>* floats(const std::string& key) const {
    const MetaValue* v = find(key);
    if (!v) return nullptr;
    if (auto* s = std::get_if<std::vector<double>>(v)) return s;
    wrong(key, "an array of floats");
  }
  // A token id key: -1 when absent; Error when out of [0, n).
  int32_t token_id(const std::string& key, size_t n) const {
    if (!has(key)) return -1;
    const int64_t id = integer(key, -1);
    if (id < 0 || static_cast<uint64_t>(id) >= n) {
      fail(what, ": metadata '", key, "' = ", id, " is outside the vocabulary (", n, " tokens)");
    }
    return static_cast<int32_t>(id);
  }
};

constexpr int kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeByte = 6;

std::vector<int64_t> token_types(const Meta& m, size_t n) {
  const std::vector<int64_t>* t = m.ints("tokenizer.ggml.token_type");
  if (!t) return std::vector<int64_t>(n, kTypeNormal);
  if (t->size() != n) {
    fail(m.what, ": tokenizer.ggml.token_type has ", t->size(), " entries for ", n, " tokens");
  }
  for (size_t i = 0; i < n; ++i) {
    if ((*t)[i] < 0 || (*t)[i] > 6) fail(m.what, ": token ", i, " has unknown token_type ", (*t)[i]);
  }
  return *t;
}

std::unique_ptr<Tokenizer> build_spm(const Meta& m) {
  const auto& tokens = m.strs("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  const std::vector<double>* scores = m.floats("tokenizer.ggml.scores");
  if (!scores) fail(m.what, ": metadata 'tokenizer.ggml.scores' is missing (needed by a llama vocabulary)");
  if (scores->size() != n)
    fail(m.what, ": tokenizer.ggml.scores has ", scores->size(), " entries for ", n, " tokens");
  const std::vector<int64_t> types = token_types(m, n);
  SpmModel sm;
  sm.pieces = tokens;
  sm.scores.reserve(n);
  for (double s : *scores) sm.scores.push_back(static_cast<float>(s));
  sm.types.reserve(n);
  for (int64_t t : types) sm.types.push_back(static_cast<SpmPieceType>(t == 0 ? kTypeNormal : t));
  sm.byte_fallback = std::find(types.begin(), types.end(), kTypeByte) != types.end();
  const int32_t unk = m.token_id("tokenizer.ggml.unknown_token_id", n);
  if (unk >= 0 && std::find(types.begin(), types.end(), kTypeUnknown) == types.end()) {
    sm.types[unk] = SpmPieceType::kUnknown;
  }
  const int32_t bos = m.token_id("tokenizer.ggml.bos_token_id", n);
  const int32_t eos = m.token_id("tokenizer.ggml.eos_token_id", n);
  sm.bos_id = bos >= 0 ? bos : (n > 1 ? 1 : -1);
  sm.eos_id = eos >= 0 ? eos : (n > 2 ? 2 : -1);
  sm.normalizer_name = "identity";
  sm.add_dummy_prefix = m.boolean("tokenizer.ggml.add_space_prefix", true);
  sm.remove_extra_whitespaces = m.boolean("tokenizer.ggml.remove_extra_whitespaces", false);
  sm.escape_whitespaces = true;
  auto tok = std::make_unique<SpmTokenizer>(std::move(sm), m.what);
  tok->set_add_bos(m.boolean("tokenizer.ggml.add_bos_token", true) && tok->bos_id() >= 0);
  return tok;
}

std::unique_ptr<Tokenizer> build_bpe(const Meta& m) {
  BpeVocab v;
  v.tokens = m.strs("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  const std::vector<int64_t> types = token_types(m, n);
  for (size_t i = 0; i < n; ++i) {
    if (types[i] == kTypeControl || types[i] == kTypeUserDefined) {
      v.added.push_back({static_cast<int32_t>(i), v.tokens[i], types[i] == kTypeControl});
    }
  }
  const auto& merges = m.strs("tokenizer.ggml.merges");
  v.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& s = merges[i];
    const size_t sp = s.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= s.size()) {
      fail(m.what, ": tokenizer.ggml.merges[", i, "] = '", s, "' is not two tokens separated by a space");
    }
    v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
  }
  const std::string pre = m.str("tokenizer.ggml.pre", "default");
  if (pre == "smollm") {
    v.pre.add_digits(true, m.what);
    v.pre.add_regex(kGpt2Pattern, m.what);
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    v.pre.add_regex(kLlama3Pattern, m.what);
    v.ignore_merges = true;
  } else if (pre == "gpt2" || pre == "default" || pre.empty()) {
    v.pre.add_regex(kGpt2Pattern, m.what);
  } else {
    fail(m.what, ": tokenizer.ggml.pre '", pre,
         "' is not supported (supported: default, gpt2, smollm, llama-bpe, llama3, llama-v3)");
  }
  // Validated, but not used for BPE: a byte missing from the vocabulary is dropped, as Hugging Face
  // tokenizers does for a BPE model without unk_token (byte-level vocabularies have all 256 bytes).
  (void)m.token_id("tokenizer.ggml.unknown_token_id", n);
  v.bos_id = m.token_id("tokenizer.ggml.bos_token_id", n);
  v.eos_id = m.token_id("tokenizer.ggml.eos_token_id", n);
  v.add_bos = m.boolean("tokenizer.ggml.add_bos_token", false);
  return std::make_unique<BpeTokenizer>(std::move(v), m.what);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const WeightMap& wm) {
  Meta m{wm, wm.files.empty() ? std::string("GGUF") : wm.files.front()->path()};
  const std::string model = m.str("tokenizer.ggml.model", "");
  if (model == "llama") return build_spm(m);
  if (model == "gpt2") return build_bpe(m);
  if (model.empty()) fail(m.what, ": no tokenizer (metadata 'tokenizer.ggml.model' is missing)");
  fail(m.what, ": tokenizer.ggml.model '", model, "' is not supported (supported: llama, gpt2)");
}

}  // namespace llamarun
