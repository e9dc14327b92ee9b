#include "backends/cpu/simd_level.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace llamarun::cpu {

const char* simd_level_str(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "scalar";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kAvx512:
      return "avx512";
    case SimdLevel::kAvx512Bf16:
      return "avx512bf16";
  }
  return "?";
}

SimdLevel detected_simd_level() {
  static const SimdLevel level = [] {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return SimdLevel::kScalar;
    // F16C has no __builtin_cpu_supports name in every GCC; every AVX2 CPU made has it.
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
      return SimdLevel::kAvx2;
    if (!__builtin_cpu_supports("avx512bf16")) return SimdLevel::kAvx512;
    return SimdLevel::kAvx512Bf16;
  }();
  return level;
}

SimdLevel simd_level_from_env_value(const char* env_value, SimdLevel detected) {
  if (env_value == nullptr || env_value[0] == '\0') return detected;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512, SimdLevel::kAvx512Bf16}) {
    if (std::strcmp(env_value, simd_level_str(l)) == 0) return int(l) < int(detected) ? l : detected;
  }
  fail("environment variable LLAMARUN_SIMD='", env_value,
       "' is not a SIMD level; expected one of scalar, avx2, avx512, avx512bf16");
}

SimdLevel active_simd_level() {
  static const SimdLevel level =
      simd_level_from_env_value(std::getenv("LLAMARUN_SIMD"), detected_simd_level());
  return level;
}

}  // namespace llamarun::cpu
