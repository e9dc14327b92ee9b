// The message of the llamarun::Error that f throws, or "" when it throws none: for tests of error messages.
#pragma once

#include <string>
#include <utility>

#include "core/error.h"

namespace llamarun::testutil {

template <typename F>
std::string error_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace llamarun::testutil
