#include "server/api_error.h"

#include <nlohmann/json.hpp>

namespace llamarun::server {

std::string error_body(int status, const std::string& message, const std::string& param,
                       const std::string& type) {
  nlohmann::json e{{"message", message},
                   {"type", type.empty() ? ApiError::default_type(status) : type},
                   {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
                   {"code", status}};
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace llamarun::server
