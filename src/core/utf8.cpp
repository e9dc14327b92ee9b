#include "core/utf8.h"

namespace llamarun {

Utf8Scan utf8_scan(const uint8_t* p, size_t n) {
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return {Utf8Status::kValid, 1, b0};
  // Table 3-7 of the Unicode standard: the allowed range of the second byte depends on the first.
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Status::kInvalid, 1, 0};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) return {Utf8Status::kTruncated, n, 0};
    const uint8_t b = p[i];
    if (b < lo || b > hi) return {Utf8Status::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
    lo = 0x80, hi = 0xBF;
  }
  return {Utf8Status::kValid, need, cp};
}

size_t utf8_find_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    Utf8Scan sc = utf8_scan(p + i, s.size() - i);
    if (sc.status != Utf8Status::kValid) return i;
    i += sc.len;
  }
  return std::string_view::npos;
}

bool utf8_is_valid(std::string_view s) { return utf8_find_invalid(s) == std::string_view::npos; }

std::string utf8_repair(std::string_view s, Utf8Repair mode) {
  std::string out;
  out.reserve(s.size() + 8);
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    Utf8Scan sc = utf8_scan(p + i, s.size() - i);
    if (sc.status == Utf8Status::kValid) {
      out.append(s.data() + i, sc.len);
      i += sc.len;
    } else {
      out += kReplacementChar;
      i += mode == Utf8Repair::kPerByte ? 1 : sc.len;
    }
  }
  return out;
}

size_t utf8_incomplete_tail(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  // A character is at most 4 bytes: only the last 3 bytes can start an incomplete one.
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const size_t start = s.size() - k;
    if ((p[start] & 0xC0) == 0x80) continue;  // continuation byte: look further back
    Utf8Scan sc = utf8_scan(p + start, k);
    return sc.status == Utf8Status::kTruncated ? k : 0;
  }
  return 0;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace llamarun
