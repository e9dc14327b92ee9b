// Stop strings over streamed text. Feed the decoded pieces in order; each push returns the text
// that is safe to show now. A suffix that could still become a stop string is held back; when a stop
// string completes, the text before it is returned and the stop string itself never is.
//
// Matching is byte-wise and incremental (one KMP automaton per stop string), so the result does not
// depend on how the text is split into pieces. When several stop strings could match, the one that
// COMPLETES first wins (a streaming engine must stop as soon as any stop string is complete); among
// those completing at the same byte the longest wins. With valid UTF-8 text and stop strings, text
// is only ever split at character boundaries.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llamarun {

class StopMatcher {
 public:
  // stops: non-empty strings (throws Error for an empty one). No stops: everything passes through.
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string completed: end the sequence after emitting text
  };

  // Appends a piece. After a stop has matched, returns {"", true} and ignores the piece.
  Result push(std::string_view piece);
  // End of generation without a stop (EOS, max_tokens): returns the held-back text, then nothing.
  std::string flush();

  bool stopped() const { return matched_ >= 0; }
  // Index into the stop list of the string that matched, or -1.
  int matched_index() const { return matched_; }
  // Bytes currently held back (a prefix of some stop string).
  const std::string& held() const { return held_; }
  // The longest stop string in bytes (0 when none): at most this minus one byte is ever held.
  size_t max_stop_length() const { return max_len_; }

 private:
  std::vector<std::string> stops_;
  std::vector<std::vector<int>> fail_;  // per stop: KMP failure function, [stop length]
  std::vector<int> state_;              // per stop: longest prefix that is a suffix of the text so far
  std::string held_;
  size_t max_len_ = 0;
  int matched_ = -1;
};

}  // namespace llamarun
