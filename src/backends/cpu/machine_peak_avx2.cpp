// AVX2 inner loops of the machine-peak probes (see machine_peak.h).
#include <immintrin.h>

#include <cstddef>

#include "backends/cpu/machine_peak.h"

namespace llamarun::cpu {

float read_sum_avx2(const float* p, size_t n) {
  __m256 s[8];
  for (auto& v : s) v = _mm256_setzero_ps();
  for (size_t i = 0; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; ++j) s[j] = _mm256_add_ps(s[j], _mm256_load_ps(p + i + 8 * j));
  for (int j = 1; j < 8; ++j) s[0] = _mm256_add_ps(s[0], s[j]);
  alignas(32) float t[8];
  _mm256_store_ps(t, s[0]);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// 12 independent chains (FMA latency 4-5 cycles x 2 ports needs >= 10).
float fma_loop_avx2(long iters, double* flops) {
  __m256 a[12];
  for (int j = 0; j < 12; ++j) a[j] = _mm256_set1_ps(float(j) * 0.01f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
    for (int j = 0; j < 12; ++j) a[j] = _mm256_fmadd_ps(a[j], m, c);
    __asm__ volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(a[4]), "+x"(a[5]));
  }
  *flops = double(iters) * 12 * 8 * 2;
  for (int j = 1; j < 12; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  return _mm256_cvtss_f32(a[0]);
}

}  // namespace llamarun::cpu
