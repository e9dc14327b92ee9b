// Views over stored weights, used by the op front-ends.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace llamarun {

// A 2-D weight matrix in its stored dtype: `rows` rows of `cols` values, row-major, each row
// dtype_row_bytes(dtype, cols) bytes (cols a multiple of the block size for quantised types).
// A Linear layer's weight is {rows = out_features, cols = in_features}.
struct WeightView {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;

  size_t row_bytes() const { return dtype_row_bytes(dtype, cols); }
  const void* row(int64_t r) const { return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(); }
};

}  // namespace llamarun
