// AVX2 inner loops of the machine-peak probes (see machine_peak.h).
#include <immintrin.h>

#include <cstddef>

#include "backends/cpu/machine_peak.h"

namespace llamarun::cpu {

// Sums n floats (n a multiple of 64) as 4 interleaved sequential streams (the quarters of the
// range), like a GEMV reading 4 weight rows at once: several streams keep more DRAM requests in
// flight than one. 8 independent accumulators.
float read_sum_avx2(const float* p, size_t n) {
  const size_t q = n / 4 / 64 * 64;
  const float* st[4] = {p, p + q, p + 2 * q, p + 3 * q};
  __m256 s[8];
  for (auto& v : s) v = _mm256_setzero_ps();
  for (size_t i = 0; i < q; i += 16) {
    for (int j = 0; j < 4; ++j) {
      // Into L2, 16 KiB ahead, as the GEMV kernels do (past the end is harmless for a prefetch).
      _mm_prefetch(reinterpret_cast<const char*>(st[j] + i) + 16384, _MM_HINT_T1);
      s[2 * j] = _mm256_add_ps(s[2 * j], _mm256_load_ps(st[j] + i));
      s[2 * j + 1] = _mm256_add_ps(s[2 * j + 1], _mm256_load_ps(st[j] + i + 8));
    }
  }
  for (size_t i = 4 * q; i < n; i += 8) s[0] = _mm256_add_ps(s[0], _mm256_load_ps(p + i));
  for (int j = 1; j < 8; ++j) s[0] = _mm256_add_ps(s[0], s[j]);
  alignas(32) float t[8];
  _mm256_store_ps(t, s[0]);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// 12 independent chains in named registers (FMA latency 4-5 cycles x 2 pipes needs >= 10). The
// chains cannot be folded (no fast-math), and the result is returned, so nothing is optimised away.
float fma_loop_avx2(long iters, double* flops) {
  __m256 a0 = _mm256_set1_ps(0 * 0.01f);
  __m256 a1 = _mm256_set1_ps(1 * 0.01f);
  __m256 a2 = _mm256_set1_ps(2 * 0.01f);
  __m256 a3 = _mm256_set1_ps(3 * 0.01f);
  __m256 a4 = _mm256_set1_ps(4 * 0.01f);
  __m256 a5 = _mm256_set1_ps(5 * 0.01f);
  __m256 a6 = _mm256_set1_ps(6 * 0.01f);
  __m256 a7 = _mm256_set1_ps(7 * 0.01f);
  __m256 a8 = _mm256_set1_ps(8 * 0.01f);
  __m256 a9 = _mm256_set1_ps(9 * 0.01f);
  __m256 a10 = _mm256_set1_ps(10 * 0.01f);
  __m256 a11 = _mm256_set1_ps(11 * 0.01f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
    a0 = _mm256_fmadd_ps(a0, m, c);
    a1 = _mm256_fmadd_ps(a1, m, c);
    a2 = _mm256_fmadd_ps(a2, m, c);
    a3 = _mm256_fmadd_ps(a3, m, c);
    a4 = _mm256_fmadd_ps(a4, m, c);
    a5 = _mm256_fmadd_ps(a5, m, c);
    a6 = _mm256_fmadd_ps(a6, m, c);
    a7 = _mm256_fmadd_ps(a7, m, c);
    a8 = _mm256_fmadd_ps(a8, m, c);
    a9 = _mm256_fmadd_ps(a9, m, c);
    a10 = _mm256_fmadd_ps(a10, m, c);
    a11 = _mm256_fmadd_ps(a11, m, c);
  }
  *flops = double(iters) * 12 * 8 * 2;
  a0 = _mm256_add_ps(a0, a1);
  a0 = _mm256_add_ps(a0, a2);
  a0 = _mm256_add_ps(a0, a3);
  a0 = _mm256_add_ps(a0, a4);
  a0 = _mm256_add_ps(a0, a5);
  a0 = _mm256_add_ps(a0, a6);
  a0 = _mm256_add_ps(a0, a7);
  a0 = _mm256_add_ps(a0, a8);
  a0 = _mm256_add_ps(a0, a9);
  a0 = _mm256_add_ps(a0, a10);
  a0 = _mm256_add_ps(a0, a11);
  return _mm256_cvtss_f32(a0);
}

}  // namespace llamarun::cpu
