#include "ops/softmax.h"

#include "backends/cpu/kernels.h"

namespace llamarun {

void softmax_inplace(float* x, int64_t n) {
  if (n > 0) cpu::active_kernels().softmax(x, n);
}

}  // namespace llamarun
