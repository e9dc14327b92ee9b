// AVX-512 matmul (built with -mavx512f/bw/vl/dq/bf16 because of the _avx512 suffix; entered only
// when the CPU has them). Everything but the entry point has internal linkage, and this file calls
// no inline functions of shared headers, so no AVX-512 code can be picked by the linker for
// baseline callers.
//
// Two shapes of work:
//  - M <= 8 (decode): memory-bound GEMV. Each weight row is streamed once (with software prefetch
//    into L2) and its blocks are dequantised in registers, then dotted against all M activation rows
//    (f32 activations, f32 accumulation, activations never quantised). Rows are split over threads
//    in static chunks. For quantised weights and M = 1 the block scale is applied to the block's
//    partial dot instead of to every value (gemv_tile_factored).
//  - M > 8 (prefill): compute-bound GEMM. x is transposed once into panels xt[K][32] (32 activation
//    rows side by side); each thread converts a panel of 48 weight rows to f32 once (kept in L2,
//    row stride padded by a cache line) and runs a 12 x 32 register-blocked micro-kernel (24 zmm
//    accumulators: 12 weight rows broadcast, 2 vectors of 16 activation rows) over the whole K for
//    every activation panel.
//    For BF16 weights with MatmulArgs::bf16_dot, the activations are ROUNDED TO BF16 (round to
//    nearest even, as PyTorch's bf16 matmul does) and the micro-kernel uses vdpbf16ps on (k, k+1)
//    pairs of the bf16 weight rows (copied into a padded panel), with f32 accumulation.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "backends/cpu/kernels.h"
#include "backends/cpu/scratch.h"
#include "core/error.h"

// GCC 12 warns falsely about _mm256_undefined_pd inside _mm512_reduce_add_ps.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llamarun::cpu {
namespace {

#define LR_INLINE inline __attribute__((always_inline))

LR_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }
LR_INLINE float bf2f(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// f32 -> bf16, round to nearest even, NaN kept quiet (same as core/fp16.h f32_to_bf16).
LR_INLINE uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
LR_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr bool is_plain(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
constexpr bool dtype_is_quant(DType t) { return !is_plain(t); }

// Values k..k+31 of a weight row as f32 (k a multiple of 32; for quantised types, block k/32).
template <DType T>
LR_INLINE void load32(const uint8_t* row, int64_t k, __m512& lo, __m512& hi) {
  if constexpr (T == DType::F32) {
    const float* p = reinterpret_cast<const float*>(row) + k;
    lo = _mm512_loadu_ps(p);
    hi = _mm512_loadu_ps(p + 16);
  } else if constexpr (T == DType::F16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
    lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    hi = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  } else if constexpr (T == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    hi = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16))), 16));
  } else if constexpr (T == DType::Q8_0) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row) + (k >> 5);
    const __m512 d = _mm512_set1_ps(h2f(b->d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs + 16));
    lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
    hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
  } else if constexpr (T == DType::Q4_0) {
    const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(row) + (k >> 5);
    const __m512 d = _mm512_set1_ps(h2f(b->d));
    // dword j = byte j (one zero-extension), low nibble = value j, high nibble = value j + 16.
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs)));
    const __m512i eight = _mm512_set1_epi32(8);
    const __m512i l = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x0f)), eight);
    const __m512i h = _mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight);
    lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(l));  // d * (q - 8), as the reference
    hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(h));
  } else {  // Q4_1
    const BlockQ4_1* b = reinterpret_cast<const BlockQ4_1*>(row) + (k >> 5);
    const __m512 d = _mm512_set1_ps(h2f(b->d)), m = _mm512_set1_ps(h2f(b->m));
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs)));
    const __m512i l = _mm512_and_si512(v, _mm512_set1_epi32(0x0f)), h = _mm512_srli_epi32(v, 4);
    lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l), d, m);
    hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(h), d, m);
  }
}

// One value of a plain-type row (K tails that are not a multiple of 32).
template <DType T>
LR_INLINE float elem(const uint8_t* row, int64_t k) {
  if constexpr (T == DType::F32)
    return reinterpret_cast<const float*>(row)[k];
  else if constexpr (T == DType::F16)
    return h2f(reinterpret_cast<const uint16_t*>(row)[k]);
  else
    return bf2f(reinterpret_cast<const uint16_t*>(row)[k]);
}

