// UTF-8: the one validator (Unicode's Table 3-7: no overlongs, surrogates or code points past U+10FFFF)
// and what is built on it: repair of invalid input (two conventions, matching the two reference
// libraries), detection of an incomplete tail. Used by the tokenizers, the server and the sampling checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace llamarun {

enum class Utf8Status { kValid, kInvalid, kTruncated };

struct Utf8Scan {
  Utf8Status status;
  // kValid: length of the character (1-4). kInvalid: length of the maximal subpart of an
  // ill-formed sequence (Unicode 3.9 "U+FFFD substitution of maximal subparts"; >= 1).
  // kTruncated: all `n` bytes are a valid prefix of a longer character (the input ended).
  size_t len;
  uint32_t cp;  // the code point when kValid
};

// Examines the character starting at p[0] (n >= 1 bytes available).
Utf8Scan utf8_scan(const uint8_t* p, size_t n);

// How invalid bytes are replaced by U+FFFD.
enum class Utf8Repair {
  kMaximalSubpart,  // one U+FFFD per maximal subpart (Python errors="replace", Rust from_utf8_lossy)
  kPerByte,         // one U+FFFD per invalid byte (sentencepiece)
};

bool utf8_is_valid(std::string_view s);
// Offset of the first byte that does not start a valid, complete character; npos when `s` is valid.
size_t utf8_find_invalid(std::string_view s);
// `s` with every invalid sequence replaced by U+FFFD.
std::string utf8_repair(std::string_view s, Utf8Repair mode);
// Number of bytes at the end of `s` that form a valid but incomplete character (0-3).
size_t utf8_incomplete_tail(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace llamarun
