// AVX-512 level dots of the int8-activation path (qdot_simd.inc), built with the AVX-512 flags incl.
// VNNI: 256-bit vpdpbusd for the flat u8 x s8 sums. CPUs at the AVX-512 level without VNNI get the
// AVX2 dots.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "backends/cpu/qdot.h"
#include "core/dequant_ref.h"

// GCC 12 warns falsely about the undefined-vector idiom inside some AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llamarun::cpu {
namespace {
#include "backends/cpu/qdot_simd.inc"
}  // namespace

QDot qdot_avx512(DType w) {
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  if (!vnni) return qdot_avx2(w);
  QDot q = simd_qdot(w);
  q.tile = qtile_avx512(w);
  q.free_tile = free_tile_avx512(w);
  return q;
}

}  // namespace llamarun::cpu
