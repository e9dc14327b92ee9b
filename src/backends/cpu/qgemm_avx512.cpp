// AVX-512 VNNI tile kernels of the int8-activation path (qdot.h, QTile), for prefill (qmatmul with many
// activation rows). Each decoded weight block serves every activation row of the tile and each
// activation load every weight row.
//  - Q4_K, Q6_K, IQ4_XS: 4 weight rows x 4 activation rows; vpmaddubsw (u8 weight x s8 activation ->
//    int16 pairs) then vpdpwssd (times the sub-block scales, accumulated in int32): two 512-bit ops per
//    64 values and pair. Bit-identical to the one-row dots of qdot_simd.inc (QTile::exact): those sum
//    each super-block in 8 int32 lanes, value v in lane (v % 32) / 4, then do their f32 FMAs on those 8
//    lanes. Here lane l of the low 256 bits and lane l of the high 256 bits of a 512-bit sum hold values
//    with (v % 32) / 4 == l, so adding the halves gives the same 8 exact int32s, and the f32 operations
//    that follow are the same ones in the same order.
//  - The 32-value block types: 8 weight rows x 16 activation rows, the rows in the lanes (below).
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

#include "backends/cpu/q32_lanes.inc"  // defines LR_INLINE

// Tile shapes (weight rows x activation rows), measured with bench_ops qgemm.
constexpr int NR = 4, MR = 4;  // the k-quants and IQ4_XS
constexpr int kQ32N = 8;       // the 32-value block types (x 16 activation rows)

LR_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

// The same reduction as qdot_simd.inc's hsum_ps (the same order, so the same bits).
LR_INLINE float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 8 int32 lanes of a 512-bit super-block sum: low half + high half.
LR_INLINE __m256i fold(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

LR_INLINE __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
LR_INLINE __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
// The 32 bytes at p in both 256-bit halves.
LR_INLINE __m512i bcast256(const void* p) { return _mm512_broadcast_i64x4(load256(p)); }
// 16-bit lanes: a in the low 256 bits, b in the high.
LR_INLINE __m512i halves16(int a, int b) {
  return _mm512_inserti64x4(_mm512_set1_epi16(int16_t(a)), _mm256_set1_epi16(int16_t(b)), 1);
}
// Index vector for vpermw: 16-bit lane i of the result takes lane first + i / per.
LR_INLINE __m512i perm_idx(int first, int per) {
  alignas(64) int16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = int16_t(first + i / per);
  return _mm512_load_si512(idx);
}

template <typename B>
LR_INLINE const B* wrow(const void* w, size_t wstride, int n) {
  return reinterpret_cast<const B*>(static_cast<const uint8_t*>(w) + size_t(n) * wstride);
}
LR_INLINE const BlockQ8_K* arow(const void* act, size_t astride, int m) {
  return reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(act) + size_t(m) * astride);
}

// Q4_K: the 8 6-bit scales then the 8 6-bit mins of a block's 12 scale bytes, as 16 int16.
LR_INLINE __m256i q4k_scales_mins(const uint8_t* s) {
  uint8_t sm[16];
  k4_scales_mins(s, sm);
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm)));
}

