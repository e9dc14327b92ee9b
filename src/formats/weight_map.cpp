#include "formats/weight_map.h"

#include "core/error.h"

namespace llamarun {

const TensorInfo& WeightMap::get(const std::string& name) const {
  auto* t = find(name);
  if (!t) {
    std::string where = files.empty() ? std::string("model") : files.front()->path();
    fail(where, ": tensor '", name, "' is missing");
  }
  return *t;
}

size_t WeightMap::total_bytes() const {
  size_t n = 0;
  for (auto& [_, t] : tensors) n += t.nbytes;
  return n;
}

}  // namespace llamarun