// ---------------------------------------------------------------- GEMV (M <= 8)

// GEMV software prefetch into L2 (the L1 prefetcher takes it from there): at least this many bytes
// ahead, at the same place of a later tile. Rows can be short (1 KiB), too short for the hardware
// stream prefetchers to get ahead on their own.
constexpr size_t kPrefetchBytes = 16384;

// y[m, n + r] for r < R, m < M: R weight rows streamed together; A accumulators per (r, m) (with
// A = 2 the two 16-value halves of a block go to separate chains). More rows per tile means fewer
// activation loads per weight, which matters once M x K activations no longer fit in L1.
template <DType T, int M, int R, int A>
LR_INLINE void gemv_tile(const MatmulArgs& a, int64_t n) {
  const int64_t K = a.K, K32 = K & ~int64_t(31);
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rows[r] = a.w + size_t(n + r) * a.w_row_bytes;
  __m512 acc[R][M][A];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < A; ++j) acc[r][m][j] = _mm512_setzero_ps();
  // Bytes per 32 values, and how far ahead to prefetch.
  constexpr size_t kBlockBytes = T == DType::F32                       ? 128
                                 : T == DType::F16 || T == DType::BF16 ? 64
                                 : T == DType::Q8_0                    ? sizeof(BlockQ8_0)
                                 : T == DType::Q4_0                    ? sizeof(BlockQ4_0)
                                                                       : sizeof(BlockQ4_1);
  const size_t tile_bytes = size_t(R) * a.w_row_bytes;
  const size_t ahead =
      tile_bytes * ((kPrefetchBytes + tile_bytes - 1) / tile_bytes);  // whole tiles, >= 8 KiB
  for (int64_t k = 0; k < K32; k += 32) {
    const size_t bo = size_t(k >> 5) * kBlockBytes;
    // Small blocks: one prefetch per kEvery blocks still touches every 64-byte line.
    constexpr int64_t kEvery = kBlockBytes >= 64 ? 1 : int64_t(64 / kBlockBytes);
    if (kEvery == 1 || (k >> 5) % kEvery == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + ahead + bo), _MM_HINT_T1);
        if constexpr (kBlockBytes > 64)
          _mm_prefetch(reinterpret_cast<const char*>(rows[r] + ahead + bo + 64), _MM_HINT_T1);
      }
    }
    __m512 w[R][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) load32<T>(rows[r], k, w[r][0], w[r][1]);
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
      const __m512 x0 = _mm512_loadu_ps(a.x + m * K + k), x1 = _mm512_loadu_ps(a.x + m * K + k + 16);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc[r][m][0] = _mm512_fmadd_ps(w[r][0], x0, acc[r][m][0]);
        acc[r][m][A - 1] = _mm512_fmadd_ps(w[r][1], x1, acc[r][m][A - 1]);
      }
    }
  }
  float tail[R][M] = {};
  if constexpr (is_plain(T)) {
    for (int64_t k = K32; k < K; ++k)
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        // explicit FMA: contraction must not vary by instance (batch invariance)
        for (int m = 0; m < M; ++m)
          tail[r][m] = __builtin_fmaf(elem<T>(rows[r], k), a.x[m * K + k], tail[r][m]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
      __m512 s = acc[r][m][0];
      if constexpr (A == 2) s = _mm512_add_ps(s, acc[r][m][1]);
      a.y[m * a.N + n + r] = _mm512_reduce_add_ps(s) + tail[r][m];
    }
}

