// An error answered to an HTTP client: status code plus the OpenAI-style body
// {"error": {"message", "type", "param", "code"}}. Thrown by request parsing; caught at the route.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace llamarun::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string type = "")
      : std::runtime_error(message),
        message(message),
        status(status),
        param(std::move(param)),
        type(std::move(type)) {
    if (this->type.empty()) this->type = default_type(status);
  }
  std::string message;  // the whole message (what() is a C string: it would end at a NUL byte)
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

// Client-supplied text for quoting in a message: at most max_bytes of it (then "..."), with
// control characters, backslashes and bytes that are not valid UTF-8 written as \xNN, so a NUL or
// a newline in a path, method or model name is shown rather than cutting the message.
std::string quote_text(std::string_view s, size_t max_bytes = 100);

// The JSON body of an error response.
std::string error_body(int status, const std::string& message, const std::string& param = "",
                       const std::string& type = "");

}  // namespace llamarun::server
