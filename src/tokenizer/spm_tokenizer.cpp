#include "tokenizer/spm_tokenizer.h"

#include <functional>
#include <queue>
#include <utility>

#include "core/error.h"
#include "core/utf8.h"

namespace llamarun {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// "<0xAB>" -> 0xAB; -1 if the piece is not of that form.
int parse_byte_piece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = p[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
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

}  // namespace

SpmTokenizer::SpmTokenizer(SpmModel model, const std::string& what) : m_(std::move(model)) {
  const size_t n = m_.pieces.size();
  if (m_.scores.size() != n || m_.types.size() != n) {
    fail(what, ": vocabulary arrays disagree: ", n, " pieces, ", m_.scores.size(), " scores, ",
         m_.types.size(), " types");
  }
  if (n == 0 || n > (1u << 30)) fail(what, ": vocabulary size ", n, " is out of range");
  if (m_.treat_whitespace_as_suffix) fail(what, ": treat_whitespace_as_suffix is not supported");
  vocab_size_ = static_cast<int>(n);
  byte_id_.fill(-1);
  control_.assign(n, 0);
  bytes_.resize(n);
  int unk = -1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& p = m_.pieces[i];
    const SpmPieceType t = m_.types[i];
    const int32_t id = static_cast<int32_t>(i);
    if (p.empty()) fail(what, ": piece ", i, " is empty");
    const bool mergeable =
        t == SpmPieceType::kNormal || t == SpmPieceType::kUserDefined || t == SpmPieceType::kUnused;
    auto& map = mergeable ? normal_ : reserved_;
    if (!map.emplace(p, id).second) fail(what, ": piece '", p, "' (id ", i, ") is defined twice");
    switch (t) {
      case SpmPieceType::kUserDefined:
        user_defined_.add(p, id);
        bytes_[i] = replace_all(p, kSpaceSymbol, " ");
        break;
      case SpmPieceType::kUnknown:
        if (unk >= 0) fail(what, ": more than one unknown piece (ids ", unk, " and ", i, ")");
        unk = id;
        bytes_[i] = m_.unk_surface;
        control_text_.add(p, id);
        break;
      case SpmPieceType::kControl:
        control_[i] = 1;
        control_text_.add(p, id);
        break;
      case SpmPieceType::kByte: {
        const int b = parse_byte_piece(p);
        if (b < 0) fail(what, ": byte piece ", i, " is '", p, "', expected the form <0xAB>");
        if (!m_.byte_fallback) fail(what, ": byte piece '", p, "' in a model without byte_fallback");
        if (byte_id_[b] >= 0) fail(what, ": byte piece '", p, "' is defined twice");
        byte_id_[b] = id;
        bytes_[i] = std::string(1, static_cast<char>(b));
        break;
      }
      case SpmPieceType::kUnused:
        has_unused_ = true;
        bytes_[i] = replace_all(p, kSpaceSymbol, " ");
        break;
      case SpmPieceType::kNormal:
        bytes_[i] = replace_all(p, kSpaceSymbol, " ");
        break;
    }
  }
  if (unk < 0) fail(what, ": the vocabulary has no unknown piece (type UNKNOWN)");
  m_.unk_id = unk;
  auto id_or_none = [&](int id) { return id >= 0 && id < vocab_size_ ? id : -1; };
  bos_id_ = id_or_none(m_.bos_id);
  eos_id_ = id_or_none(m_.eos_id);
  add_bos_ = true;
  repair_per_byte_ = true;
  control_breaks_bytes_ = true;
  init_stop_ids();
}

std::string SpmTokenizer::normalize(std::string_view text) const {
  std::string out;
  out.reserve(text.size() + text.size() / 2 + 3);
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  const bool squeeze = m_.remove_extra_whitespaces;
  if (squeeze) {
    while (i < n && p[i] == ' ') ++i;
  }
  if (i == n) return out;
  const std::string_view space = m_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
  if (m_.add_dummy_prefix) out += space;
  bool prev_space = squeeze;
  while (i < n) {
    if (p[i] == ' ') {
      if (!prev_space) out += space;
      prev_space = squeeze;
      ++i;
      continue;
    }
    prev_space = false;
    const Utf8Scan sc = utf8_scan(p + i, n - i);
    if (sc.status == Utf8Status::kValid) {
      out.append(text.data() + i, sc.len);
      i += sc.len;
    } else {
      out += kReplacementChar;  // sentencepiece consumes one byte per malformed character
      ++i;
    }
  }
  if (squeeze) {
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0) {
      out.resize(out.size() - space.size());
    }
  }
  return out;
}

