// JSON text as the server writes it (responses, SSE events, logs).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace llamarun::server {

// Compact JSON, invalid UTF-8 replaced by U+FFFD, and the three characters JSON leaves raw but line
// splitters take for line ends escaped (U+0085, U+2028, U+2029: Python's str.splitlines, which httpx's
// iter_lines follows, splits on them): one SSE event stays one line for every client, whatever text a
// model generates.
std::string json_text(const nlohmann::json& j);

}  // namespace llamarun::server
