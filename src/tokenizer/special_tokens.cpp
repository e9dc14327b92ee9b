#include "tokenizer/special_tokens.h"

#include <algorithm>
#include <iterator>

#include "core/utf8.h"

namespace llamarun {
namespace {

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Start of the whitespace run that ends at `end` (not before `floor`).
size_t skip_space_back(std::string_view s, size_t end, size_t floor) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (end > floor) {
    size_t start = end - 1;
    while (start > floor && (p[start] & 0xC0) == 0x80 && end - start < 4) --start;
    const Utf8Scan sc = utf8_scan(p + start, end - start);
    if (sc.status != Utf8Status::kValid || sc.len != end - start || !is_white_space(sc.cp)) break;
    end = start;
  }
  return end;
}

// End of the whitespace run that starts at `pos`.
size_t skip_space_forward(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (pos < s.size()) {
    const Utf8Scan sc = utf8_scan(p + pos, s.size() - pos);
    if (sc.status != Utf8Status::kValid || !is_white_space(sc.cp)) break;
    pos += sc.len;
  }
  return pos;
}

}  // namespace

void SpecialMatcher::add(std::string_view text, int32_t id, bool lstrip, bool rstrip, bool anywhere) {
  if (text.empty()) return;
  auto& list = by_first_[static_cast<uint8_t>(text[0])];
  for (auto& l : list) {
    if (l.text == text) {
      l = {std::string(text), id, lstrip, rstrip, anywhere};
      return;
    }
  }
  list.push_back({std::string(text), id, lstrip, rstrip, anywhere});
  std::stable_sort(list.begin(), list.end(),
                   [](const Literal& a, const Literal& b) { return a.text.size() > b.text.size(); });
  ++count_;
}

const SpecialMatcher::Literal* SpecialMatcher::find_at(std::string_view s, size_t pos,
                                                       const Spans* allowed) const {
  size_t span_end = s.size();
  if (allowed) {
    // The span holding pos (the last one starting at or before it); none: only `anywhere` literals.
    auto it = std::upper_bound(allowed->begin(), allowed->end(), pos,
                               [](size_t p, const std::pair<size_t, size_t>& sp) { return p < sp.first; });
    span_end = it == allowed->begin() || pos >= std::prev(it)->second ? pos : std::prev(it)->second;
  }
  for (const Literal& l : by_first_[static_cast<uint8_t>(s[pos])]) {
    if ((l.anywhere || pos + l.text.size() <= span_end) && s.size() - pos >= l.text.size() &&
        s.compare(pos, l.text.size(), l.text) == 0)
      return &l;
  }
  return nullptr;
}

size_t SpecialMatcher::match_at(std::string_view s, size_t pos, int32_t* id) const {
  const Literal* l = find_at(s, pos);
  if (!l) return 0;
  *id = l->id;
  return l->text.size();
}

std::vector<SpecialMatcher::Segment> SpecialMatcher::split(std::string_view s) const {
  return split_impl(s, nullptr);
}

std::vector<SpecialMatcher::Segment> SpecialMatcher::split(std::string_view s, const Spans& allowed) const {
  return split_impl(s, &allowed);
}

std::vector<SpecialMatcher::Segment> SpecialMatcher::split_impl(std::string_view s,
                                                                const Spans* allowed) const {
  std::vector<Segment> out;
  size_t start = 0;  // start of the pending plain text
  for (size_t pos = 0; pos < s.size();) {
    const Literal* l = by_first_[static_cast<uint8_t>(s[pos])].empty() ? nullptr : find_at(s, pos, allowed);
    if (!l) {
      ++pos;
      continue;
    }
    const size_t text_end = l->lstrip ? skip_space_back(s, pos, start) : pos;
    const size_t stop = l->rstrip ? skip_space_forward(s, pos + l->text.size()) : pos + l->text.size();
    if (text_end > start) out.push_back({s.substr(start, text_end - start), -1});
    out.push_back({s.substr(text_end, stop - text_end), l->id});
    pos = stop;
    start = stop;
  }
  if (start < s.size()) out.push_back({s.substr(start), -1});
  return out;
}

}  // namespace llamarun
