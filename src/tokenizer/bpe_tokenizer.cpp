#include "tokenizer/bpe_tokenizer.h"

#include <queue>

#include "core/error.h"
#include "core/utf8.h"
#include "tokenizer/byte_level.h"

namespace llamarun {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// "<0xAB>" -> 0xAB; -1 otherwise.
int byte_piece_value(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = p[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  size_t pos = 0;
  for (;;) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

uint64_t pair_key(int32_t l, int32_t r) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeVocab v, const std::string& what)
    : tokens_(std::move(v.tokens)),
      pre_(std::move(v.pre)),
      ignore_merges_(v.ignore_merges),
      byte_fallback_(v.byte_fallback),
      fuse_unk_(v.fuse_unk),
      normalizer_(std::move(v.normalizer)),
      decode_strip_space_(v.decode_strip_space) {
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
  is_byte_.assign(n, 0);
  byte_id_.fill(-1);
  in_model.resize(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = tokens_[i];
    const auto id = static_cast<int32_t>(i);
    if (t.empty()) continue;
    by_string_.emplace(t, id);  // first id wins for duplicates
    if (byte_fallback_) {
      const int b = byte_piece_value(t);
      if (b >= 0 && in_model[i]) {
        is_byte_[i] = 1;
        bytes_[i] = std::string(1, static_cast<char>(b));
        if (byte_id_[b] < 0) byte_id_[b] = id;
      } else {
        bytes_[i] = replace_all(t, kSpaceSymbol, " ");
      }
      if (in_model[i]) model_.emplace(t, id);
      continue;
    }
    std::string raw;
    if (byte_level_to_bytes(t, &raw)) {
      bytes_[i] = raw;
      if (in_model[i]) {
        model_.emplace(raw, id);
        if (raw.size() == 1 && byte_id_[static_cast<uint8_t>(raw[0])] < 0) {
          byte_id_[static_cast<uint8_t>(raw[0])] = id;
        }
      }
    } else {
      bytes_[i] = t;  // not in the byte-level alphabet (an added token's plain text)
    }
  }
  for (const auto& a : v.added) {
    added_all_.add(a.content, a.id, a.lstrip, a.rstrip, /*anywhere=*/!a.special);
    if (a.special) {
      control_[a.id] = 1;
    } else {
      added_plain_.add(a.content, a.id, a.lstrip, a.rstrip);
    }
  }
  int32_t rank = 0;
  for (const auto& [l, r] : v.merges) {
    auto li = by_string_.find(l), ri = by_string_.find(r), mi = by_string_.find(l + r);
    if (li == by_string_.end() || ri == by_string_.end() || mi == by_string_.end()) {
      fail(what, ": merge ", rank, " ('", l, "' '", r, "') uses a token that is not in the vocabulary");
    }
    merges_[pair_key(li->second, ri->second)] = {rank,
                                                 mi->second};  // a repeated merge keeps its last rank (HF)
    ++rank;
  }
  if (v.unk_id >= vocab_size_) fail(what, ": unknown-token id ", v.unk_id, " is out of range");
  unk_id_ = v.unk_id;
  auto id_or_none = [&](int32_t id) { return id >= 0 && id < vocab_size_ ? id : -1; };
  bos_id_ = id_or_none(v.bos_id);
  eos_id_ = id_or_none(v.eos_id);
  add_bos_ = v.add_bos && bos_id_ >= 0;
  // Byte fallback: HF replaces each token of an invalid byte run (one byte each) with U+FFFD.
  repair_per_byte_ = byte_fallback_;
  init_stop_ids();
}

void BpeTokenizer::merge(std::vector<int32_t>& ids) const {
  if (ids.size() < 2) return;
  struct Symbol {
    int32_t id;
    int prev, next;
    bool live;
  };
  std::vector<Symbol> sym(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    sym[i] = {ids[i], static_cast<int>(i) - 1, i + 1 < ids.size() ? static_cast<int>(i) + 1 : -1, true};
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
    auto it = merges_.find(pair_key(l, r));
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
    if (!s.live || s.next < 0) continue;
    Symbol& right = sym[s.next];
    const MergeInfo* m = lookup(s.id, right.id);
    if (!m || m->id != top.id) continue;  // stale entry
    s.id = top.id;
    right.live = false;
    s.next = right.next;
    if (s.next >= 0) sym[s.next].prev = top.pos;
    if (s.prev >= 0) {
      if (const MergeInfo* pm = lookup(sym[s.prev].id, s.id)) queue.push({pm->rank, s.prev, pm->id});
    }
    if (s.next >= 0) {
      if (const MergeInfo* nm = lookup(s.id, sym[s.next].id)) queue.push({nm->rank, top.pos, nm->id});
    }
  }
  ids.clear();
  for (int i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

void BpeTokenizer::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (auto it = model_.find(word); it != model_.end()) {
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
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (char c : word) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      ids.push_back(id);
    } else if (unk_id_ >= 0) {
      ids.push_back(unk_id_);
    }  // else HF drops a byte missing from the vocabulary
  }
  merge(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() >= kCacheMax) cache_.clear();
  cache_.emplace(word, std::move(ids));
}

void BpeTokenizer::encode_chars(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (auto it = model_.find(word); it != model_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  const auto* p = reinterpret_cast<const uint8_t*>(word.data());
  bool prev_unk = false;
  for (size_t i = 0; i < word.size();) {
    const Utf8Scan sc = utf8_scan(p + i, word.size() - i);
    const size_t len = sc.status == Utf8Status::kValid ? sc.len : 1;
    const std::string_view ch(word.data() + i, len);
    i += len;
    if (auto it = model_.find(ch); it != model_.end()) {
      ids.push_back(it->second);
      prev_unk = false;
      continue;
    }
    bool all_bytes = true;
    for (char c : ch) all_bytes &= byte_id_[static_cast<uint8_t>(c)] >= 0;
    if (all_bytes) {
      for (char c : ch) ids.push_back(byte_id_[static_cast<uint8_t>(c)]);
      prev_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && prev_unk)) ids.push_back(unk_id_);
      prev_unk = true;
    }
  }
  merge(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeTokenizer::encode_segment(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
  if (!byte_fallback_) {
    for (const std::string& word : pre_.split(text)) encode_word(word, out);
    return;
  }
  std::string s(text);
  for (const auto& op : normalizer_) {
    if (op.kind == BpeVocab::NormOp::Kind::kReplace) {
      s = replace_all(s, op.a, op.b);
    } else if (!s.empty() && (!op.first_only || at_start) &&
               !(op.unless_present && s.compare(0, op.a.size(), op.a) == 0)) {
      s.insert(0, op.a);
    }
  }
  if (!s.empty()) encode_chars(s, out);
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
    encode_segment(text, true, out);
    return out;
  }
  for (const auto& seg : m.split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else {
      encode_segment(seg.text, seg.text.data() == text.data(), out);
    }
  }
  return out;
}

std::vector<int32_t> BpeTokenizer::encode_spans(std::string_view text,
                                                const std::vector<std::pair<size_t, size_t>>& spans) const {
  std::string repaired;
  std::vector<std::pair<size_t, size_t>> repaired_spans;
  const auto* sp = &spans;
  if (!utf8_is_valid(text)) {
    // Repair each piece on its own (template spans and the text between them) so the spans
    // still line up.
    size_t at = 0;
    auto add = [&](size_t b, size_t e) {
      repaired += utf8_repair(text.substr(b, e - b), Utf8Repair::kMaximalSubpart);
    };
    for (const auto& [b, e] : spans) {
      add(at, b);
      const size_t nb = repaired.size();
      add(b, e);
      repaired_spans.emplace_back(nb, repaired.size());
      at = e;
    }
    add(at, text.size());
    text = repaired;
    sp = &repaired_spans;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  for (const auto& seg : added_all_.split(text, *sp)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else {
      encode_segment(seg.text, seg.text.data() == text.data(), out);
    }
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  if (!byte_fallback_) return Tokenizer::decode(ids);
  std::string out, run;
  size_t run_tokens = 0;
  auto flush_run = [&] {
    if (utf8_is_valid(run)) {
      out += run;
    } else {
      for (size_t k = 0; k < run_tokens; ++k) out += kReplacementChar;
    }
    run.clear();
    run_tokens = 0;
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_ || control_[id]) continue;
    if (is_byte_[id]) {
      run += bytes_[id];
      ++run_tokens;
    } else {
      flush_run();
      out += bytes_[id];
    }
  }
  flush_run();
  if (decode_strip_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

bool BpeTokenizer::strips_leading_space(int32_t id) const {
  return decode_strip_space_ && id >= 0 && id < vocab_size_ && !bytes_[id].empty() && bytes_[id][0] == ' ';
}

size_t BpeTokenizer::find_unencodable(std::string_view text) const {
  // Byte fallback: characters without a piece become <0xXX> tokens or <unk>; only a missing byte
  // token with no <unk> loses text. Byte-level: a byte without a symbol and no <unk> is dropped.
  // (Invalid UTF-8 is repaired to U+FFFD before encoding; callers validate it first.)
  if (unk_id_ >= 0) return std::string_view::npos;
  if (byte_fallback_) {
    const auto* p = reinterpret_cast<const uint8_t*>(text.data());
    for (size_t i = 0; i < text.size();) {
      const Utf8Scan sc = utf8_scan(p + i, text.size() - i);
      const size_t len = sc.status == Utf8Status::kValid ? sc.len : 1;
      const std::string_view ch(text.data() + i, len);
      bool all_bytes = true;
      for (char c : ch) all_bytes &= byte_id_[static_cast<uint8_t>(c)] >= 0;
      // A space is normalized to U+2581 first.
      if (!all_bytes && ch != " " && model_.find(ch) == model_.end()) return i;
      i += len;
    }
    return std::string_view::npos;
  }
  for (size_t i = 0; i < text.size(); ++i)
    if (byte_id_[static_cast<uint8_t>(text[i])] < 0) return i;
  return std::string_view::npos;
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
