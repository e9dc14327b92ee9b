// Literal matching of special/added token strings in text: leftmost-longest split of a text into
// plain segments and token ids (as Hugging Face's added-vocabulary split and llama.cpp do).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llamarun {

class SpecialMatcher {
 public:
  // Adds a literal; empty strings are ignored. A later add of the same string replaces the id.
  void add(std::string_view text, int32_t id);
  bool empty() const { return count_ == 0; }

  // Length of the longest literal that starts at s[pos] (0 if none); its id in *id.
  size_t match_at(std::string_view s, size_t pos, int32_t* id) const;

  struct Segment {
    std::string_view text;  // plain text (id == -1) or the matched literal
    int32_t id;
  };
  // Splits `s` into plain-text segments and matched literals, scanning left to right and taking
  // the longest literal at the first position where one matches. Empty text segments are omitted.
  std::vector<Segment> split(std::string_view s) const;

 private:
  // Literals grouped by their first byte, longest first.
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> by_first_;
  size_t count_ = 0;
};

}  // namespace llamarun
