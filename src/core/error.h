// Errors: llamarun reports failures as llamarun::Error (an exception carrying a message that names
// what is wrong and where: file, tensor, key, value). Library code never calls exit()/abort();
// the command line and the server catch Error at their boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace llamarun {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Throws llamarun::Error with the arguments streamed together.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

#define LLAMARUN_CHECK(cond, ...)               \
  do {                                          \
    if (!(cond)) ::llamarun::fail(__VA_ARGS__); \
  } while (0)

}  // namespace llamarun