// Q4_K: 64 values (chunk c: the low nibbles of qs[32c..32c+32] are sub-block 2c, the high ones 2c + 1)
// per step: the 32 bytes in both halves, shifted by 0 (low half) or 4 (high half).
void tile_q4_k(int64_t K, const void* w, size_t wstride, const void* act, size_t astride, float* out,
               size_t ostride) {
  const BlockQ4_K* x[NR];
  const BlockQ8_K* y[MR];
  for (int n = 0; n < NR; ++n) x[n] = wrow<BlockQ4_K>(w, wstride, n);
  for (int m = 0; m < MR; ++m) y[m] = arow(act, astride, m);
  __m256 acc[NR][MR], accm[NR][MR];
  for (int n = 0; n < NR; ++n)
    for (int m = 0; m < MR; ++m) acc[n][m] = accm[n][m] = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f), shift = halves16(0, 4);
  __m512i scidx[4];
  for (int c = 0; c < 4; ++c) scidx[c] = perm_idx(2 * c, 16);
  // mins lane pairs: [mn0, mn0, mn1, mn1, ...] from lanes 8..15.
  const __m256i mnidx = _mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  for (int64_t i = 0; i < K / 256; ++i) {
    __m512i sc[NR][4];
    __m256i mn16[NR];
    for (int n = 0; n < NR; ++n) {
      const __m256i v = q4k_scales_mins(x[n][i].scales);
      for (int c = 0; c < 4; ++c) sc[n][c] = _mm512_permutexvar_epi16(scidx[c], _mm512_zextsi256_si512(v));
      mn16[n] = _mm256_permutexvar_epi16(mnidx, v);
    }
    __m512i sumi[NR][MR];
    for (int n = 0; n < NR; ++n)
      for (int m = 0; m < MR; ++m) sumi[n][m] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      __m512i a[MR];
      for (int m = 0; m < MR; ++m) a[m] = load512(y[m][i].qs + 64 * c);
      for (int n = 0; n < NR; ++n) {
        const __m512i q = _mm512_and_si512(_mm512_srlv_epi16(bcast256(x[n][i].qs + 32 * c), shift), m4);
        for (int m = 0; m < MR; ++m)
          sumi[n][m] = _mm512_dpwssd_epi32(sumi[n][m], _mm512_maddubs_epi16(q, a[m]), sc[n][c]);
      }
    }
    for (int n = 0; n < NR; ++n) {
      const float dw = h2f(x[n][i].d), dminw = h2f(x[n][i].dmin);
      for (int m = 0; m < MR; ++m) {
        const __m256i summ = _mm256_madd_epi16(mn16[n], load256(y[m][i].bsums));
        acc[n][m] =
            _mm256_fmadd_ps(_mm256_set1_ps(dw * y[m][i].d), _mm256_cvtepi32_ps(fold(sumi[n][m])), acc[n][m]);
        accm[n][m] = _mm256_fmadd_ps(_mm256_set1_ps(dminw * y[m][i].d), _mm256_cvtepi32_ps(summ), accm[n][m]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n)
      out[size_t(m) * ostride + size_t(n)] = hsum_ps(acc[n][m]) - hsum_ps(accm[n][m]);
}

// Q6_K: 64 values (t = 2p, 2p + 1 of half h) per step: ql[64h..64h+64] (low nibbles for p = 0, high
// for p = 1) and the 2 high bits of qh[32h..32h+32] at bits 2t, moved to bits 4..5.
void tile_q6_k(int64_t K, const void* w, size_t wstride, const void* act, size_t astride, float* out,
               size_t ostride) {
  const BlockQ6_K* x[NR];
  const BlockQ8_K* y[MR];
  for (int n = 0; n < NR; ++n) x[n] = wrow<BlockQ6_K>(w, wstride, n);
  for (int m = 0; m < MR; ++m) y[m] = arow(act, astride, m);
  __m256 acc[NR][MR];
  for (int n = 0; n < NR; ++n)
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
  const __m512i shl0 = halves16(4, 2), shr1 = halves16(0, 2);
  __m512i scidx[4];
  for (int p = 0; p < 4; ++p) scidx[p] = perm_idx(4 * p, 8);
  for (int64_t i = 0; i < K / 256; ++i) {
    __m256i sc16[NR];
    for (int n = 0; n < NR; ++n)
      sc16[n] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[n][i].scales)));
    __m512i sumi[NR][MR];
    for (int n = 0; n < NR; ++n)
      for (int m = 0; m < MR; ++m) sumi[n][m] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512i a0[MR], a1[MR];
      for (int m = 0; m < MR; ++m) {
        a0[m] = load512(y[m][i].qs + 128 * h);
        a1[m] = load512(y[m][i].qs + 128 * h + 64);
      }
      for (int n = 0; n < NR; ++n) {
        const __m512i ql = load512(x[n][i].ql + 64 * h), qh = bcast256(x[n][i].qh + 32 * h);
        const __m512i q0 =
            _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl0), m30));
        const __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                           _mm512_and_si512(_mm512_srlv_epi16(qh, shr1), m30));
        const __m512i scz = _mm512_zextsi256_si512(sc16[n]);
        const __m512i s0 = _mm512_permutexvar_epi16(scidx[2 * h], scz),
                      s1 = _mm512_permutexvar_epi16(scidx[2 * h + 1], scz);
        for (int m = 0; m < MR; ++m) {
          sumi[n][m] = _mm512_dpwssd_epi32(sumi[n][m], _mm512_maddubs_epi16(q0, a0[m]), s0);
          sumi[n][m] = _mm512_dpwssd_epi32(sumi[n][m], _mm512_maddubs_epi16(q1, a1[m]), s1);
        }
      }
    }
    for (int n = 0; n < NR; ++n) {
      const float dw = h2f(x[n][i].d);
      for (int m = 0; m < MR; ++m) {
        const __m256i off = _mm256_madd_epi16(sc16[n], load256(y[m][i].bsums));
        const __m256i s = _mm256_sub_epi32(fold(sumi[n][m]), _mm256_slli_epi32(off, 5));
        acc[n][m] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[m][i].d), _mm256_cvtepi32_ps(s), acc[n][m]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) out[size_t(m) * ostride + size_t(n)] = hsum_ps(acc[n][m]);
}

