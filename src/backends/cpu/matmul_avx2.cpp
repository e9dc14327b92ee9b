// AVX2 + FMA + F16C matmul (built with -mavx2 -mfma -mf16c because of the _avx2 suffix; entered
// only when the CPU has them). Same structure as matmul_avx512.cpp with 8-wide vectors:
//  - M <= 8: GEMV, weight blocks dequantised in registers, f32 activations, f32 accumulation.
//  - M > 8:  GEMM, x transposed once into panels xt[K][16]; each thread converts 48 weight rows to
//    f32 once and runs a 6 x 16 micro-kernel (12 ymm accumulators) over the whole K.
// Everything but the entry point has internal linkage and no inline function of a shared header is
// called, so no AVX2 code can be picked by the linker for baseline callers.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "backends/cpu/kernels.h"
#include "backends/cpu/scratch.h"
#include "core/error.h"

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
LR_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
LR_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

constexpr bool is_plain(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

LR_INLINE __m256 bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// Values k..k+31 of a weight row as f32, in 4 vectors (k a multiple of 32).
template <DType T>
LR_INLINE void load32(const uint8_t* row, int64_t k, __m256 w[4]) {
  if constexpr (T == DType::F32) {
    const float* p = reinterpret_cast<const float*>(row) + k;
#pragma GCC unroll 16
    for (int q = 0; q < 4; ++q) w[q] = _mm256_loadu_ps(p + 8 * q);
  } else if constexpr (T == DType::F16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
#pragma GCC unroll 16
    for (int q = 0; q < 4; ++q)
      w[q] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * q)));
  } else if constexpr (T == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
#pragma GCC unroll 16
    for (int q = 0; q < 4; ++q) w[q] = bf16x8(p + 8 * q);
  } else if constexpr (T == DType::Q8_0) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row) + (k >> 5);
    const __m256 d = _mm256_set1_ps(h2f(b->d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs + 16));
    w[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)));
    w[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))));
    w[2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)));
    w[3] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))));
  } else if constexpr (T == DType::Q4_0) {
    const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(row) + (k >> 5);
    const __m256 d = _mm256_set1_ps(h2f(b->d));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i l = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
    const __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);
    w[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(l)));  // d * (q - 8), as the reference
    w[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(l, 8))));
    w[2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(h)));
    w[3] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(h, 8))));
  } else {  // Q4_1
    const BlockQ4_1* b = reinterpret_cast<const BlockQ4_1*>(row) + (k >> 5);
    const __m256 d = _mm256_set1_ps(h2f(b->d)), m = _mm256_set1_ps(h2f(b->m));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i l = _mm_and_si128(q, m4), h = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(l)), d, m);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(l, 8))), d, m);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h)), d, m);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(h, 8))), d, m);
  }
}

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

// y[m, n + r] for r < R, m < M. A accumulators per (r, m): AF when given, else 2 when registers allow.
template <DType T, int M, int R, int AF = 0>
LR_INLINE void gemv_tile(const MatmulArgs& a, int64_t n) {
  constexpr int A = AF ? AF : ((R * M * 2 <= 10) ? 2 : 1);
  const int64_t K = a.K, K32 = K & ~int64_t(31);
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rows[r] = a.w + size_t(n + r) * a.w_row_bytes;
  __m256 acc[R][M][A];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < A; ++j) acc[r][m][j] = _mm256_setzero_ps();
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
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      __m256 w[4];
      load32<T>(rows[r], k, w);
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m) {
        const float* xm = a.x + m * K + k;
#pragma GCC unroll 16
        for (int q = 0; q < 4; ++q)
          acc[r][m][q % A] = _mm256_fmadd_ps(w[q], _mm256_loadu_ps(xm + 8 * q), acc[r][m][q % A]);
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
      __m256 s = acc[r][m][0];
      if constexpr (A == 2) s = _mm256_add_ps(s, acc[r][m][1]);
      a.y[m * a.N + n + r] = hsum(s) + tail[r][m];
    }
}

