#include "ops/vector_ops.h"

#include "backends/cpu/kernels.h"

namespace llamarun {

float dot_f32(const float* a, const float* b, int64_t n) {
  return n > 0 ? cpu::active_kernels().dot(a, b, n) : 0.f;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  if (n > 0) cpu::active_kernels().axpy(a, x, y, n);
}

}  // namespace llamarun
