// Vector primitives for attention (scores q.k, weighted sum of values).
#pragma once

#include <cstdint>

namespace llamarun {

// sum_i a[i] * b[i], i < n (f32 accumulation, several partial sums).
float dot_f32(const float* a, const float* b, int64_t n);

// y[i] += a * x[i], i < n.
void axpy_f32(float a, const float* x, float* y, int64_t n);

}  // namespace llamarun