// Quantised weights with one activation row, factored per block (see matmul_avx512.cpp):
//   Q8_0: d (q . x);  Q4_0: d (q . x) - 8 d xsum[b];  Q4_1: d (q . x) + m xsum[b].
template <DType T, int R>
LR_INLINE void gemv_tile_factored(const MatmulArgs& a, int64_t n, const float* xsum) {
  using Block = std::conditional_t<T == DType::Q8_0, BlockQ8_0,
                                   std::conditional_t<T == DType::Q4_0, BlockQ4_0, BlockQ4_1>>;
  const int64_t nb = a.K >> 5;
  const Block* rows[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const Block*>(a.w + size_t(n + r) * a.w_row_bytes);
  __m256 acc[R];
  float csum[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), csum[r] = 0.f;
  const size_t tile_bytes = size_t(R) * a.w_row_bytes;
  const size_t ahead = tile_bytes * ((kPrefetchBytes + tile_bytes - 1) / tile_bytes);
  constexpr int64_t kEvery = sizeof(Block) >= 64 ? 1 : int64_t(64 / sizeof(Block));
  const __m256i m4 = _mm256_set1_epi32(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    if (kEvery == 1 || b % kEvery == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + b) + ahead, _MM_HINT_T1);
    }
    const float* xb = a.x + b * 32;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Block* blk = rows[r] + b;
      __m256 q[4];  // values 0-7, 8-15, 16-23, 24-31
      if constexpr (T == DType::Q8_0) {
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs + 16));
        q[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0));
        q[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8)));
        q[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1));
        q[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8)));
      } else {  // byte j holds value j (low nibble) and value j + 16 (high nibble)
        const __m128i qb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs));
        const __m256i v0 = _mm256_cvtepu8_epi32(qb), v1 = _mm256_cvtepu8_epi32(_mm_srli_si128(qb, 8));
        q[0] = _mm256_cvtepi32_ps(_mm256_and_si256(v0, m4));
        q[1] = _mm256_cvtepi32_ps(_mm256_and_si256(v1, m4));
        q[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4));
        q[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4));
      }
      __m256 t = _mm256_mul_ps(q[0], _mm256_loadu_ps(xb));
      t = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xb + 8), t);
      t = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), t);
      t = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), t);
      const float d = h2f(blk->d);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc[r]);
      if constexpr (T == DType::Q4_0) csum[r] += -8.f * d * xsum[b];
      if constexpr (T == DType::Q4_1) csum[r] += h2f(blk->m) * xsum[b];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a.y[n + r] = hsum(acc[r]) + csum[r];
}

template <DType T, int M>
void gemv(const MatmulArgs& a) {
  constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);
  const int64_t tiles = a.N / R;
  if constexpr (M == 1 && !is_plain(T)) {
    const int64_t nb = a.K >> 5;
    float* xsum = static_cast<float*>(thread_scratch(kScratchBlockSums, size_t(nb) * sizeof(float)));
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = a.x + 32 * b;
      xsum[b] = hsum(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                   _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
    }
#pragma omp parallel for schedule(static) if (a.N * a.K >= (1 << 16))
    for (int64_t t = 0; t < tiles; ++t) gemv_tile_factored<T, R>(a, t * R, xsum);
    for (int64_t n = tiles * R; n < a.N; ++n) gemv_tile_factored<T, 1>(a, n, xsum);
    return;
  }
#pragma omp parallel for schedule(static) if (a.N * a.K * M >= (1 << 16))
  for (int64_t t = 0; t < tiles; ++t) gemv_tile<T, M, R>(a, t * R);
  for (int64_t n = tiles * R; n < a.N; ++n) gemv_tile<T, M, 1>(a, n);
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

constexpr int kMP = 16;  // activation rows per panel (2 ymm)
constexpr int kNR = 6;   // weight rows per micro-tile
constexpr int kNB = 48;  // weight rows converted per panel (8 micro-tiles)

// y[i, r] (i < mvalid, r < NRW) = sum_k w[r, k] * xt[k, i]; xt: K x kMP (32-byte aligned).
template <int NRW, int MV>
void micro_f32(const float* w, int64_t ldw, const float* xt, int64_t K, float* y, int64_t ldy, int mvalid) {
  __m256 acc[NRW][MV];
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = _mm256_load_ps(xt + k * kMP + 8 * v);
    for (int r = 0; r < NRW; ++r) {
      const __m256 b = _mm256_set1_ps(w[r * ldw + k]);
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  alignas(32) float tmp[kMP] = {};
#pragma GCC unroll 16
  for (int r = 0; r < NRW; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) _mm256_store_ps(tmp + 8 * v, acc[r][v]);
    for (int i = 0; i < mvalid; ++i) y[i * ldy + r] = tmp[i];
  }
}

using MicroF32 = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int);
template <int... R>
constexpr MicroF32 kMicroF32Table[2][sizeof...(R)] = {{micro_f32<R, 1>...}, {micro_f32<R, 2>...}};
constexpr const auto& kMicroF32 = kMicroF32Table<1, 2, 3, 4, 5, 6>;

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

// rows x K weight values starting at row `src` to f32, row stride ldd floats.
template <DType T>
void convert_rows(const uint8_t* src, size_t row_bytes, int64_t rows, int64_t K, float* dst, int64_t ldd) {
  const int64_t K32 = K & ~int64_t(31);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + size_t(r) * row_bytes;
    float* out = dst + r * ldd;
    for (int64_t k = 0; k < K32; k += 32) {
      __m256 w[4];
      load32<T>(row, k, w);
#pragma GCC unroll 16
      for (int q = 0; q < 4; ++q) _mm256_storeu_ps(out + k + 8 * q, w[q]);
    }
    if constexpr (is_plain(T)) {
      for (int64_t k = K32; k < K; ++k) out[k] = elem<T>(row, k);
    }
  }
}

