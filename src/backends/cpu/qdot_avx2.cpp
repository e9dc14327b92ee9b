// AVX2 dots of the int8-activation path (qdot_simd.inc), built with -mavx2 -mfma -mf16c.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "backends/cpu/qdot.h"
#include "core/dequant_ref.h"

namespace llamarun::cpu {
namespace {
#include "backends/cpu/qdot_simd.inc"
}  // namespace

QDot qdot_avx2(DType w) { return simd_qdot(w); }

}  // namespace llamarun::cpu
