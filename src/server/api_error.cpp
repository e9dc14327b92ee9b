#include "server/api_error.h"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

namespace llamarun::server {

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
    const int len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    uint32_t cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok && cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF)) {
      out.append(s.data() + i, size_t(len));
      i += size_t(len);
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
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace llamarun::server
