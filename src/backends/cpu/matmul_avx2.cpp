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

#include "backends/cpu/kernels.h"
#include "backends/cpu/scratch.h"

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
    for (int q = 0; q < 4; ++q) w[q] = _mm256_loadu_ps(p + 8 * q);
  } else if constexpr (T == DType::F16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
    for (int q = 0; q < 4; ++q)
      w[q] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * q)));
  } else if constexpr (T == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
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

// y[m, n + r] for r < R, m < M. A accumulators per (r, m) (2 when registers allow).
template <DType T, int M, int R>
LR_INLINE void gemv_tile(const MatmulArgs& a, int64_t n) {
  constexpr int A = (R * M * 2 <= 10) ? 2 : 1;
  const int64_t K = a.K, K32 = K & ~int64_t(31);
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = a.w + size_t(n + r) * a.w_row_bytes;
  __m256 acc[R][M][A];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < A; ++j) acc[r][m][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K32; k += 32) {
    for (int r = 0; r < R; ++r) {
      __m256 w[4];
      load32<T>(rows[r], k, w);
      for (int m = 0; m < M; ++m) {
        const float* xm = a.x + m * K + k;
        for (int q = 0; q < 4; ++q)
          acc[r][m][q % A] = _mm256_fmadd_ps(w[q], _mm256_loadu_ps(xm + 8 * q), acc[r][m][q % A]);
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
    for (int m = 0; m < M; ++m) {
      __m256 s = acc[r][m][0];
      if constexpr (A == 2) s = _mm256_add_ps(s, acc[r][m][1]);
      a.y[m * a.N + n + r] = hsum(s) + tail[r][m];
    }
}

template <DType T, int M>
void gemv(const MatmulArgs& a) {
  constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);
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

constexpr int kMP = 16;  // activation rows per panel (2 ymm)
constexpr int kNR = 6;   // weight rows per micro-tile
constexpr int kNB = 48;  // weight rows converted per panel (8 micro-tiles)

// y[i, r] (i < mvalid, r < NRW) = sum_k w[r, k] * xt[k, i]; xt: K x kMP (32-byte aligned).
template <int NRW, int MV>
void micro_f32(const float* w, int64_t ldw, const float* xt, int64_t K, float* y, int64_t ldy, int mvalid) {
  __m256 acc[NRW][MV];
  for (int r = 0; r < NRW; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = _mm256_load_ps(xt + k * kMP + 8 * v);
    for (int r = 0; r < NRW; ++r) {
      const __m256 b = _mm256_broadcast_ss(w + r * ldw + k);
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  alignas(32) float tmp[kMP] = {};
  for (int r = 0; r < NRW; ++r) {
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

template <DType T>
void convert_rows(const uint8_t* src, size_t row_bytes, int64_t rows, int64_t K, float* dst) {
  const int64_t K32 = K & ~int64_t(31);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + size_t(r) * row_bytes;
    float* out = dst + r * K;
    for (int64_t k = 0; k < K32; k += 32) {
      __m256 w[4];
      load32<T>(row, k, w);
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
  float* wbuf_all = nullptr;  // nthreads x [kNB][K]
  if (T != DType::F32)
    wbuf_all = static_cast<float*>(thread_scratch(kScratchWeights, size_t(nthreads) * kNB * size_t(K) * 4));
#pragma omp parallel num_threads(nthreads) if (M * N * K >= (1 << 18))
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < m_panels; ++p) transpose_panel_f32(a.x, M, K, p, xt + p * K * kMP);
    float* wbuf = wbuf_all ? wbuf_all + size_t(omp_get_thread_num()) * kNB * size_t(K) : nullptr;
#pragma omp for schedule(static)
    for (int64_t np = 0; np < n_panels; ++np) {
      const int64_t n0 = np * kNB, nrows = min64(kNB, N - n0);
      const uint8_t* wsrc = a.w + size_t(n0) * a.w_row_bytes;
      const float* wf;
      int64_t ldw = K;
      if constexpr (T == DType::F32) {
        wf = reinterpret_cast<const float*>(wsrc);
        ldw = int64_t(a.w_row_bytes / 4);
      } else {
        convert_rows<T>(wsrc, a.w_row_bytes, nrows, K, wbuf);
        wf = wbuf;
      }
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

template <DType T>
void matmul_t(const MatmulArgs& a) {
  if (a.M <= 8 && !a.batch_invariant)
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
  }
}

}  // namespace llamarun::cpu
