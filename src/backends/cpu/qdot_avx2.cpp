// AVX2 dots of the int8-activation path (qdot_simd.inc), built with -mavx2 -mfma -mf16c, and the AVX2
// prefill tiles of the 32-value block types and of Q4_K (below).
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

template <DType T>
void tile_q32_lanes(int64_t K, const void* w, size_t wstride, const void* packed, size_t, float* out,
                    size_t ostride) {
  using Block = Q32Block<T>;
  constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1;
  constexpr bool kBias = kSmallWeights<T>;
  const Block* x[kTN];
  for (int n = 0; n < kTN; ++n)
    x[n] = reinterpret_cast<const Block*>(static_cast<const uint8_t*>(w) + n * wstride);
  const auto* p = static_cast<const PackedA8*>(packed);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kTN];
  for (int n = 0; n < kTN; ++n) acc[n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < K / 32; ++b) {
    alignas(32) int32_t wq[kTN][8];
    alignas(32) int32_t wabs[kTN][kBias ? 1 : 8];  // signed weights: |w|, the sign going onto a
    __m256i s32[kTN];
#pragma GCC unroll 4
    for (int n = 0; n < kTN; ++n) {
      const __m256i q = q32_values<T>(x[n][b]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(wq[n]), q);
      if constexpr (!kBias) _mm256_store_si256(reinterpret_cast<__m256i*>(wabs[n]), _mm256_abs_epi8(q));
      s32[n] = kBias ? _mm256_set1_epi32(-128 * sum_s8(q)) : _mm256_setzero_si256();
    }
    // The groups are broadcast from memory (a load each); without the barrier GCC keeps wq in registers
    // and extracts each group with two shuffles, and the tile runs out of registers.
    asm volatile("" ::: "memory");
    if constexpr (kBias) {
      constexpr int G = kGroups<T>;
#pragma GCC unroll 8
      for (int g0 = 0; g0 < 8; g0 += G) {
        __m256i s16[kTN];
#pragma GCC unroll 8
        for (int g = g0; g < g0 + G; ++g) {
          const __m256i a = load256(p[b].q[g]);
#pragma GCC unroll 4
          for (int n = 0; n < kTN; ++n) {
            const __m256i prod = _mm256_maddubs_epi16(a, _mm256_set1_epi32(wq[n][g]));
            s16[n] = g == g0 ? prod : _mm256_add_epi16(s16[n], prod);
          }
        }
#pragma GCC unroll 4
        for (int n = 0; n < kTN; ++n) s32[n] = _mm256_add_epi32(s32[n], _mm256_madd_epi16(s16[n], ones));
      }
    } else {
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m256i a = load256(p[b].q[g]);
#pragma GCC unroll 4
        for (int n = 0; n < kTN; ++n)
          s32[n] = _mm256_add_epi32(s32[n],
                                    dot_ss8(_mm256_set1_epi32(wabs[n][g]), _mm256_set1_epi32(wq[n][g]), a));
      }
    }
    const __m256 da = _mm256_loadu_ps(p[b].d);
    [[maybe_unused]] __m256 dsum;
    if constexpr (kMin) dsum = _mm256_loadu_ps(p[b].dsum);
#pragma GCC unroll 4
    for (int n = 0; n < kTN; ++n) {
      const __m256 sc = _mm256_mul_ps(_mm256_set1_ps(h2f(x[n][b].d)), da);
      acc[n] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(s32[n]), acc[n]);
      if constexpr (kMin) acc[n] = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[n][b].m)), dsum, acc[n]);
    }
  }
  for (int n = 0; n < kTN; ++n) {
    alignas(32) float o[kLanes];
    _mm256_store_ps(o, acc[n]);
    for (int r = 0; r < kLanes; ++r) out[size_t(r) * ostride + size_t(n)] = o[r];
  }
}

template <DType T>
QTile q32_tile() {
  return {tile_q32_lanes<T>,
          pack_lanes<kLanes, kSmallWeights<T>>,
          packed_lanes_bytes<kLanes>,
          kTN,
          kLanes,
          false};
}

// ---- Prefill tile of Q4_K: 8 weight rows in the 32-bit lanes, kQ4kM activation rows ----
// Per super-block, the 8 rows' nibbles are transposed once into wv[sub-block j][group g] (lane r: values
// 4g..4g+3 of row r's sub-block j as 4 bytes); each activation row then broadcasts its 4 values of a group to
// all lanes, so one vpmaddubsw multiplies 4 values of 8 weight rows, the 8 groups of a sub-block add up in
// int16 (each pair sum at most 2 * 15 * 127, eight of them 30,480), and one vpmaddwd applies the 8 rows'
// scales of the sub-block. The row kernel spends one vpmaddwd per vpmaddubsw. The mins: per super-block
// and activation row, sum over j of min[r][j] * (bsums[2j] + bsums[2j + 1]) through 4 vpmaddwd. Integer
// sums exact; the f32 order differs from the one-row dot (QTile::exact false).
constexpr int kQ4kN = 8;   // weight rows per tile
constexpr int kQ4kM = 16;  // activation rows per tile (4 per pass)
static_assert(kQ4kN == 8, "one weight row per 32-bit lane of a 256-bit register");

