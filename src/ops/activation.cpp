#include "ops/activation.h"

#include "backends/cpu/kernels.h"

namespace llamarun {

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  if (n > 0) cpu::active_kernels().silu_mul(gate, up, out, n);
}

}  // namespace llamarun
