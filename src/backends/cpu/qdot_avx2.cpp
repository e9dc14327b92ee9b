// AVX2 dots of the int8-activation path (qdot_simd.inc), built with -mavx2 -mfma -mf16c, and the AVX2
// prefill tile of the 32-value block types (below), which also takes the sub-blocks of IQ4_XS and the
// k-quants but Q2_K.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "backends/cpu/qdot.h"
#include "core/dequant_ref.h"

namespace llamarun::cpu {
namespace {
#include "backends/cpu/q32_lanes.inc"
#include "backends/cpu/qdot_simd.inc"

// ---- Prefill tile of the 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) ----
// kLanes activation rows, one per 32-bit lane, packed per block (PackedLanes, q32_lanes.inc). Each of the
// block's 8 groups of a weight row is broadcast to all lanes and multiplied with vpmaddubsw, so a weight
// block serves 8 activation rows and the f32 step (scales dw * da, one FMA) 8 pairs at once, where the
// one-row dots spend a conversion and an FMA per pair.
//  - Weights of at most 5 bits (Q4_0, Q5_0 as signed values q - 8 / q - 16; Q4_1, Q5_1 as stored): the
//    activations are packed as u8 (a + 128), the weights are the signed operand, and kGroups groups'
//    int16 pair sums add up before one vpmaddwd (|a + 128| <= 255: a group's pair sum is at most
//    2 * 255 * max|w|, so kGroups * that stays below 32768). The + 128 comes off through the start value
//    -128 * sum(w).
//  - Q8_0, IQ4_NL (|w| up to 127): the activations stay signed; |w| times a with w's sign, one vpmaddwd per
//    group (2 * 127 * 127 < 32768).
// The sums are exact integers; the f32 order differs from the one-row dots (QTile::exact false).
constexpr int kLanes = 8;  // activation rows per tile
constexpr int kTN = 4;     // weight rows per tile
using PackedA8 = PackedLanes<kLanes>;
static_assert(sizeof(PackedA8) == 320);

// The 32 weight values of a block in order: signed (Q8_0, IQ4_NL, Q4_0 - 8, Q5_0 - 16) or, for the types
// with a min, as stored.
template <DType T>
LR_INLINE __m256i q32_values(const Q32Block<T>& x) {
  if constexpr (T == DType::Q8_0) {
    return load256(x.qs);
  } else {
    __m256i q = nibbles32(x.qs);
    if constexpr (T == DType::IQ4_NL)
      q = _mm256_shuffle_epi8(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values))), q);
    if constexpr (T == DType::Q5_0 || T == DType::Q5_1) q = _mm256_or_si256(q, fifth_bits(x.qh));
    if constexpr (T == DType::Q4_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    if constexpr (T == DType::Q5_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    return q;
  }
}

template <DType T>
constexpr bool kSmallWeights = T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q5_0 || T == DType::Q5_1;
// Groups whose int16 pair sums may add before vpmaddwd: 2 * 255 * max|w| * kGroups < 32768.
template <DType T>
constexpr int kGroups = T == DType::Q4_0   ? 8
                        : T == DType::Q5_1 ? 2
                                           : 4;

// A tile's kTN weight rows decoded once per matmul (QTile::prep), read by tile_q32_lanes for every group of
// activation rows: per block, per row, the 8 groups of 4 values (signed, or as stored for the types with a
// min), their |w|, the start value -128 * sum(w) (u8 activations), the scale and the min.
struct PrepA2Row {
  int32_t q[8];
  int32_t qa[8];
  int32_t bias;
  float d, m;
  int32_t pad;
};
struct PrepA2Block {
  PrepA2Row r[kTN];
};
static_assert(sizeof(PrepA2Block) == 80 * kTN);

size_t q32_prep_bytes(int64_t K) { return size_t(K / 32) * sizeof(PrepA2Block); }

LR_INLINE void prep_row(PrepA2Row& r, __m256i q, float d, float m) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(r.q), q);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(r.qa), _mm256_abs_epi8(q));
  r.bias = -128 * sum_s8(q);
  r.d = d;
  r.m = m;
  r.pad = 0;
}

