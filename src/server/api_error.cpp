#include "server/api_error.h"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/utf8.h"
#include "server/json_text.h"

namespace llamarun::server {

std::string json_text(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // The dump is ASCII outside strings, so these byte sequences can only be characters inside strings.
  static const struct {
    const char* utf8;
    const char* escape;
  } kLineBreaks[] = {{"\xC2\x85", "\\u0085"}, {"\xE2\x80\xA8", "\\u2028"}, {"\xE2\x80\xA9", "\\u2029"}};
  for (const auto& b : kLineBreaks) {
    const std::string from = b.utf8;
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + 6))
      s.replace(at, from.size(), b.escape);
  }
  return s;
}

std::string quote_text(std::string_view s, size_t max_bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = std::min(s.size(), max_bytes);
  auto esc = [&](unsigned char c) { out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]}; };
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7F || c == '\\')
        esc(c);
      else
        out += char(c);
      ++i;
      continue;
    }
    // A whole, valid multi-byte sequence (within the quoted part) is kept; anything else escaped.
    const Utf8Scan sc = utf8_scan(p + i, n - i);
    if (sc.status == Utf8Status::kValid) {
      out.append(s.data() + i, sc.len);
      i += sc.len;
    } else {
      esc(c);
      ++i;
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out;
}

std::string error_body(int status, const std::string& message, const std::string& param,
                       const std::string& type) {
  nlohmann::json e{{"message", message},
                   {"type", type.empty() ? ApiError::default_type(status) : type},
                   {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
                   {"code", status}};
  return json_text(nlohmann::json{{"error", e}});
}

}  // namespace llamarun::server
