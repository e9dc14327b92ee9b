// AVX-512 / AVX512_BF16 inner loops of the machine-peak probes (see machine_peak.h).
#include <immintrin.h>

#include <cstddef>

#include "backends/cpu/machine_peak.h"

// GCC 12 warns falsely about the undefined-vector idiom inside some AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llamarun::cpu {

float read_sum_avx512(const float* p, size_t n) {
  __m512 s[8];
  for (auto& v : s) v = _mm512_setzero_ps();
  for (size_t i = 0; i + 128 <= n; i += 128)
    for (int j = 0; j < 8; ++j) s[j] = _mm512_add_ps(s[j], _mm512_load_ps(p + i + 16 * j));
  for (int j = 1; j < 8; ++j) s[0] = _mm512_add_ps(s[0], s[j]);
  return _mm512_cvtss_f32(s[0]) + _mm512_cvtss_f32(_mm512_shuffle_f32x4(s[0], s[0], 0x55));
}

float fma_loop_avx512(long iters, double* flops) {
  __m512 a[12];
  for (int j = 0; j < 12; ++j) a[j] = _mm512_set1_ps(float(j) * 0.01f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
    for (int j = 0; j < 12; ++j) a[j] = _mm512_fmadd_ps(a[j], m, c);
    __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]));
  }
  *flops = double(iters) * 12 * 16 * 2;
  for (int j = 1; j < 12; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  return _mm512_cvtss_f32(a[0]);
}

// vdpbf16ps: per f32 lane 2 bf16 products added to the accumulator = 4 flops; 16 lanes.
float dpbf16_loop_avx512(long iters, double* flops) {
  __m512 a[12];
  for (int j = 0; j < 12; ++j) a[j] = _mm512_set1_ps(float(j) * 0.01f);
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long i = 0; i < iters; ++i) {
    for (int j = 0; j < 12; ++j) a[j] = _mm512_dpbf16_ps(a[j], x, y);
    __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]));
  }
  *flops = double(iters) * 12 * 16 * 4;
  for (int j = 1; j < 12; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  return _mm512_cvtss_f32(a[0]);
}

}  // namespace llamarun::cpu