template <DType T>
void q32_prep(int64_t K, const void* w, size_t wstride, void* prepped) {
  using Block = Q32Block<T>;
  auto* out = static_cast<PrepA2Block*>(prepped);
  for (int n = 0; n < kTN; ++n) {
    const auto* x = reinterpret_cast<const Block*>(row_at(w, wstride, n));
    for (int64_t b = 0; b < K / 32; ++b) {
      if constexpr (T == DType::Q4_1 || T == DType::Q5_1) {
        prep_row(out[b].r[n], q32_values<T>(x[b]), h2f(x[b].d), h2f(x[b].m));
      } else {
        prep_row(out[b].r[n], q32_values<T>(x[b]), h2f(x[b].d), 0.f);
      }
    }
  }
}

// The lanes tile over decoded rows (below, after q32_subblocks.inc). kHalves: the blocks come as PrepQ16Row
// (Q6_K, Q3_K: q32_subblocks.inc), each 16-value half (groups 0-3, 4-7) with its own start value and scale;
// the tile is defined after that file's include.
template <bool kBias, bool kMin, int G, bool kHalves = false>
void tile_q32_lanes(int64_t K, const void* prepped, size_t, const void* packed, size_t, float* out,
                    size_t ostride);

template <DType T>
QTile q32_tile() {
  constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1;
  QTile t{tile_q32_lanes<kSmallWeights<T>, kMin, kGroups<T>>,
          pack_lanes<kLanes, kSmallWeights<T>>,
          packed_lanes_bytes<kLanes>,
          kTN,
          kLanes,
          false};
  t.prep = q32_prep<T>;
  t.prep_bytes = q32_prep_bytes;
  return t;
}

// ---- The same tile for IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K in free order (QDot::free_tile) ----
// Their sub-blocks as 32-value blocks with a float scale and min (q32_subblocks.inc); Q6_K's two 16-value
// halves of a block (Q3_K's too) sum apart (tile_q32_lanes<.., true>).
#include "backends/cpu/q32_subblocks.inc"

// kBias: u8 activations (a + 128) times signed weights of at most 5 bits (6 for the halves), G groups' int16
// pair sums added before one vpmaddwd; otherwise signed activations, |w| times a with w's sign. kMin: + m *
// da * sum(a).
template <bool kBias, bool kMin, int G, bool kHalves>
void tile_q32_lanes(int64_t K, const void* prepped, size_t, const void* packed, size_t, float* out,
                    size_t ostride) {
  static_assert(!kHalves || (kBias && !kMin && 4 % G == 0),
                "halves: u8 activations, no min, G within a half");
  constexpr int H = kHalves ? 2 : 1;
  using Block = std::conditional_t<kHalves, PrepQ16Block<kTN>, PrepA2Block>;
  const auto* wb = static_cast<const Block*>(prepped);
  const auto* p = static_cast<const PackedA8*>(packed);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kTN];
  for (int n = 0; n < kTN; ++n) acc[n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < K / 32; ++b) {
    const auto* r = wb[b].r;
    __m256i s32[H][kTN];
#pragma GCC unroll 4
    for (int n = 0; n < kTN; ++n) {
      if constexpr (kHalves) {
        s32[0][n] = _mm256_set1_epi32(r[n].bias[0]);
        s32[1][n] = _mm256_set1_epi32(r[n].bias[1]);
      } else {
        s32[0][n] = kBias ? _mm256_set1_epi32(r[n].bias) : _mm256_setzero_si256();
      }
    }
    if constexpr (kBias) {
#pragma GCC unroll 8
      for (int g0 = 0; g0 < 8; g0 += G) {
        __m256i s16[kTN];
#pragma GCC unroll 8
        for (int g = g0; g < g0 + G; ++g) {
          const __m256i a = load256(p[b].q[g]);
#pragma GCC unroll 4
          for (int n = 0; n < kTN; ++n) {
            const __m256i prod = _mm256_maddubs_epi16(a, _mm256_set1_epi32(r[n].q[g]));
            s16[n] = g == g0 ? prod : _mm256_add_epi16(s16[n], prod);
          }
        }
        constexpr int kHalfOf = kHalves ? 4 : 8;  // the half g0 is in
#pragma GCC unroll 4
        for (int n = 0; n < kTN; ++n)
          s32[g0 / kHalfOf][n] = _mm256_add_epi32(s32[g0 / kHalfOf][n], _mm256_madd_epi16(s16[n], ones));
      }
    } else {
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m256i a = load256(p[b].q[g]);
#pragma GCC unroll 4
        for (int n = 0; n < kTN; ++n)
          s32[0][n] = _mm256_add_epi32(
              s32[0][n], dot_ss8(_mm256_set1_epi32(r[n].qa[g]), _mm256_set1_epi32(r[n].q[g]), a));
      }
    }
    const __m256 da = _mm256_loadu_ps(p[b].d);
    [[maybe_unused]] __m256 dsum;
    if constexpr (kMin) dsum = _mm256_loadu_ps(p[b].dsum);
