// Portable matmul (no SIMD intrinsics): dequantise each weight row once into a per-thread buffer,
// then dot it against every activation row. Used on CPUs without AVX2.
#include <omp.h>

#include "backends/cpu/kernels.h"
#include "backends/cpu/scratch.h"

namespace llamarun::cpu {

void matmul_scalar(const MatmulArgs& a) {
  const int64_t N = a.N, K = a.K, M = a.M;
  const int nthreads = omp_get_max_threads();
  // nthreads rows of K floats, taken by the calling thread so allocation errors surface here.
  float* rows =
      static_cast<float*>(thread_scratch(kScratchRow, size_t(nthreads) * size_t(K) * sizeof(float)));
#pragma omp parallel for num_threads(nthreads) schedule(static) if (N * K * M >= (1 << 18))
  for (int64_t n = 0; n < N; ++n) {
    float* wrow = rows + size_t(omp_get_thread_num()) * size_t(K);
    dequantize_row(a.dtype, a.w + size_t(n) * a.w_row_bytes, wrow, K);
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = a.x + m * K;
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        s0 += wrow[k] * xr[k];
        s1 += wrow[k + 1] * xr[k + 1];
        s2 += wrow[k + 2] * xr[k + 2];
        s3 += wrow[k + 3] * xr[k + 3];
      }
      for (; k < K; ++k) s0 += wrow[k] * xr[k];
      a.y[m * N + n] = (s0 + s1) + (s2 + s3);
    }
  }
}

}  // namespace llamarun::cpu