void SpmTokenizer::emit_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) {
    out.push_back(it->second);
    return;
  }
  if (auto it = normal_.find(piece); it != normal_.end()) {
    out.push_back(it->second);
    return;
  }
  if (m_.byte_fallback) {
    for (char c : piece) {
      const int32_t b = byte_id_[static_cast<uint8_t>(c)];
      out.push_back(b >= 0 ? b : m_.unk_id);
    }
  } else {
    out.push_back(m_.unk_id);
  }
}

void SpmTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  const std::string norm = normalize(text);
  if (norm.empty()) return;

  // Symbols: a doubly linked list over byte ranges of `norm`.
  struct Symbol {
    int prev, next;
    uint32_t start, len;
    bool freeze;
  };
  std::vector<Symbol> sym;
  sym.reserve(norm.size());
  const auto* p = reinterpret_cast<const uint8_t*>(norm.data());
  for (size_t i = 0; i < norm.size();) {
    int32_t id;
    size_t len = user_defined_.empty() ? 0 : user_defined_.match_at(norm, i, &id);
    const bool freeze = len > 0;
    if (!freeze) {
      const Utf8Scan sc = utf8_scan(p + i, norm.size() - i);
      len = sc.status == Utf8Status::kValid ? sc.len : 1;
    }
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, -1, static_cast<uint32_t>(i), static_cast<uint32_t>(len), freeze});
    if (idx > 0) sym[idx - 1].next = idx;
    i += len;
  }

  struct Pair {
    float score;
    int left, right;
    uint32_t size;  // byte length of the merged piece, to detect stale entries
  };
  struct Worse {
    bool operator()(const Pair& a, const Pair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  std::priority_queue<Pair, std::vector<Pair>, Worse> agenda;
  // Pieces of UNUSED type are merged through and split again at the end (as sentencepiece does).
  StringMap<std::pair<std::string, std::string>> rev_merge;

  auto maybe_add = [&](int l, int r) {
    if (l < 0 || r < 0 || sym[l].freeze || sym[r].freeze) return;
    const std::string_view piece(norm.data() + sym[l].start, sym[l].len + sym[r].len);
    auto it = normal_.find(piece);
    if (it == normal_.end()) return;
    const int32_t id = it->second;
    agenda.push({m_.scores[id], l, r, static_cast<uint32_t>(piece.size())});
    if (has_unused_ && m_.types[id] == SpmPieceType::kUnused) {
      rev_merge[std::string(piece)] = {std::string(norm.data() + sym[l].start, sym[l].len),
                                       std::string(norm.data() + sym[r].start, sym[r].len)};
    }
  };
  for (size_t i = 1; i < sym.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& l = sym[top.left];
    Symbol& r = sym[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.size || l.next != top.right) continue;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = top.left;
    r.len = 0;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }

  std::function<void(std::string_view)> resegment = [&](std::string_view w) {
    if (has_unused_) {
      auto it = normal_.find(w);
      if (it != normal_.end() && m_.types[it->second] == SpmPieceType::kUnused) {
        auto rv = rev_merge.find(w);
        if (rv != rev_merge.end()) {
          const auto parts = rv->second;
          resegment(parts.first);
          resegment(parts.second);
          return;
        }
      }
    }
    emit_piece(w, out);
  };
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    resegment(std::string_view(norm.data() + sym[i].start, sym[i].len));
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (!parse_special || control_text_.empty()) {
    encode_segment(text, out);
    return out;
  }
  // Each plain segment is encoded on its own (with its own dummy prefix), as Hugging Face's
  // (legacy) Llama tokenizer and llama.cpp do.
  for (const auto& seg : control_text_.split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else {
      encode_segment(seg.text, out);
    }
  }
  return out;
}

std::vector<int32_t> SpmTokenizer::encode_spans(std::string_view text,
                                                const std::vector<std::pair<size_t, size_t>>& spans) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  for (const auto& seg : control_text_.split(text, spans)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else {
      encode_segment(seg.text, out);
    }
  }
  return out;
}

std::string SpmTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return bytes_[id];
}

std::string SpmTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return m_.pieces[id];
}

int32_t SpmTokenizer::find_token(std::string_view p) const {
  if (auto it = reserved_.find(p); it != reserved_.end()) return it->second;
  if (auto it = normal_.find(p); it != normal_.end()) return it->second;
  return -1;
}

bool SpmTokenizer::strips_leading_space(int32_t id) const {
  if (!m_.add_dummy_prefix || id < 0 || id >= vocab_size_) return false;
  const SpmPieceType t = m_.types[id];
  return (t == SpmPieceType::kNormal || t == SpmPieceType::kUnused) && !bytes_[id].empty() &&
         bytes_[id][0] == ' ';
}

}  // namespace llamarun
