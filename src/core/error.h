// Errors: llamarun reports failures as llamarun::Error (an exception carrying a message that names
// what is wrong and where: file, tensor, key, value). Library code never calls exit()/abort();
// the command line and the server catch Error at their boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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

// A tensor shape as messages print it: "[4096, 11008]".
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

#define LLAMARUN_CHECK(cond, ...)               \
  do {                                          \
    if (!(cond)) ::llamarun::fail(__VA_ARGS__); \
  } while (0)

}  // namespace llamarun