// Transposes the 8 x 8 matrix of 32-bit elements r[0..7] in place: lane i of r[g] becomes lane g of r[i].
LR_INLINE void transpose8x32(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

void tile_q4_k_lanes(int64_t K, const void* w, size_t wstride, const void* act, size_t astride, float* out,
                     size_t ostride) {
  const BlockQ4_K* x[kQ4kN];
  for (int n = 0; n < kQ4kN; ++n) x[n] = reinterpret_cast<const BlockQ4_K*>(row_at(w, wstride, n));
  alignas(32) __m256i wv[8][8];   // [sub-block][group], lane r = row r
  alignas(32) int32_t scl[8][8];  // [sub-block][row]: the scale in both int16 halves
  alignas(32) int32_t mnp[4][8];  // [sub-block pair][row]: mins of sub-blocks 2p, 2p + 1 as int16
  alignas(32) float acc[kQ4kM][8], accm[kQ4kM][8];
  for (int m = 0; m < kQ4kM; ++m)
    for (int r = 0; r < 8; ++r) acc[m][r] = accm[m][r] = 0.f;
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int64_t i = 0; i < K / 256; ++i) {
    alignas(16) uint16_t dh[8], dmh[8];
    for (int r = 0; r < 8; ++r) {
      const BlockQ4_K& b = x[r][i];
      uint8_t sm[16];
      k4_scales_mins(b.scales, sm);
      for (int j = 0; j < 8; ++j) scl[j][r] = int32_t(uint32_t(sm[j]) * 0x10001u);
      for (int p = 0; p < 4; ++p)
        mnp[p][r] = int32_t(uint32_t(sm[8 + 2 * p]) | (uint32_t(sm[9 + 2 * p]) << 16));
      dh[r] = b.d;
      dmh[r] = b.dmin;
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
    const __m256 dmw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dmh)));
    for (int c = 0; c < 4; ++c) {  // 64 values: sub-blocks 2c (low nibbles) and 2c + 1 (high)
      __m256i q[8];
      for (int r = 0; r < 8; ++r) q[r] = load256(x[r][i].qs + 32 * c);
      transpose8x32(q);  // q[g] lane r: bytes 4g..4g+3 of row r's 32
      for (int g = 0; g < 8; ++g) {
        wv[2 * c][g] = _mm256_and_si256(q[g], m4);
        wv[2 * c + 1][g] = _mm256_and_si256(_mm256_srli_epi16(q[g], 4), m4);
      }
    }
    asm volatile("" ::: "memory");  // wv is read back from memory (16 registers cannot hold it)
    for (int m0 = 0; m0 < kQ4kM; m0 += 4) {
      const BlockQ8_K* y[4];
      for (int k = 0; k < 4; ++k) y[k] = reinterpret_cast<const BlockQ8_K*>(row_at(act, astride, m0 + k)) + i;
      __m256i sumi[4];
      for (int k = 0; k < 4; ++k) sumi[k] = _mm256_setzero_si256();
#pragma GCC unroll 1
      for (int j = 0; j < 8; ++j) {
        __m256i s16[4];
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
          const __m256i wg = _mm256_load_si256(&wv[j][g]);
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) {
            int32_t a4;
            std::memcpy(&a4, y[k]->qs + 32 * j + 4 * g, 4);
            const __m256i p = _mm256_maddubs_epi16(wg, _mm256_set1_epi32(a4));
            s16[k] = g == 0 ? p : _mm256_add_epi16(s16[k], p);
          }
        }
        const __m256i sv = _mm256_load_si256(reinterpret_cast<const __m256i*>(scl[j]));
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(s16[k], sv));
      }
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        // bsums pairs: hadd gives [b0+b1, b2+b3, b4+b5, b6+b7] twice in the low lane, [b8+b9, ...] in the
        // high one: int32 element p (p < 2) holds sub-blocks 2p, 2p + 1, element p + 2 (p >= 2) likewise.
        const __m256i bs = load256(y[k]->bsums);
        const __m256i bsub = _mm256_hadd_epi16(bs, bs);
        __m256i summ = _mm256_setzero_si256();
        for (int p = 0; p < 4; ++p) {
          const __m256i b2 = _mm256_permutevar8x32_epi32(bsub, _mm256_set1_epi32(p < 2 ? p : p + 2));
          summ = _mm256_add_epi32(
              summ, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(mnp[p])), b2));
        }
        const __m256 da = _mm256_set1_ps(y[k]->d);
        float* a = acc[m0 + k];
        float* am = accm[m0 + k];
        _mm256_store_ps(
            a, _mm256_fmadd_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(sumi[k]), _mm256_load_ps(a)));
        _mm256_store_ps(
            am, _mm256_fmadd_ps(_mm256_mul_ps(dmw, da), _mm256_cvtepi32_ps(summ), _mm256_load_ps(am)));
      }
    }
  }
  for (int m = 0; m < kQ4kM; ++m)
    for (int r = 0; r < kQ4kN; ++r) out[size_t(m) * ostride + size_t(r)] = acc[m][r] - accm[m][r];
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
    case DType::Q4_K:
      return {tile_q4_k_lanes, nullptr, nullptr, kQ4kN, kQ4kM, false};
    default:
      return {};
  }
}

}  // namespace

QDot qdot_avx2(DType w) {
  QDot q = simd_qdot(w);
  if (q.rows) q.tile = qtile_avx2(w);
  return q;
}

}  // namespace llamarun::cpu