#pragma GCC unroll 4
    for (int n = 0; n < kTN; ++n) {
      if constexpr (kHalves) {
        acc[n] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(r[n].d[0]), da), _mm256_cvtepi32_ps(s32[0][n]),
                                 acc[n]);
        acc[n] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(r[n].d[1]), da), _mm256_cvtepi32_ps(s32[1][n]),
                                 acc[n]);
      } else {
        const __m256 sc = _mm256_mul_ps(_mm256_set1_ps(r[n].d), da);
        acc[n] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(s32[0][n]), acc[n]);
        if constexpr (kMin) acc[n] = _mm256_fmadd_ps(_mm256_set1_ps(r[n].m), dsum, acc[n]);
      }
    }
  }
  for (int n = 0; n < kTN; ++n) {
    alignas(32) float o[kLanes];
    _mm256_store_ps(o, acc[n]);
    for (int r = 0; r < kLanes; ++r) out[size_t(r) * ostride + size_t(n)] = o[r];
  }
}

// Q4_K values up to 15 (2 * 255 * 15 * 4 < 32768: 4 groups a vpmaddwd), Q5_K up to 31 (2 groups).
template <bool kBias, bool kMin, int G>
QTile k_free_tile(QPrepFn prep) {
  QTile t{tile_q32_lanes<kBias, kMin, G>,
          pack_lanes_q8k<kLanes, kBias>,
          packed_lanes_bytes<kLanes>,
          kTN,
          kLanes,
          false};
  t.prep = prep;
  t.prep_bytes = q32_prep_bytes;
  return t;
}

QTile qtile_avx2(DType w) {
  switch (w) {
    case DType::Q8_0:
      return q32_tile<DType::Q8_0>();
    case DType::Q4_0:
      return q32_tile<DType::Q4_0>();
    case DType::Q4_1:
      return q32_tile<DType::Q4_1>();
    case DType::Q5_0:
      return q32_tile<DType::Q5_0>();
    case DType::Q5_1:
      return q32_tile<DType::Q5_1>();
    case DType::IQ4_NL:
      return q32_tile<DType::IQ4_NL>();
    default:
      return {};
  }
}

}  // namespace

QTile free_tile_avx2(DType w) {
  switch (w) {
    case DType::IQ4_XS:
      return k_free_tile<false, false, 1>(iq4_xs_prep<PrepA2Block, kTN>);
    case DType::Q4_K:
      return k_free_tile<true, true, 4>(k45_prep<PrepA2Block, kTN, BlockQ4_K>);
    case DType::Q5_K:
      return k_free_tile<true, true, 2>(k45_prep<PrepA2Block, kTN, BlockQ5_K>);
    case DType::Q6_K:
    case DType::Q3_K: {
      // Q3_K's values -4..3 fit the same 2 groups a vpmaddwd as Q6_K's.
      QTile t = k_free_tile<true, false, 2>(w == DType::Q6_K ? q16_prep<kTN, BlockQ6_K, q6k_sub>
                                                             : q16_prep<kTN, BlockQ3_K, q3k_sub>);
      t.fn = tile_q32_lanes<true, false, 2, true>;
      t.prep_bytes = q16_prep_bytes<kTN>;
      return t;
    }
    default:
      return {};
  }
}

QDot qdot_avx2(DType w) {
  QDot q = simd_qdot(w);
  if (q.rows) {
    q.tile = qtile_avx2(w);
    q.free_tile = free_tile_avx2(w);
  }
  return q;
}

}  // namespace llamarun::cpu
