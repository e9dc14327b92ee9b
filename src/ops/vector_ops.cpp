#include "ops/vector_ops.h"

#include "backends/cpu/kernels.h"

namespace llamarun {

float dot_f32(const float* a, const float* b, int64_t n) {
  return n > 0 ? cpu::active_kernels().dot(a, b, n) : 0.f;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  if (n > 0) cpu::active_kernels().axpy(a, x, y, n);
}

void dot_rows_f32(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                  int64_t lds) {
  if (R > 0 && n > 0 && d > 0) cpu::active_kernels().dot_rows(q, R, k, d, n, scale, s, lds);
}

void axpy_rows_f32(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n, float* out) {
  if (R > 0 && n > 0 && d > 0) cpu::active_kernels().axpy_rows(p, ldp, R, v, d, n, out);
}

void softmax_f32(float* s, int64_t n) {
  if (n > 0) cpu::active_kernels().softmax(s, n);
}

}  // namespace llamarun