// IQ4_XS: sub-blocks j, j + 1 (64 values) per step: 128-bit lanes [low nibbles of qs[16j..16j+16], their
// high nibbles, the same for the next 16 bytes] through the table; signed weights, so |w| times the
// activation with w's sign.
void tile_iq4_xs(int64_t K, const void* w, size_t wstride, const void* act, size_t astride, float* out,
                 size_t ostride) {
  const BlockIQ4_XS* x[NR];
  const BlockQ8_K* y[MR];
  for (int n = 0; n < NR; ++n) x[n] = wrow<BlockIQ4_XS>(w, wstride, n);
  for (int m = 0; m < MR; ++m) y[m] = arow(act, astride, m);
  __m256 acc[NR][MR];
  for (int n = 0; n < NR; ++n)
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  // Per 128-bit lane: shift 0 (lanes 0, 2: the low nibbles) or 4 (lanes 1, 3: the high ones).
  constexpr int64_t k4 = 0x0004000400040004;
  const __m512i shiftv = _mm512_set_epi64(k4, k4, 0, 0, k4, k4, 0, 0);
  const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
  for (int64_t i = 0; i < K / 256; ++i) {
    __m512i sumi[NR][MR];
    for (int n = 0; n < NR; ++n)
      for (int m = 0; m < MR; ++m) sumi[n][m] = _mm512_setzero_si512();
    int ls[NR][8];
    for (int n = 0; n < NR; ++n)
      for (int j = 0; j < 8; ++j)
        ls[n][j] =
            (((x[n][i].scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((x[n][i].scales_h >> (2 * j)) & 3) << 4)) -
            32;
#pragma GCC unroll 4
    for (int j = 0; j < 8; j += 2) {
      __m512i a[MR];
      for (int m = 0; m < MR; ++m) a[m] = load512(y[m][i].qs + 32 * j);
      for (int n = 0; n < NR; ++n) {
        const __m512i raw = _mm512_zextsi256_si512(load256(x[n][i].qs + 16 * j));
        const __m512i idx = _mm512_and_si512(
            _mm512_srlv_epi16(_mm512_shuffle_i64x2(raw, raw, _MM_SHUFFLE(1, 1, 0, 0)), shiftv), m4);
        const __m512i q = _mm512_shuffle_epi8(table, idx);
        const __m512i qa = _mm512_abs_epi8(q);
        const __mmask64 neg = _mm512_movepi8_mask(q);
        const __m512i sv = halves16(ls[n][j], ls[n][j + 1]);
        for (int m = 0; m < MR; ++m) {
          const __m512i as = _mm512_mask_sub_epi8(a[m], neg, _mm512_setzero_si512(), a[m]);
          sumi[n][m] = _mm512_dpwssd_epi32(sumi[n][m], _mm512_maddubs_epi16(qa, as), sv);
        }
      }
    }
    for (int n = 0; n < NR; ++n) {
      const float dw = h2f(x[n][i].d);
      for (int m = 0; m < MR; ++m)
        acc[n][m] =
            _mm256_fmadd_ps(_mm256_set1_ps(dw * y[m][i].d), _mm256_cvtepi32_ps(fold(sumi[n][m])), acc[n][m]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) out[size_t(m) * ostride + size_t(n)] = hsum_ps(acc[n][m]);
}

// ---- 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL): activation rows in the lanes ----
// These tiles sum in their own f32 order, not bit-identical to the one-row dots (QTile::exact false:
// matmul uses them only where results may depend on the batch).
// 16 activation rows per tile, packed per block b (PackedLanes, q32_lanes.inc): the 4-byte group s (values
// 4s..4s+3) of every row side by side (row r at bytes 4r..4r+3), as u8 (a + 128). One vpdpbusd with the
// weight's group s broadcast (s8) adds that group's products for all 16 rows, so eight give each row's exact
// block dot (plus 128 * sum(w), removed through the start value) in its own lane; the f32 FMA with the scales
// dw * da then serves 16 pairs at once. Weights are decoded to their signed values (Q4_0: q - 8, Q5_0:
// q - 16, the others as stored); the mins of Q4_1 / Q5_1 add m * da * sum(a) per row.
constexpr int kRowLanes = 16;
using PackedQ32 = PackedLanes<kRowLanes>;
static_assert(sizeof(PackedQ32) == 640);

// The 32 signed weight values of a block in order.
template <DType T, typename Block>
LR_INLINE __m256i q32_signed(const Block& x) {
  if constexpr (T == DType::Q8_0) {
    return load256(x.qs);
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(raw, m4)),
                                        _mm_and_si128(_mm_srli_epi16(raw, 4), m4), 1);
    if constexpr (T == DType::IQ4_NL)
      q = _mm256_shuffle_epi8(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values))), q);
    if constexpr (T == DType::Q5_0 || T == DType::Q5_1) {
      uint32_t h;
      std::memcpy(&h, x.qh, 4);
      q = _mm256_mask_add_epi8(q, __mmask32(h), q, _mm256_set1_epi8(16));
    }
    if constexpr (T == DType::Q4_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    if constexpr (T == DType::Q5_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    return q;
  }
}

