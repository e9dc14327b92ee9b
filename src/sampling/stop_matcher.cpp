#include "sampling/stop_matcher.h"

#include <algorithm>

#include "core/error.h"

namespace llamarun {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  fail_.resize(stops_.size());
  state_.assign(stops_.size(), 0);
  for (size_t k = 0; k < stops_.size(); ++k) {
    const std::string& s = stops_[k];
    LLAMARUN_CHECK(!s.empty(), "StopMatcher: stop[", k, "] is an empty string");
    max_len_ = std::max(max_len_, s.size());
    // fail[i] = length of the longest proper prefix of s[0..i] that is also a suffix of it.
    std::vector<int>& f = fail_[k];
    f.assign(s.size(), 0);
    int len = 0;
    for (size_t i = 1; i < s.size(); ++i) {
      while (len > 0 && s[i] != s[len]) len = f[len - 1];
      if (s[i] == s[len]) ++len;
      f[i] = len;
    }
  }
}

StopMatcher::Result StopMatcher::push(std::string_view piece) {
  Result r;
  if (stopped()) {
    r.stopped = true;
    return r;
  }
  if (stops_.empty()) {
    r.text.assign(piece);
    return r;
  }
  const size_t base = held_.size();
  held_.append(piece);
  for (size_t i = 0; i < piece.size(); ++i) {
    const char ch = piece[i];
    int best = -1;  // stop completing at this byte (the longest one)
    for (size_t k = 0; k < stops_.size(); ++k) {
      const std::string& s = stops_[k];
      int st = state_[k];
      while (st > 0 && s[st] != ch) st = fail_[k][st - 1];
      if (s[st] == ch) ++st;
      if (static_cast<size_t>(st) == s.size()) {
        if (best < 0 || s.size() > stops_[best].size()) best = static_cast<int>(k);
        st = fail_[k][st - 1];
      }
      state_[k] = st;
    }
    if (best >= 0) {
      matched_ = best;
      const size_t end = base + i + 1;  // one past the stop string's last byte, within held_
      r.text = held_.substr(0, end - stops_[best].size());
      r.stopped = true;
      held_.clear();
      return r;
    }
  }
  // Hold back the longest suffix that is a prefix of some stop string.
  size_t hold = 0;
  for (int st : state_) hold = std::max(hold, static_cast<size_t>(st));
  hold = std::min(hold, held_.size());
  r.text = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return r;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  std::fill(state_.begin(), state_.end(), 0);
  return out;
}

}  // namespace llamarun
