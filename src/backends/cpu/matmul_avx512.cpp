// AVX-512 matmul (built with -mavx512f/bw/vl/dq/bf16 because of the _avx512 suffix; entered only
// when the CPU has them). Everything but the entry point has internal linkage, and this file calls
// no inline functions of shared headers, so no AVX-512 code can be picked by the linker for
// baseline callers.
//
// Two shapes of work:
//  - M <= 8 (decode): memory-bound GEMV. Each weight row is streamed once and its blocks are
//    dequantised in registers, then dotted against all M activation rows (f32 activations, f32
//    accumulation, activations never quantised). Rows are split over threads in static chunks.
//  - M > 8 (prefill): compute-bound GEMM. x is transposed once into panels xt[K][32] (32 activation
//    rows side by side); each thread converts a panel of 48 weight rows to f32 once (kept in L2)
//    and runs a 12 x 32 register-blocked micro-kernel (24 zmm accumulators: 12 weight rows
//    broadcast, 2 vectors of 16 activation rows) over the whole K for every activation panel.
//    For BF16 weights with MatmulArgs::bf16_dot, the activations are ROUNDED TO BF16 (round to
//    nearest even, as PyTorch's bf16 matmul does) and the micro-kernel uses vdpbf16ps on (k, k+1)
//    pairs straight from the stored weight rows, with f32 accumulation.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "backends/cpu/kernels.h"
#include "backends/cpu/scratch.h"

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
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i l = _mm_sub_epi8(_mm_and_si128(q, m4), eight);                     // values 0..15, minus 8
    const __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);  // values 16..31
    lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(l)));  // d * (q - 8), as the reference
    hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(h)));
  } else {  // Q4_1
    const BlockQ4_1* b = reinterpret_cast<const BlockQ4_1*>(row) + (k >> 5);
    const __m512 d = _mm512_set1_ps(h2f(b->d)), m = _mm512_set1_ps(h2f(b->m));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i l = _mm_and_si128(q, m4), h = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(l)), d, m);
    hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(h)), d, m);
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

// y[m, n + r] for r < R, m < M: R weight rows streamed together, 2 accumulators per (r, m).
template <DType T, int M, int R>
LR_INLINE void gemv_tile(const MatmulArgs& a, int64_t n) {
  const int64_t K = a.K, K32 = K & ~int64_t(31);
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = a.w + size_t(n + r) * a.w_row_bytes;
  __m512 acc[R][M][2];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m][0] = acc[r][m][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K32; k += 32) {
    __m512 w[R][2];
    for (int r = 0; r < R; ++r) load32<T>(rows[r], k, w[r][0], w[r][1]);
    for (int m = 0; m < M; ++m) {
      const __m512 x0 = _mm512_loadu_ps(a.x + m * K + k), x1 = _mm512_loadu_ps(a.x + m * K + k + 16);
      for (int r = 0; r < R; ++r) {
        acc[r][m][0] = _mm512_fmadd_ps(w[r][0], x0, acc[r][m][0]);
        acc[r][m][1] = _mm512_fmadd_ps(w[r][1], x1, acc[r][m][1]);
      }
    }
  }
  float tail[R][M] = {};
  if constexpr (is_plain(T)) {
    for (int64_t k = K32; k < K; ++k)
      for (int r = 0; r < R; ++r)
        for (int m = 0; m < M; ++m) tail[r][m] += elem<T>(rows[r], k) * a.x[m * K + k];
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m)
      a.y[m * a.N + n + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][m][0], acc[r][m][1])) + tail[r][m];
}

