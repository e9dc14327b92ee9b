#include "tokenizer/byte_level.h"

#include <array>

#include "core/utf8.h"

namespace llamarun {
namespace {

struct Tables {
  std::array<uint32_t, 256> to_cp;
  std::array<int16_t, 512> to_byte;  // every mapped code point is < 0x144
  Tables() {
    to_byte.fill(-1);
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : 256 + extra++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;  // immutable after construction
  return t;
}

}  // namespace

uint32_t byte_to_unicode(uint8_t b) { return tables().to_cp[b]; }

int unicode_to_byte(uint32_t cp) { return cp < 512 ? tables().to_byte[cp] : -1; }

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, byte_to_unicode(static_cast<uint8_t>(c)));
  return out;
}

bool byte_level_to_bytes(std::string_view s, std::string* out) {
  out->clear();
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const Utf8Scan sc = utf8_scan(p + i, s.size() - i);
    if (sc.status != Utf8Status::kValid) return false;
    const int b = unicode_to_byte(sc.cp);
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
    i += sc.len;
  }
  return true;
}

}  // namespace llamarun
