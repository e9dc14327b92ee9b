// AVX-512 / AVX512_BF16 inner loops of the machine-peak probes (see machine_peak.h).
#include <immintrin.h>

#include <cstddef>

#include "backends/cpu/machine_peak.h"

// GCC 12 warns falsely about the undefined-vector idiom inside some AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llamarun::cpu {

// Sums n floats (n a multiple of 64) as 4 interleaved sequential streams (the quarters of the
// range), like a GEMV reading 4 weight rows at once: several streams keep more DRAM requests in
// flight than one. 8 independent accumulators.
float read_sum_avx512(const float* p, size_t n) {
  const size_t q = n / 4 / 64 * 64;
  const float* st[4] = {p, p + q, p + 2 * q, p + 3 * q};
  __m512 s[8];
  for (auto& v : s) v = _mm512_setzero_ps();
  for (size_t i = 0; i < q; i += 32) {
    for (int j = 0; j < 4; ++j) {
      // Into L2, 16 KiB ahead, as the GEMV kernels do (past the end is harmless for a prefetch).
      _mm_prefetch(reinterpret_cast<const char*>(st[j] + i) + 16384, _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(st[j] + i) + 16384 + 64, _MM_HINT_T1);
      s[2 * j] = _mm512_add_ps(s[2 * j], _mm512_load_ps(st[j] + i));
      s[2 * j + 1] = _mm512_add_ps(s[2 * j + 1], _mm512_load_ps(st[j] + i + 16));
    }
  }
  for (size_t i = 4 * q; i < n; i += 16) s[0] = _mm512_add_ps(s[0], _mm512_load_ps(p + i));
  for (int j = 1; j < 8; ++j) s[0] = _mm512_add_ps(s[0], s[j]);
  return _mm512_reduce_add_ps(s[0]);
}

// 12 independent chains in named registers (FMA latency 4-5 cycles x 2 pipes needs >= 10). The
// chains cannot be folded (no fast-math), and the result is returned, so nothing is optimised away.
float fma_loop_avx512(long iters, double* flops) {
  __m512 a0 = _mm512_set1_ps(0 * 0.01f);
  __m512 a1 = _mm512_set1_ps(1 * 0.01f);
  __m512 a2 = _mm512_set1_ps(2 * 0.01f);
  __m512 a3 = _mm512_set1_ps(3 * 0.01f);
  __m512 a4 = _mm512_set1_ps(4 * 0.01f);
  __m512 a5 = _mm512_set1_ps(5 * 0.01f);
  __m512 a6 = _mm512_set1_ps(6 * 0.01f);
  __m512 a7 = _mm512_set1_ps(7 * 0.01f);
  __m512 a8 = _mm512_set1_ps(8 * 0.01f);
  __m512 a9 = _mm512_set1_ps(9 * 0.01f);
  __m512 a10 = _mm512_set1_ps(10 * 0.01f);
  __m512 a11 = _mm512_set1_ps(11 * 0.01f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i) {
    a0 = _mm512_fmadd_ps(a0, m, c);
    a1 = _mm512_fmadd_ps(a1, m, c);
    a2 = _mm512_fmadd_ps(a2, m, c);
    a3 = _mm512_fmadd_ps(a3, m, c);
    a4 = _mm512_fmadd_ps(a4, m, c);
    a5 = _mm512_fmadd_ps(a5, m, c);
    a6 = _mm512_fmadd_ps(a6, m, c);
    a7 = _mm512_fmadd_ps(a7, m, c);
    a8 = _mm512_fmadd_ps(a8, m, c);
    a9 = _mm512_fmadd_ps(a9, m, c);
    a10 = _mm512_fmadd_ps(a10, m, c);
    a11 = _mm512_fmadd_ps(a11, m, c);
  }
  *flops = double(iters) * 12 * 16 * 2;
  a0 = _mm512_add_ps(a0, a1);
  a0 = _mm512_add_ps(a0, a2);
  a0 = _mm512_add_ps(a0, a3);
  a0 = _mm512_add_ps(a0, a4);
  a0 = _mm512_add_ps(a0, a5);
  a0 = _mm512_add_ps(a0, a6);
  a0 = _mm512_add_ps(a0, a7);
  a0 = _mm512_add_ps(a0, a8);
  a0 = _mm512_add_ps(a0, a9);
  a0 = _mm512_add_ps(a0, a10);
  a0 = _mm512_add_ps(a0, a11);
  return _mm512_cvtss_f32(a0);
}

// vdpbf16ps: per f32 lane 2 bf16 products added to the accumulator = 4 flops; 16 lanes.
float dpbf16_loop_avx512(long iters, double* flops) {
  __m512 a0 = _mm512_set1_ps(0 * 0.01f);
  __m512 a1 = _mm512_set1_ps(1 * 0.01f);
  __m512 a2 = _mm512_set1_ps(2 * 0.01f);
  __m512 a3 = _mm512_set1_ps(3 * 0.01f);
  __m512 a4 = _mm512_set1_ps(4 * 0.01f);
  __m512 a5 = _mm512_set1_ps(5 * 0.01f);
  __m512 a6 = _mm512_set1_ps(6 * 0.01f);
  __m512 a7 = _mm512_set1_ps(7 * 0.01f);
  __m512 a8 = _mm512_set1_ps(8 * 0.01f);
  __m512 a9 = _mm512_set1_ps(9 * 0.01f);
  __m512 a10 = _mm512_set1_ps(10 * 0.01f);
  __m512 a11 = _mm512_set1_ps(11 * 0.01f);
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long i = 0; i < iters; ++i) {
    a0 = _mm512_dpbf16_ps(a0, x, y);
    a1 = _mm512_dpbf16_ps(a1, x, y);
    a2 = _mm512_dpbf16_ps(a2, x, y);
    a3 = _mm512_dpbf16_ps(a3, x, y);
    a4 = _mm512_dpbf16_ps(a4, x, y);
    a5 = _mm512_dpbf16_ps(a5, x, y);
    a6 = _mm512_dpbf16_ps(a6, x, y);
    a7 = _mm512_dpbf16_ps(a7, x, y);
    a8 = _mm512_dpbf16_ps(a8, x, y);
    a9 = _mm512_dpbf16_ps(a9, x, y);
    a10 = _mm512_dpbf16_ps(a10, x, y);
    a11 = _mm512_dpbf16_ps(a11, x, y);
  }
  *flops = double(iters) * 12 * 16 * 4;
  a0 = _mm512_add_ps(a0, a1);
  a0 = _mm512_add_ps(a0, a2);
  a0 = _mm512_add_ps(a0, a3);
  a0 = _mm512_add_ps(a0, a4);
  a0 = _mm512_add_ps(a0, a5);
  a0 = _mm512_add_ps(a0, a6);
  a0 = _mm512_add_ps(a0, a7);
  a0 = _mm512_add_ps(a0, a8);
  a0 = _mm512_add_ps(a0, a9);
  a0 = _mm512_add_ps(a0, a10);
  a0 = _mm512_add_ps(a0, a11);
  return _mm512_cvtss_f32(a0);
}

}  // namespace llamarun::cpu