// Quantised weights with one activation row, factored per block b with scale d and offset c:
//   Q8_0: sum_k d q_k x_k             = d (q . x)
//   Q4_0: sum_k d (q_k - 8) x_k       = d (q . x) - 8 d xsum[b]
//   Q4_1: sum_k (d q_k + m) x_k       = d (q . x) + m xsum[b]
// so dequantisation costs no multiply per value (about 10% faster than gemv_tile where decode is
// compute-bound). xsum[b] = sum of x over block b (only read for Q4_0/Q4_1). Rounding differs from
// the dequantise-then-dot order by a few ulp of the block sums.
template <DType T, int R>
LR_INLINE void gemv_tile_factored(const MatmulArgs& a, int64_t n, const float* xsum) {
  using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0,
                                   std::conditional_t<T == DType::Q4_0, BlockQ4_0, BlockQ4_1>>;
  const int64_t nb = a.K >> 5;
  const Block* rows[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const Block*>(a.w + size_t(n + r) * a.w_row_bytes);
  __m512 acc[R];
  float csum[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), csum[r] = 0.f;
  const size_t tile_bytes = size_t(R) * a.w_row_bytes;
  const size_t ahead = tile_bytes * ((kPrefetchBytes + tile_bytes - 1) / tile_bytes);
  constexpr int64_t kEvery = sizeof(Block) >= 64 ? 1 : int64_t(64 / sizeof(Block));
  const __m512i m4 = _mm512_set1_epi32(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    if (kEvery == 1 || b % kEvery == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + b) + ahead, _MM_HINT_T1);
    }
    const __m512 x0 = _mm512_loadu_ps(a.x + b * 32), x1 = _mm512_loadu_ps(a.x + b * 32 + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Block* blk = rows[r] + b;
      __m512 ql, qh;
      if constexpr (T == DType::Q8_0) {
        ql = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs))));
        qh = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs + 16))));
      } else {  // byte j holds value j (low nibble) and value j + 16 (high nibble)
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs)));
        ql = _mm512_cvtepi32_ps(_mm512_and_si512(v, m4));
        qh = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
      }
      const __m512 t = _mm512_fmadd_ps(qh, x1, _mm512_mul_ps(ql, x0));
      const float d = h2f(blk->d);
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc[r]);
      if constexpr (T == DType::Q4_0) csum[r] += -8.f * d * xsum[b];
      if constexpr (T == DType::Q4_1) csum[r] += h2f(blk->m) * xsum[b];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a.y[n + r] = _mm512_reduce_add_ps(acc[r]) + csum[r];
}

// Register budget (32 zmm): R*M*A accumulators + 2R weights + 2 activations.
template <DType T, int M>
void gemv(const MatmulArgs& a) {
  constexpr int R = M <= 4 ? 4 : 2;
  constexpr int A = M <= 2 ? 2 : 1;
  const int64_t tiles = a.N / R;
  if constexpr (M == 1 && dtype_is_quant(T)) {
    const int64_t nb = a.K >> 5;
    float* xsum = static_cast<float*>(thread_scratch(kScratchBlockSums, size_t(nb) * sizeof(float)));
    for (int64_t b = 0; b < nb; ++b)
      xsum[b] = _mm512_reduce_add_ps(
          _mm512_add_ps(_mm512_loadu_ps(a.x + 32 * b), _mm512_loadu_ps(a.x + 32 * b + 16)));
#pragma omp parallel for schedule(static) if (a.N * a.K >= (1 << 16))
    for (int64_t t = 0; t < tiles; ++t) gemv_tile_factored<T, R>(a, t * R, xsum);
    for (int64_t n = tiles * R; n < a.N; ++n) gemv_tile_factored<T, 1>(a, n, xsum);
    return;
  }
#pragma omp parallel for schedule(static) if (a.N * a.K * M >= (1 << 16))
  for (int64_t t = 0; t < tiles; ++t) gemv_tile<T, M, R, A>(a, t * R);
  for (int64_t n = tiles * R; n < a.N; ++n) gemv_tile<T, M, 1, A>(a, n);
}

template <DType T>
void gemv_dispatch(const MatmulArgs& a) {
  switch (a.M) {
    case 1:
      return gemv<T, 1>(a);
    case 2:
      return gemv<T, 2>(a);
    case 3:
      return gemv<T, 3>(a);
    case 4:
      return gemv<T, 4>(a);
    case 5:
      return gemv<T, 5>(a);
    case 6:
      return gemv<T, 6>(a);
    case 7:
      return gemv<T, 7>(a);
    default:
      return gemv<T, 8>(a);
  }
}

// ---------------------------------------------------------------- GEMM (M > 8)

constexpr int kMP = 32;  // activation rows per panel (2 zmm)
constexpr int kNR = 12;  // weight rows per micro-tile
constexpr int kNB = 48;  // weight rows converted per panel (4 micro-tiles)

