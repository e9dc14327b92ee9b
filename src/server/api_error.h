// An error answered to an HTTP client: status code plus the OpenAI-style body
// {"error": {"message", "type", "param", "code"}}. Thrown by request parsing; caught at the route.
#pragma once

#include <stdexcept>
#include <string>

namespace llamarun::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string type = "")
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)) {
    if (this->type.empty()) this->type = default_type(status);
  }
  int status;
  std::string param;      // the offending request field, "" when none
  std::string type;       // "invalid_request_error", "authentication_error", ...
  int retry_after_s = 0;  // > 0: send a Retry-After header (429, 503)

  static std::string default_type(int status) {
    switch (status) {
      case 401:
        return "authentication_error";
      case 404:
        return "not_found_error";
      case 413:
        return "request_too_large";
      case 429:
        return "rate_limit_error";
      case 503:
        return "service_unavailable";
      default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
  }
};

// The JSON body of an error response.
std::string error_body(int status, const std::string& message, const std::string& param = "",
                       const std::string& type = "");

}  // namespace llamarun::server