template <DType T>
void gemm(const MatmulArgs& a) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const int64_t m_panels = (M + kMP - 1) / kMP, n_panels = (N + kNB - 1) / kNB;
  // Scratch is taken by the calling thread only, so allocation failures surface here.
  float* xt =
      static_cast<float*>(thread_scratch(kScratchActivations, size_t(m_panels) * size_t(K) * kMP * 4));
  const int nthreads = omp_get_max_threads();
  // Per-thread f32 weight panels nthreads x [kNB][ldw]; the row stride is padded by a cache line so
  // the rows a micro-kernel broadcasts from do not all map to one L1 set.
  const int64_t ldw = ((K + 15) & ~int64_t(15)) + 16;
  float* wbuf_all =
      static_cast<float*>(thread_scratch(kScratchWeights, size_t(nthreads) * kNB * size_t(ldw) * 4));
#pragma omp parallel num_threads(nthreads) if (M * N * K >= (1 << 18))
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < m_panels; ++p) transpose_panel_f32(a.x, M, K, p, xt + p * K * kMP);
    float* wf = wbuf_all + size_t(omp_get_thread_num()) * kNB * size_t(ldw);
#pragma omp for schedule(static)
    for (int64_t np = 0; np < n_panels; ++np) {
      const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
      convert_rows<T>(a.w + size_t(n0) * a.w_row_bytes, a.w_row_bytes, nrows, K, wf, ldw);
      for (int64_t p = 0; p < m_panels; ++p) {
        const int64_t m0 = p * kMP;
        const int mvalid = int(min64(kMP, M - m0));
        for (int64_t r0 = 0; r0 < nrows; r0 += kNR) {
          const int nr = int(min64(kNR, nrows - r0));
          kMicroF32[mvalid > 8 ? 1 : 0][nr - 1](wf + r0 * ldw, ldw, xt + p * K * kMP, K,
                                                a.y + m0 * N + n0 + r0, N, mvalid);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- batch-invariant (any M)

// MatmulArgs::batch_invariant: every y[m, n] is computed as gemv_tile with ONE accumulator computes it
// (an FMA chain over k in order, one reduction, the same tail), so a row's result depends neither on
// M nor on the other rows. M <= 4 streams the weights as the GEMV does; larger M converts panels of
// kNB weight rows to f32 once (the very values load32 produces in registers) and runs the same tile
// over that copy, 4 activation rows at a time.
template <DType T, int M>
void gemv_invariant(const MatmulArgs& a) {
  constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);
  const int64_t tiles = a.N / R;
#pragma omp parallel for schedule(static) if (a.N * a.K * M >= (1 << 16))
  for (int64_t t = 0; t < tiles; ++t) gemv_tile<T, M, R, 1>(a, t * R);
  for (int64_t n = tiles * R; n < a.N; ++n) gemv_tile<T, M, 1, 1>(a, n);
}

template <int MC>
LR_INLINE void invariant_rows(const MatmulArgs& s, int64_t nrows) {
  for (int64_t r = 0; r < nrows; ++r) gemv_tile<DType::F32, MC, 1, 1>(s, r);
}

template <DType T>
void matmul_invariant(const MatmulArgs& a) {
  switch (a.M) {
    case 1:
      return gemv_invariant<T, 1>(a);
    case 2:
      return gemv_invariant<T, 2>(a);
    case 3:
      return gemv_invariant<T, 3>(a);
    case 4:
      return gemv_invariant<T, 4>(a);
    default:
      break;
  }
  const int64_t M = a.M, N = a.N, K = a.K;
  const int64_t n_panels = (N + kNB - 1) / kNB;
  const int nthreads = omp_get_max_threads();
  float* wbuf_all = nullptr;  // nthreads x [kNB][K]
  if (T != DType::F32)
    wbuf_all = static_cast<float*>(thread_scratch(kScratchWeights, size_t(nthreads) * kNB * size_t(K) * 4));
#pragma omp parallel for num_threads(nthreads) schedule(static) if (M * N * K >= (1 << 18))
  for (int64_t np = 0; np < n_panels; ++np) {
    const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
    MatmulArgs s = a;
    s.dtype = DType::F32;
    s.w = a.w + size_t(n0) * a.w_row_bytes;
    if constexpr (T != DType::F32) {
      float* wbuf = wbuf_all + size_t(omp_get_thread_num()) * kNB * size_t(K);
      convert_rows<T>(s.w, a.w_row_bytes, nrows, K, wbuf, K);
      s.w = reinterpret_cast<const uint8_t*>(wbuf);
      s.w_row_bytes = size_t(K) * 4;
    }
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      s.x = a.x + m0 * K;
      s.y = a.y + m0 * N + n0;
      switch (min64(4, M - m0)) {
        case 1:
          invariant_rows<1>(s, nrows);
          break;
        case 2:
          invariant_rows<2>(s, nrows);
          break;
        case 3:
          invariant_rows<3>(s, nrows);
          break;
        default:
          invariant_rows<4>(s, nrows);
      }
    }
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

void matmul_avx2(const MatmulArgs& a) {
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
      fail("matmul: no AVX2 kernel for ", dtype_name(a.dtype), " weights");
  }
}

}  // namespace llamarun::cpu
