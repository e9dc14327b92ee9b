#include "backends/cpu/kernels.h"

#include "core/error.h"

namespace llamarun::cpu {
namespace {

// The small vector ops use AVX2 at the AVX-512 levels too: they are bound by memory or latency,
// and on Zen 4 a 512-bit op costs two 256-bit ones.
const CpuKernels kTables[] = {
    {SimdLevel::kScalar, false, matmul_scalar, silu_mul_scalar, dot_scalar, axpy_scalar, dot_rows_scalar,
     axpy_rows_scalar, softmax_scalar, qdot_scalar},
    {SimdLevel::kAvx2, false, matmul_avx2, silu_mul_avx2, dot_avx2, axpy_avx2, dot_rows_avx2, axpy_rows_avx2,
     softmax_avx2, qdot_avx2},
    {SimdLevel::kAvx512, false, matmul_avx512, silu_mul_avx2, dot_avx2, axpy_avx2, dot_rows_avx2,
     axpy_rows_avx2, softmax_avx2, qdot_avx512},
    {SimdLevel::kAvx512Bf16, true, matmul_avx512, silu_mul_avx2, dot_avx2, axpy_avx2, dot_rows_avx2,
     axpy_rows_avx2, softmax_avx2, qdot_avx512},
};

}  // namespace

const CpuKernels& kernels_for(SimdLevel level) {
  LLAMARUN_CHECK(int(level) <= int(detected_simd_level()), "SIMD level ", simd_level_str(level),
                 " requested but this CPU supports only up to ", simd_level_str(detected_simd_level()));
  return kTables[int(level)];
}

const CpuKernels& active_kernels() {
  static const CpuKernels& table = kernels_for(active_simd_level());
  return table;
}

}  // namespace llamarun::cpu