template <DType T, int M>
void gemv(const MatmulArgs& a) {
  constexpr int R = M <= 2 ? 4 : (M <= 4 ? 2 : 1);
  const int64_t tiles = a.N / R;
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

constexpr int kMP = 32;  // activation rows per panel (2 zmm)
constexpr int kNR = 12;  // weight rows per micro-tile
constexpr int kNB = 48;  // weight rows converted per panel (4 micro-tiles)

// y[i, r] (i < mvalid, r < NRW; y row stride ldy) = sum_k w[r, k] * xt[k, i].
// w: NRW rows of f32, stride ldw; xt: K x kMP f32 (64-byte aligned). MV = zmm per k (1 or 2).
template <int NRW, int MV>
void micro_f32(const float* w, int64_t ldw, const float* xt, int64_t K, float* y, int64_t ldy, int mvalid) {
  __m512 acc[NRW][MV];
  for (int r = 0; r < NRW; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = _mm512_load_ps(xt + k * kMP + 16 * v);
    for (int r = 0; r < NRW; ++r) {
      const __m512 b = _mm512_set1_ps(w[r * ldw + k]);
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  alignas(64) float tmp[kMP] = {};
  for (int r = 0; r < NRW; ++r) {
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
  for (int r = 0; r < NRW; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t K2 = K >> 1;
  for (int64_t j = 0; j < K2; ++j) {
    __m512bh xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = (__m512bh)_mm512_load_si512(xt + j * kMP + 16 * v);
    for (int r = 0; r < NRW; ++r) {
      uint32_t pair;
      std::memcpy(&pair, w + r * ldw + 2 * j, 4);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(int(pair));
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], b, xv[v]);
    }
  }
  if (K & 1) {  // last, unpaired k: weight pair (w[K-1], 0)
    __m512bh xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = (__m512bh)_mm512_load_si512(xt + K2 * kMP + 16 * v);
    for (int r = 0; r < NRW; ++r) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(int(uint32_t(w[r * ldw + K - 1])));
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], b, xv[v]);
    }
  }
  alignas(64) float tmp[kMP] = {};
  for (int r = 0; r < NRW; ++r) {
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

// rows x K weight values starting at row `src` to f32, row stride K.
template <DType T>
void convert_rows(const uint8_t* src, size_t row_bytes, int64_t rows, int64_t K, float* dst) {
  const int64_t K32 = K & ~int64_t(31);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + size_t(r) * row_bytes;
    float* out = dst + r * K;
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
  // Per-thread f32 weight panels: nthreads x [kNB][K].
  float* wbuf_all = nullptr;
  if (T != DType::F32 && !bf)
    wbuf_all = static_cast<float*>(thread_scratch(kScratchWeights, size_t(nthreads) * kNB * size_t(K) * 4));
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
    float* wbuf = wbuf_all ? wbuf_all + size_t(omp_get_thread_num()) * kNB * size_t(K) : nullptr;
#pragma omp for schedule(static)
    for (int64_t np = 0; np < n_panels; ++np) {
      const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
      const uint8_t* wsrc = a.w + size_t(n0) * a.w_row_bytes;
      const float* wf = nullptr;
      int64_t ldw = K;
      if constexpr (T == DType::F32) {
        wf = reinterpret_cast<const float*>(wsrc);
        ldw = int64_t(a.w_row_bytes / 4);
      } else {
        if (!bf) {
          convert_rows<T>(wsrc, a.w_row_bytes, nrows, K, wbuf);
          wf = wbuf;
        }
      }
      for (int64_t p = 0; p < m_panels; ++p) {
        const int64_t m0 = p * kMP;
        const int mvalid = int(min64(kMP, M - m0));
        const int mv_idx = mvalid > 16 ? 1 : 0;
        for (int64_t r0 = 0; r0 < nrows; r0 += kNR) {
          const int nr = int(min64(kNR, nrows - r0));
          float* yt = a.y + m0 * N + n0 + r0;
          if (bf) {
            const uint16_t* wb = reinterpret_cast<const uint16_t*>(wsrc) + r0 * int64_t(a.w_row_bytes / 2);
            kMicroBf16[mv_idx][nr - 1](wb, int64_t(a.w_row_bytes / 2),
                                       static_cast<const uint32_t*>(xt) + p * K2 * kMP, K, yt, N, mvalid);
          } else {
            kMicroF32[mv_idx][nr - 1](wf + r0 * ldw, ldw, static_cast<const float*>(xt) + p * K * kMP, K, yt,
                                      N, mvalid);
          }
        }
      }
    }
  }
}

template <DType T>
void matmul_t(const MatmulArgs& a) {
  if (a.M <= 8 && !a.batch_invariant)
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
  }
}

}  // namespace llamarun::cpu