// A tile's kQ32N weight rows decoded once per matmul (QTile::prep) and read by q32_lanes for every group
// of activation rows: per block, per row, the 8 groups of 4 signed values, the start value -128 * sum(w),
// the scale and the min.
struct PrepQ32Row {
  int32_t q[8];
  int32_t bias;
  float d, m;
  int32_t pad;
};
struct PrepQ32Block {
  PrepQ32Row r[kQ32N];
};
static_assert(sizeof(PrepQ32Block) == 48 * kQ32N);

LR_INLINE void prep_row(PrepQ32Row& r, __m256i q, float d, float m) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(r.q), q);
  r.bias = -128 * sum_s8(q);
  r.d = d;
  r.m = m;
  r.pad = 0;
}

size_t q32_prep_bytes(int64_t K) { return size_t(K / 32) * sizeof(PrepQ32Block); }

template <DType T>
void q32_prep(int64_t K, const void* w, size_t wstride, void* prepped) {
  using Block = Q32Block<T>;
  auto* out = static_cast<PrepQ32Block*>(prepped);
  for (int n = 0; n < kQ32N; ++n) {
    const Block* x = wrow<Block>(w, wstride, n);
    for (int64_t b = 0; b < K / 32; ++b) {
      if constexpr (T == DType::Q4_1 || T == DType::Q5_1) {
        prep_row(out[b].r[n], q32_signed<T>(x[b]), h2f(x[b].d), h2f(x[b].m));
      } else {
        prep_row(out[b].r[n], q32_signed<T>(x[b]), h2f(x[b].d), 0.f);
      }
    }
  }
}

// kHalves: the blocks come as PrepQ16Row (Q6_K, Q3_K: q32_subblocks.inc), each 16-value half (groups 0-3,
// 4-7) with its own start value and scale; the tile is defined after that file's include.
template <bool kMin, bool kHalves = false>
void q32_lanes(int64_t K, const void* prepped, size_t, const void* packed, size_t, float* out,
               size_t ostride);

template <DType T>
QTile q32_tile() {
  constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1;
  QTile t{
      q32_lanes<kMin>, pack_lanes<kRowLanes, true>, packed_lanes_bytes<kRowLanes>, kQ32N, kRowLanes, false};
  t.prep = q32_prep<T>;
  t.prep_bytes = q32_prep_bytes;
  return t;
}

// ---- The same lanes tile for IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K in free order (QDot::free_tile) ----
// Their sub-blocks as 32-value blocks with a float scale and min (q32_subblocks.inc); Q6_K's two 16-value
// halves of a block (Q3_K's too) sum apart (q32_lanes<.., true>).
LR_INLINE __m256i nibbles32(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(raw, m4)),
                                 _mm_and_si128(_mm_srli_epi16(raw, 4), m4), 1);
}
#include "backends/cpu/q32_subblocks.inc"

