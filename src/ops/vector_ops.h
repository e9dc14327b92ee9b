// Vector primitives for attention (scores q.k, weighted sum of values).
#pragma once

#include <cstdint>

namespace llamarun {

// sum_i a[i] * b[i], i < n (f32 accumulation, several partial sums).
float dot_f32(const float* a, const float* b, int64_t n);

// y[i] += a * x[i], i < n.
void axpy_f32(float a, const float* x, float* y, int64_t n);

// R query rows (q [R][d]) over a run of n keys / values of d floats each, one after another:
// s[r * lds + j] = scale * dot(q[r], k[j]) and out[r] += sum_j p[r * ldp + j] * v[j] (backends/cpu/kernels.h:
// each result independent of R and of the run's length).
void dot_rows_f32(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                  int64_t lds);
void axpy_rows_f32(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n, float* out);

// s[j] = exp(s[j] - max) / sum over j < n, in place (each value depends only on the row and n).
void softmax_f32(float* s, int64_t n);

}  // namespace llamarun