// y[i, r] (i < mvalid, r < NRW; y row stride ldy) = sum_k w[r, k] * xt[k, i].
// w: NRW rows of f32, stride ldw; xt: K x kMP f32 (64-byte aligned). MV = zmm per k (1 or 2).
template <int NRW, int MV>
void micro_f32(const float* w, int64_t ldw, const float* xt, int64_t K, float* y, int64_t ldy, int mvalid) {
  __m512 acc[NRW][MV];
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 xv[MV];
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) xv[v] = _mm512_load_ps(xt + k * kMP + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < NRW; ++r) {
      const __m512 b = _mm512_set1_ps(w[r * ldw + k]);
#pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  alignas(64) float tmp[kMP] = {};
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) _mm512_store_ps(tmp + 16 * v, acc[r][v]);
    for (int i = 0; i < mvalid; ++i) y[i * ldy + r] = tmp[i];
  }
}

// As micro_f32 with bf16 operands: w: NRW bf16 rows (stride ldw elements), xt: ceil(K/2) x kMP
// words, each word the bf16 pair (x[i, 2j], x[i, 2j + 1]) (high half 0 past K).
template <int NRW, int MV>
void micro_bf16(const uint16_t* w, int64_t ldw, const uint32_t* xt, int64_t K, float* y, int64_t ldy,
                int mvalid) {
  __m512 acc[NRW][MV];
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t K2 = K >> 1;
  for (int64_t j = 0; j < K2; ++j) {
    __m512bh xv[MV];
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) xv[v] = (__m512bh)_mm512_load_si512(xt + j * kMP + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < NRW; ++r) {
      uint32_t pair;
      std::memcpy(&pair, w + r * ldw + 2 * j, 4);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(int(pair));
#pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], b, xv[v]);
    }
  }
  if (K & 1) {  // last, unpaired k: weight pair (w[K-1], 0)
    __m512bh xv[MV];
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) xv[v] = (__m512bh)_mm512_load_si512(xt + K2 * kMP + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < NRW; ++r) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(int(uint32_t(w[r * ldw + K - 1])));
#pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], b, xv[v]);
    }
  }
  alignas(64) float tmp[kMP] = {};
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) _mm512_store_ps(tmp + 16 * v, acc[r][v]);
    for (int i = 0; i < mvalid; ++i) y[i * ldy + r] = tmp[i];
  }
}

using MicroF32 = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int);
using MicroBf16 = void (*)(const uint16_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, int);

template <int... R>
constexpr MicroF32 kMicroF32Table[2][sizeof...(R)] = {{micro_f32<R, 1>...}, {micro_f32<R, 2>...}};
template <int... R>
constexpr MicroBf16 kMicroBf16Table[2][sizeof...(R)] = {{micro_bf16<R, 1>...}, {micro_bf16<R, 2>...}};
constexpr const auto& kMicroF32 = kMicroF32Table<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12>;
constexpr const auto& kMicroBf16 = kMicroBf16Table<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12>;

// Panel p of x, transposed: xt[k * kMP + i] = x[p * kMP + i, k] (0 past M).
void transpose_panel_f32(const float* x, int64_t M, int64_t K, int64_t p, float* xt) {
  const int64_t m0 = p * kMP, mv = min64(kMP, M - m0);
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t k1 = min64(K, k0 + 16);
    for (int64_t i = 0; i < kMP; ++i) {
      if (i < mv) {
        const float* xr = x + (m0 + i) * K;
        for (int64_t k = k0; k < k1; ++k) xt[k * kMP + i] = xr[k];
      } else {
        for (int64_t k = k0; k < k1; ++k) xt[k * kMP + i] = 0.f;
      }
    }
  }
}

// Panel p of x rounded to bf16 in (k, k+1) pairs: xt[j * kMP + i] = bf16(x[., 2j]) | bf16(x[., 2j+1]) << 16.
void transpose_panel_bf16(const float* x, int64_t M, int64_t K, int64_t p, uint32_t* xt) {
  const int64_t m0 = p * kMP, mv = min64(kMP, M - m0), K2 = (K + 1) >> 1;
  for (int64_t j0 = 0; j0 < K2; j0 += 16) {
    const int64_t j1 = min64(K2, j0 + 16);
    for (int64_t i = 0; i < kMP; ++i) {
      if (i < mv) {
        const float* xr = x + (m0 + i) * K;
        for (int64_t j = j0; j < j1; ++j) {
          const uint32_t lo = f2bf(xr[2 * j]), hi = 2 * j + 1 < K ? f2bf(xr[2 * j + 1]) : 0;
          xt[j * kMP + i] = lo | (hi << 16);
        }
      } else {
        for (int64_t j = j0; j < j1; ++j) xt[j * kMP + i] = 0;
      }
    }
  }
}

