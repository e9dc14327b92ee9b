// The one monotonic clock of llamarun: seconds since an arbitrary start (steady_clock), for timing steps,
// requests, deadlines and benchmarks.
#pragma once

#include <chrono>

namespace llamarun {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace llamarun
