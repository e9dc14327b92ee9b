// Literal matching of special/added token strings in text: leftmost-longest split of a text into
// plain segments and token ids (as Hugging Face's added-vocabulary split and llama.cpp do).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llamarun {

class SpecialMatcher {
 public:
  // Adds a literal; empty strings are ignored. A later add of the same string replaces it.
  // lstrip / rstrip: whitespace (Unicode White_Space) before / after a match is absorbed into it
  // (HF AddedToken options).
  // anywhere: split(s, allowed) matches this literal outside the allowed spans too (HF's
  // non-special added tokens, which stay tokens in any text).
  void add(std::string_view text, int32_t id, bool lstrip = false, bool rstrip = false,
           bool anywhere = false);
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
  // Byte ranges [first, second) of a text, sorted and disjoint.
  using Spans = std::vector<std::pair<size_t, size_t>>;
  // As split(s), but a literal matches only where it lies entirely inside one of `allowed`;
  // elsewhere its text stays plain (chat prompts: the template's markers are special, message
  // content is not).
  std::vector<Segment> split(std::string_view s, const Spans& allowed) const;

 private:
  struct Literal {
    std::string text;
    int32_t id;
    bool lstrip, rstrip, anywhere;
  };
  const Literal* find_at(std::string_view s, size_t pos, const Spans* allowed = nullptr) const;
  std::vector<Segment> split_impl(std::string_view s, const Spans* allowed) const;
  // Literals grouped by their first byte, longest first.
  std::array<std::vector<Literal>, 256> by_first_;
  size_t count_ = 0;
};

}  // namespace llamarun