// rows x K weight values starting at row `src` to f32, row stride ldd floats.
template <DType T>
void convert_rows(const uint8_t* src, size_t row_bytes, int64_t rows, int64_t K, float* dst, int64_t ldd) {
  const int64_t K32 = K & ~int64_t(31);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + size_t(r) * row_bytes;
    float* out = dst + r * ldd;
    for (int64_t k = 0; k < K32; k += 32) {
      __m512 lo, hi;
      load32<T>(row, k, lo, hi);
      _mm512_storeu_ps(out + k, lo);
      _mm512_storeu_ps(out + k + 16, hi);
    }
    if constexpr (is_plain(T)) {
      for (int64_t k = K32; k < K; ++k) out[k] = elem<T>(row, k);
    }
  }
}

template <DType T>
void gemm(const MatmulArgs& a) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const bool bf = T == DType::BF16 && a.bf16_dot;
  const int64_t m_panels = (M + kMP - 1) / kMP, n_panels = (N + kNB - 1) / kNB;
  const int64_t K2 = (K + 1) >> 1;
  // x panels: m_panels x [K][kMP] f32, or m_panels x [K2][kMP] bf16 pairs; shared by all threads.
  // Scratch is taken by the calling thread only, so allocation failures surface here, not in a worker.
  void* xt = thread_scratch(kScratchActivations, size_t(m_panels) * size_t(bf ? K2 : K) * kMP * 4);
  const int nthreads = omp_get_max_threads();
  // Per-thread weight panels: nthreads x [kNB][ldw] f32, or [kNB][ldb] bf16 for the bf16-dot path.
  // The row strides are padded by one cache line so the 12 rows a micro-kernel broadcasts from do
  // not all map to the same L1 set (with K = 2048, unpadded f32 rows are exactly 8 KiB apart).
  const int64_t ldw = ((K + 15) & ~int64_t(15)) + 16, ldb = ((K + 31) & ~int64_t(31)) + 32;
  const size_t panel_bytes = size_t(kNB) * (bf ? size_t(ldb) * 2 : size_t(ldw) * 4);
  uint8_t* wbuf_all = static_cast<uint8_t*>(thread_scratch(kScratchWeights, size_t(nthreads) * panel_bytes));
#pragma omp parallel num_threads(nthreads) if (M * N * K >= (1 << 18))
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < m_panels; ++p) {
      if (bf)
        transpose_panel_bf16(a.x, M, K, p, static_cast<uint32_t*>(xt) + p * K2 * kMP);
      else
        transpose_panel_f32(a.x, M, K, p, static_cast<float*>(xt) + p * K * kMP);
    }
    // (implicit barrier: all panels are ready)
    uint8_t* wbuf = wbuf_all + size_t(omp_get_thread_num()) * panel_bytes;
    float* wf = reinterpret_cast<float*>(wbuf);
    uint16_t* wb = reinterpret_cast<uint16_t*>(wbuf);
