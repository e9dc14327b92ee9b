// SIMD levels of the CPU backend, detected once at run time (cpuid via __builtin_cpu_supports).
#pragma once

namespace llamarun::cpu {

// Ordered: each level implies the ones below it.
//   kAvx2:       AVX2 + FMA + F16C
//   kAvx512:     kAvx2 + AVX-512 F/BW/VL/DQ
//   kAvx512Bf16: kAvx512 + AVX512_BF16 (vdpbf16ps)
enum class SimdLevel : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// "scalar", "avx2", "avx512", "avx512bf16".
const char* simd_level_str(SimdLevel level);

// The best level this CPU (and OS) supports.
SimdLevel detected_simd_level();

// `env_value` is the content of LLAMARUN_SIMD (nullptr or "" = not set). Returns min(requested,
// detected); throws llamarun::Error naming the variable and the value if it is not a level name.
SimdLevel simd_level_from_env_value(const char* env_value, SimdLevel detected);

// detected_simd_level() lowered by LLAMARUN_SIMD, read once on first use.
SimdLevel active_simd_level();

}  // namespace llamarun::cpu
