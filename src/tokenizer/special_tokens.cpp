#include "tokenizer/special_tokens.h"

#include <algorithm>

namespace llamarun {

void SpecialMatcher::add(std::string_view text, int32_t id) {
  if (text.empty()) return;
  auto& list = by_first_[static_cast<uint8_t>(text[0])];
  for (auto& [s, i] : list) {
    if (s == text) {
      i = id;
      return;
    }
  }
  list.emplace_back(std::string(text), id);
  std::stable_sort(list.begin(), list.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  ++count_;
}

size_t SpecialMatcher::match_at(std::string_view s, size_t pos, int32_t* id) const {
  const auto& list = by_first_[static_cast<uint8_t>(s[pos])];
  for (const auto& [lit, i] : list) {
    if (s.size() - pos >= lit.size() && s.compare(pos, lit.size(), lit) == 0) {
      *id = i;
      return lit.size();
    }
  }
  return 0;
}

std::vector<SpecialMatcher::Segment> SpecialMatcher::split(std::string_view s) const {
  std::vector<Segment> out;
  size_t start = 0;
  for (size_t pos = 0; pos < s.size();) {
    int32_t id;
    const size_t n = by_first_[static_cast<uint8_t>(s[pos])].empty() ? 0 : match_at(s, pos, &id);
    if (n == 0) {
      ++pos;
      continue;
    }
    if (pos > start) out.push_back({s.substr(start, pos - start), -1});
    out.push_back({s.substr(pos, n), id});
    pos += n;
    start = pos;
  }
  if (start < s.size()) out.push_back({s.substr(start), -1});
  return out;
}

}  // namespace llamarun