#pragma omp for schedule(static)
    for (int64_t np = 0; np < n_panels; ++np) {
      const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
      const uint8_t* wsrc = a.w + size_t(n0) * a.w_row_bytes;
      if (bf) {
        for (int64_t r = 0; r < nrows; ++r)
          std::memcpy(wb + r * ldb, wsrc + size_t(r) * a.w_row_bytes, size_t(K) * 2);
      } else {
        convert_rows<T>(wsrc, a.w_row_bytes, nrows, K, wf, ldw);
      }
      for (int64_t p = 0; p < m_panels; ++p) {
        const int64_t m0 = p * kMP;
        const int mvalid = int(min64(kMP, M - m0));
        const int mv_idx = mvalid > 16 ? 1 : 0;
        for (int64_t r0 = 0; r0 < nrows; r0 += kNR) {
          const int nr = int(min64(kNR, nrows - r0));
          float* yt = a.y + m0 * N + n0 + r0;
          if (bf) {
            kMicroBf16[mv_idx][nr - 1](wb + r0 * ldb, ldb, static_cast<const uint32_t*>(xt) + p * K2 * kMP, K,
                                       yt, N, mvalid);
          } else {
            kMicroF32[mv_idx][nr - 1](wf + r0 * ldw, ldw, static_cast<const float*>(xt) + p * K * kMP, K, yt,
                                      N, mvalid);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- batch-invariant (any M)

// MatmulArgs::batch_invariant: every y[m, n] is computed by the same tile shape whatever M is (2
// accumulators over k, one reduction, the same tail; activation rows in chunks of at most 2), so a
// row's result depends neither on M nor on the other rows. M <= 8 streams the stored weights; larger M
// converts panels of kNB weight rows to f32 once (the very values load32 produces in registers) and
// runs the same tile over that copy. Neither the factored M = 1 path nor bf16_dot is used.
constexpr int kInvA = 2;

template <DType T, int MC>
LR_INLINE void invariant_rows(const MatmulArgs& s, int64_t nrows) {
  int64_t r0 = 0;
  for (; r0 + 4 <= nrows; r0 += 4) gemv_tile<T, MC, 4, kInvA>(s, r0);
  for (; r0 < nrows; ++r0) gemv_tile<T, MC, 1, kInvA>(s, r0);
}

// s.w, s.y at the panel's first weight row; all M activation rows.
template <DType T>
void invariant_panel(const MatmulArgs& s, int64_t nrows) {
  for (int64_t m0 = 0; m0 < s.M; m0 += 2) {
    MatmulArgs t = s;
    t.x = s.x + m0 * s.K;
    t.y = s.y + m0 * s.N;
    if (s.M - m0 >= 2)
      invariant_rows<T, 2>(t, nrows);
    else
      invariant_rows<T, 1>(t, nrows);
  }
}

template <DType T>
void matmul_invariant(const MatmulArgs& a) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const int64_t n_panels = (N + kNB - 1) / kNB;
  if (M <= 8 || T == DType::F32) {
#pragma omp parallel for schedule(static) if (M * N * K >= (1 << 16))
    for (int64_t np = 0; np < n_panels; ++np) {
      const int64_t n0 = np * kNB;
      MatmulArgs s = a;
      s.w = a.w + size_t(n0) * a.w_row_bytes;
      s.y = a.y + n0;
      invariant_panel<T>(s, min64(kNB, N - n0));
    }
    return;
  }
  const int nthreads = omp_get_max_threads();
  float* wbuf_all =  // nthreads x [kNB][K]
      static_cast<float*>(thread_scratch(kScratchWeights, size_t(nthreads) * kNB * size_t(K) * 4));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t np = 0; np < n_panels; ++np) {
    const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
    float* wbuf = wbuf_all + size_t(omp_get_thread_num()) * kNB * size_t(K);
    convert_rows<T>(a.w + size_t(n0) * a.w_row_bytes, a.w_row_bytes, nrows, K, wbuf, K);
    MatmulArgs s = a;
    s.dtype = DType::F32;
    s.w = reinterpret_cast<const uint8_t*>(wbuf);
    s.w_row_bytes = size_t(K) * 4;
    s.y = a.y + n0;
    invariant_panel<DType::F32>(s, nrows);
  }
}

template <DType T>
void matmul_t(const MatmulArgs& a) {
  if (a.batch_invariant)
    matmul_invariant<T>(a);
  else if (a.M <= 8)
    gemv_dispatch<T>(a);
  else
    gemm<T>(a);
}

}  // namespace

void matmul_avx512(const MatmulArgs& a) {
  switch (a.dtype) {
    case DType::F32:
      return matmul_t<DType::F32>(a);
    case DType::F16:
      return matmul_t<DType::F16>(a);
    case DType::BF16:
      return matmul_t<DType::BF16>(a);
    case DType::Q8_0:
      return matmul_t<DType::Q8_0>(a);
    case DType::Q4_0:
      return matmul_t<DType::Q4_0>(a);
    case DType::Q4_1:
      return matmul_t<DType::Q4_1>(a);
    default:
      fail("matmul: no AVX512 kernel for ", dtype_name(a.dtype), " weights");
  }
}

}  // namespace llamarun::cpu
