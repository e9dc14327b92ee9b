// GPT-2's reversible byte <-> unicode mapping used by byte-level BPE: printable bytes ('!'..'~',
// '¡'..'¬', '®'..'ÿ') map to the same code point, the other 68 bytes to U+0100.. in byte order
// (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace llamarun {

// The code point standing for byte `b`.
uint32_t byte_to_unicode(uint8_t b);
// The byte a code point stands for, or -1 if it is not in the mapping.
int unicode_to_byte(uint32_t cp);
// Bytes -> their mapped UTF-8 string ("a b" -> "aĠb").
std::string bytes_to_byte_level(std::string_view bytes);
// Mapped string -> bytes; false (and *out unspecified) if a character is not in the mapping or the
// string is not valid UTF-8.
bool byte_level_to_bytes(std::string_view s, std::string* out);

}  // namespace llamarun
