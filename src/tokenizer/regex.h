// A compiled PCRE2 regular expression (UTF mode, Unicode properties, JIT when available) for the
// pre-tokenizer patterns. Invalid UTF-8 in the subject never fails a search
// (PCRE2_MATCH_INVALID_UTF: such bytes simply never match).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llamarun {

class Regex {
 public:
  // Throws Error naming `what` and the position when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches, left to right, as [start, end) byte ranges. Empty matches are
  // skipped (the search moves on by one character). Never throws for any subject: the
  // backtracking limit grows with the subject length, and if a resource limit is still hit the
  // search stops there (the rest stays one unmatched range). Thread-safe.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace llamarun