template <bool kMin, bool kHalves>
void q32_lanes(int64_t K, const void* prepped, size_t, const void* packed, size_t, float* out,
               size_t ostride) {
  using Block = std::conditional_t<kHalves, PrepQ16Block<kQ32N>, PrepQ32Block>;
  const auto* wb = static_cast<const Block*>(prepped);
  const auto* p = static_cast<const PackedQ32*>(packed);
  __m512 acc[kQ32N];
  for (int n = 0; n < kQ32N; ++n) acc[n] = _mm512_setzero_ps();
  for (int64_t b = 0; b < K / 32; ++b) {
    __m512i a[8];
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) a[g] = load512(p[b].q[g]);
    const __m512 da = _mm512_loadu_ps(p[b].d);
    [[maybe_unused]] __m512 dsum;
    if constexpr (kMin) dsum = _mm512_loadu_ps(p[b].dsum);
#pragma GCC unroll 8
    for (int n = 0; n < kQ32N; ++n) {
      const auto& r = wb[b].r[n];
      if constexpr (kHalves) {
        __m512i s0 = _mm512_set1_epi32(r.bias[0]), s1 = _mm512_set1_epi32(r.bias[1]);
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
          s0 = _mm512_dpbusd_epi32(s0, a[g], _mm512_set1_epi32(r.q[g]));
          s1 = _mm512_dpbusd_epi32(s1, a[g + 4], _mm512_set1_epi32(r.q[g + 4]));
        }
        acc[n] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(r.d[0]), da), _mm512_cvtepi32_ps(s0), acc[n]);
        acc[n] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(r.d[1]), da), _mm512_cvtepi32_ps(s1), acc[n]);
      } else {
        __m512i s0 = _mm512_set1_epi32(r.bias), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int g = 0; g < 8; g += 2) {
          s0 = _mm512_dpbusd_epi32(s0, a[g], _mm512_set1_epi32(r.q[g]));
          s1 = _mm512_dpbusd_epi32(s1, a[g + 1], _mm512_set1_epi32(r.q[g + 1]));
        }
        const __m512 sc = _mm512_mul_ps(_mm512_set1_ps(r.d), da);
        acc[n] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[n]);
        if constexpr (kMin) acc[n] = _mm512_fmadd_ps(_mm512_set1_ps(r.m), dsum, acc[n]);
      }
    }
  }
  for (int n = 0; n < kQ32N; ++n) {
    alignas(64) float o[kRowLanes];
    _mm512_store_ps(o, acc[n]);
    for (int r = 0; r < kRowLanes; ++r) out[size_t(r) * ostride + size_t(n)] = o[r];
  }
}

QTile k_free_tile(QPrepFn prep, bool min) {
  QTile t{min ? q32_lanes<true> : q32_lanes<false>,
          pack_lanes_q8k<kRowLanes, true>,
          packed_lanes_bytes<kRowLanes>,
          kQ32N,
          kRowLanes,
          false};
  t.prep = prep;
  t.prep_bytes = q32_prep_bytes;
  return t;
}

}  // namespace

QTile free_tile_avx512(DType w) {
  switch (w) {
    case DType::IQ4_XS:
      return k_free_tile(iq4_xs_prep<PrepQ32Block, kQ32N>, false);
    case DType::Q4_K:
      return k_free_tile(k45_prep<PrepQ32Block, kQ32N, BlockQ4_K>, true);
    case DType::Q5_K:
      return k_free_tile(k45_prep<PrepQ32Block, kQ32N, BlockQ5_K>, true);
    case DType::Q6_K:
    case DType::Q3_K: {
      QTile t = k_free_tile(
          w == DType::Q6_K ? q16_prep<kQ32N, BlockQ6_K, q6k_sub> : q16_prep<kQ32N, BlockQ3_K, q3k_sub>,
          false);
      t.fn = q32_lanes<false, true>;
      t.prep_bytes = q16_prep_bytes<kQ32N>;
      return t;
    }
    default:
      return {};
  }
}

QTile qtile_avx512(DType w) {
  switch (w) {
    case DType::Q4_K:
      return {tile_q4_k, nullptr, nullptr, NR, MR, true};
    case DType::Q6_K:
      return {tile_q6_k, nullptr, nullptr, NR, MR, true};
    case DType::IQ4_XS:
      return {tile_iq4_xs, nullptr, nullptr, NR, MR, true};
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

}  // namespace llamarun::cpu
