#include "tokenizer/bpe_tokenizer.h"

#include <queue>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace llamarun {

BpeTokenizer::BpeTokenizer(BpeVocab v, const std::string& what)
    : tokens_(std::move(v.tokens)), pre_(std::move(v.pre)), ignore_merges_(v.ignore_merges) {
  // Ids of the model vocabulary (added tokens may also appear there, or only in `added`).
  std::vector<uint8_t> in_model(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) in_model[i] = !tokens_[i].empty();
  const size_t max_id = tokens_.size() + v.added.size();  // ids stay dense: no huge allocations
  for (const auto& a : v.added) {
    if (a.id < 0 || static_cast<size_t>(a.id) >= max_id) {
      fail(what, ": added token '", a.content, "' has id ", a.id, ", outside [0, ", max_id, ")");
    }
    if (static_cast<size_t>(a.id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(a.id) + 1);
    if (tokens_[a.id].empty()) tokens_[a.id] = a.content;
  }
  const size_t n = tokens_.size();
  if (n == 0 || n > (1u << 30)) fail(what, ": vocabulary size ", n, " is out of range");
  vocab_size_ = static_cast<int>(n);
  control_.assign(n, 0);
  bytes_.resize(n);
  byte_id_.fill(-1);
  in_model.resize(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = tokens_[i];
    if (t.empty()) continue;
    by_string_.emplace(t, static_cast<int32_t>(i));  // first id wins for duplicates
    std::string raw;
    if (byte_level_to_bytes(t, &raw)) {
      bytes_[i] = raw;
      if (in_model[i]) {
        by_bytes_.emplace(raw, static_cast<int32_t>(i));
        if (raw.size() == 1 && byte_id_[static_cast<uint8_t>(raw[0])] < 0) {
          byte_id_[static_cast<uint8_t>(raw[0])] = static_cast<int32_t>(i);
        }
      }
    } else {
      bytes_[i] = t;  // not in the byte-level alphabet (an added token's plain text)
    }
  }
  for (const auto& a : v.added) {
    added_all_.add(a.content, a.id);
    if (a.special) {
      control_[a.id] = 1;
    } else {
      added_plain_.add(a.content, a.id);
    }
  }
  int32_t rank = 0;
  for (const auto& [l, r] : v.merges) {
    auto li = by_string_.find(l), ri = by_string_.find(r), mi = by_string_.find(l + r);
    if (li == by_string_.end() || ri == by_string_.end() || mi == by_string_.end()) {
      fail(what, ": merge ", rank, " ('", l, "' '", r, "') uses a token that is not in the vocabulary");
    }
    const uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(li->second)) << 32) | static_cast<uint32_t>(ri->second);
    merges_[key] = {rank, mi->second};  // a repeated merge takes its last rank, as HF does
    ++rank;
  }
  if (v.unk_id >= vocab_size_) fail(what, ": unknown-token id ", v.unk_id, " is out of range");
  unk_id_ = v.unk_id;
  auto id_or_none = [&](int32_t id) { return id >= 0 && id < vocab_size_ ? id : -1; };
  bos_id_ = id_or_none(v.bos_id);
  eos_id_ = id_or_none(v.eos_id);
  add_bos_ = v.add_bos && bos_id_ >= 0;
  repair_per_byte_ = false;
  init_stop_ids();
}

void BpeTokenizer::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (auto it = by_bytes_.find(word); it != by_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int prev, next;
    uint32_t len;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (char c : word) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id < 0 && unk_id_ < 0) continue;  // HF drops a character missing from the vocabulary
    const int idx = static_cast<int>(sym.size());
    sym.push_back({id < 0 ? unk_id_ : id, idx - 1, -1, 1});
    if (idx > 0) sym[idx - 1].next = idx;
  }
  struct Merge {
    int32_t rank;
    int pos;
    int32_t id;
  };
  struct Later {
    bool operator()(const Merge& a, const Merge& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    }
  };
  auto lookup = [&](int32_t l, int32_t r) -> const MergeInfo* {
    auto it =
        merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge, std::vector<Merge>, Later> queue;
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    if (const MergeInfo* m = lookup(sym[i].id, sym[i + 1].id))
      queue.push({m->rank, static_cast<int>(i), m->id});
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& s = sym[top.pos];
    if (s.len == 0 || s.next < 0) continue;
    Symbol& right = sym[s.next];
    const MergeInfo* m = lookup(s.id, right.id);
    if (!m || m->id != top.id) continue;  // stale entry
    s.id = top.id;
    s.len += right.len;
    right.len = 0;
    s.next = right.next;
    if (s.next >= 0) sym[s.next].prev = top.pos;
    if (s.prev >= 0) {
      if (const MergeInfo* pm = lookup(sym[s.prev].id, s.id)) queue.push({pm->rank, s.prev, pm->id});
    }
    if (s.next >= 0) {
      if (const MergeInfo* nm = lookup(s.id, sym[s.next].id)) queue.push({nm->rank, top.pos, nm->id});
    }
  }
  std::vector<int32_t> ids;
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() >= kCacheMax) cache_.clear();
  cache_.emplace(word, std::move(ids));
}

void BpeTokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  for (const std::string& word : pre_.split(text)) encode_word(word, out);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  std::string repaired;
  if (!utf8_is_valid(text)) {
    repaired = utf8_repair(text, Utf8Repair::kMaximalSubpart);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const SpecialMatcher& m = parse_special ? added_all_ : added_plain_;
  if (m.empty()) {
    encode_text(text, out);
    return out;
  }
  for (const auto& seg : m.split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else {
      encode_text(seg.text, out);
    }
  }
  return out;
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || control_[id]) return {};
  return bytes_[id];
}

std::string BpeTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return tokens_[id];
}

int32_t BpeTokenizer::find_token(std::string_view p) const {
  auto it = by_string_.find(p);
  return it == by_string_.end() ? -1 : it->second;
}

}  // namespace llamarun
