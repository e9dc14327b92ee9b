// AVX2 + FMA + F16C versions of the small forward-pass ops (contracts in kernels.h). Built with
// -mavx2 -mfma -mf16c (file suffix); internal helpers only, no inline functions of shared headers.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "backends/cpu/kernels.h"

namespace llamarun::cpu {
namespace {

#define LR_INLINE inline __attribute__((always_inline))

LR_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
LR_INLINE float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Mask with the first `n` (0..8) lanes set, for maskload/maskstore of tails.
LR_INLINE __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), idx);
}

// exp(x) for f32 lanes: range reduction x = n ln2 + r (|r| <= ln2/2, ln2 in two parts), a degree-6
// polynomial for e^r (Cephes expf coefficients), then scaling by 2^n through the exponent bits.
// Error about 1 ulp; inputs below about -87.3 give 0 (so -inf gives 0), above 88.38 give inf.
LR_INLINE __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654475f), _CMP_LT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n: n in [-127, 128]; n = 128 gives the inf pattern, n = -127 gives 0 (no denormals).
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, res);
}

// 8 weight values at i as f32.
LR_INLINE __m256 load_weight8(DType wt, const void* w, int64_t i) {
  if (wt == DType::F16)
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  if (wt == DType::BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i))),
        16));
  return _mm256_loadu_ps(static_cast<const float*>(w) + i);
}
LR_INLINE float weight_at(DType wt, const void* w, int64_t i) {
  if (wt == DType::F32) return static_cast<const float*>(w)[i];
  const uint16_t h = static_cast<const uint16_t*>(w)[i];
  if (wt == DType::F16) return _cvtsh_ss(h);
  uint32_t u = uint32_t(h) << 16;  // BF16
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i < n; i += 8) {
    const bool full = i + 8 <= n;
    const __m256i mask = tail_mask(n - i);
    const __m256 g = full ? _mm256_loadu_ps(gate + i) : _mm256_maskload_ps(gate + i, mask);
    const __m256 u = full ? _mm256_loadu_ps(up + i) : _mm256_maskload_ps(up + i, mask);
    const __m256 e = exp256(_mm256_xor_ps(g, sign));  // exp(-g)
    const __m256 r = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u);
    if (full)
      _mm256_storeu_ps(out + i, r);
    else
      _mm256_maskstore_ps(out + i, mask, r);
  }
}

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
         s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

namespace {

// The 8 lane sums of one score reduced in a fixed order, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)),
// whether four keys are reduced together (reduce4) or one alone (reduce1): a score does not depend on the
// keys beside it.
LR_INLINE __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m128 h0 = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
  const __m128 h1 = _mm_add_ps(_mm256_castps256_ps128(a1), _mm256_extractf128_ps(a1, 1));
  const __m128 h2 = _mm_add_ps(_mm256_castps256_ps128(a2), _mm256_extractf128_ps(a2, 1));
  const __m128 h3 = _mm_add_ps(_mm256_castps256_ps128(a3), _mm256_extractf128_ps(a3, 1));
  // t01 = (h0[0] + h0[2], h1[0] + h1[2], h0[1] + h0[3], h1[1] + h1[3]), t23 likewise
  const __m128 t01 = _mm_add_ps(_mm_unpacklo_ps(h0, h1), _mm_unpackhi_ps(h0, h1));
  const __m128 t23 = _mm_add_ps(_mm_unpacklo_ps(h2, h3), _mm_unpackhi_ps(h2, h3));
  // key k: (h[0] + h[2]) + (h[1] + h[3])
  return _mm_add_ps(_mm_movelh_ps(t01, t23), _mm_movehl_ps(t23, t01));
}
LR_INLINE float reduce1(__m256 a) {
  alignas(32) float l[8];
  _mm256_store_ps(l, a);
  const float h[4] = {l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]};
  return (h[0] + h[2]) + (h[1] + h[3]);
}

}  // namespace

// Two query rows x four keys at a time (8 accumulators; each key's 8 values loaded once for both rows),
// lane l of an accumulator summing dimensions l, l + 8, ... in order; odd rows and key tails alone, with the
// same per-score order.
void dot_rows_avx2(const float* q, int64_t R, const float* k, int64_t d, int64_t n, float scale, float* s,
                   int64_t lds) {
  if (d % 8) return dot_rows_scalar(q, R, k, d, n, scale, s, lds);
  const __m128 vs = _mm_set1_ps(scale);
  int64_t r = 0;
  for (; r + 2 <= R; r += 2) {
    const float* q0 = q + r * d;
    const float* q1 = q0 + d;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* k0 = k + j * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int64_t i = 0; i < d; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(q0 + i), x1 = _mm256_loadu_ps(q1 + i);
        const __m256 c0 = _mm256_loadu_ps(k0 + i), c1 = _mm256_loadu_ps(k0 + d + i),
                     c2 = _mm256_loadu_ps(k0 + 2 * d + i), c3 = _mm256_loadu_ps(k0 + 3 * d + i);
        a0 = _mm256_fmadd_ps(x0, c0, a0), b0 = _mm256_fmadd_ps(x1, c0, b0);
        a1 = _mm256_fmadd_ps(x0, c1, a1), b1 = _mm256_fmadd_ps(x1, c1, b1);
        a2 = _mm256_fmadd_ps(x0, c2, a2), b2 = _mm256_fmadd_ps(x1, c2, b2);
        a3 = _mm256_fmadd_ps(x0, c3, a3), b3 = _mm256_fmadd_ps(x1, c3, b3);
      }
      _mm_storeu_ps(s + r * lds + j, _mm_mul_ps(reduce4(a0, a1, a2, a3), vs));
      _mm_storeu_ps(s + (r + 1) * lds + j, _mm_mul_ps(reduce4(b0, b1, b2, b3), vs));
    }
    for (; j < n; ++j) {
      const float* kj = k + j * d;
      __m256 a = _mm256_setzero_ps(), b = a;
      for (int64_t i = 0; i < d; i += 8) {
        const __m256 c = _mm256_loadu_ps(kj + i);
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + i), c, a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + i), c, b);
      }
      s[r * lds + j] = reduce1(a) * scale;
      s[(r + 1) * lds + j] = reduce1(b) * scale;
    }
  }
  for (; r < R; ++r) {
    const float* q0 = q + r * d;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* k0 = k + j * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 0; i < d; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(q0 + i);
        a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k0 + i), a0);
        a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k0 + d + i), a1);
        a2 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k0 + 2 * d + i), a2);
        a3 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k0 + 3 * d + i), a3);
      }
      _mm_storeu_ps(s + r * lds + j, _mm_mul_ps(reduce4(a0, a1, a2, a3), vs));
    }
    for (; j < n; ++j) {
      const float* kj = k + j * d;
      __m256 a = _mm256_setzero_ps();
      for (int64_t i = 0; i < d; i += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + i), _mm256_loadu_ps(kj + i), a);
      s[r * lds + j] = reduce1(a) * scale;
    }
  }
}

// out[r] += p[r][j] * v[j] for j = 0, 1, ... in order, lane by lane: two rows at a time over 32 dimensions
// (8 accumulators, each value vector loaded once for both rows), an odd row over 64; the same per-lane order.
void axpy_rows_avx2(const float* p, int64_t ldp, int64_t R, const float* v, int64_t d, int64_t n,
                    float* out) {
  if (d % 8) return axpy_rows_scalar(p, ldp, R, v, d, n, out);
  int64_t r = 0;
  for (; r + 2 <= R; r += 2) {
    const float* p0 = p + r * ldp;
    const float* p1 = p0 + ldp;
    float* o0 = out + r * d;
    float* o1 = o0 + d;
    for (int64_t i0 = 0; i0 < d; i0 += 32) {
      const int64_t w = (d - i0 < 32 ? d - i0 : 32) / 8;  // vectors in this chunk
      __m256 a[4], b[4];
      for (int64_t c = 0; c < w; ++c)
        a[c] = _mm256_loadu_ps(o0 + i0 + 8 * c), b[c] = _mm256_loadu_ps(o1 + i0 + 8 * c);
      if (w == 4) {
        for (int64_t j = 0; j < n; ++j) {
          const __m256 x0 = _mm256_set1_ps(p0[j]), x1 = _mm256_set1_ps(p1[j]);
          const float* vj = v + j * d + i0;
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) {
            const __m256 y = _mm256_loadu_ps(vj + 8 * c);
            a[c] = _mm256_fmadd_ps(x0, y, a[c]);
            b[c] = _mm256_fmadd_ps(x1, y, b[c]);
          }
        }
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const __m256 x0 = _mm256_set1_ps(p0[j]), x1 = _mm256_set1_ps(p1[j]);
          const float* vj = v + j * d + i0;
          for (int64_t c = 0; c < w; ++c) {
            const __m256 y = _mm256_loadu_ps(vj + 8 * c);
            a[c] = _mm256_fmadd_ps(x0, y, a[c]);
            b[c] = _mm256_fmadd_ps(x1, y, b[c]);
          }
        }
      }
      for (int64_t c = 0; c < w; ++c)
        _mm256_storeu_ps(o0 + i0 + 8 * c, a[c]), _mm256_storeu_ps(o1 + i0 + 8 * c, b[c]);
    }
  }
  for (; r < R; ++r) {
    const float* p0 = p + r * ldp;
    float* o0 = out + r * d;
    for (int64_t i0 = 0; i0 < d; i0 += 64) {
      const int64_t w = (d - i0 < 64 ? d - i0 : 64) / 8;
      __m256 acc[8];
      for (int64_t c = 0; c < w; ++c) acc[c] = _mm256_loadu_ps(o0 + i0 + 8 * c);
      if (w == 8) {
        for (int64_t j = 0; j < n; ++j) {
          const __m256 x = _mm256_set1_ps(p0[j]);
          const float* vj = v + j * d + i0;
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) acc[c] = _mm256_fmadd_ps(x, _mm256_loadu_ps(vj + 8 * c), acc[c]);
        }
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const __m256 x = _mm256_set1_ps(p0[j]);
          const float* vj = v + j * d + i0;
          for (int64_t c = 0; c < w; ++c) acc[c] = _mm256_fmadd_ps(x, _mm256_loadu_ps(vj + 8 * c), acc[c]);
        }
      }
      for (int64_t c = 0; c < w; ++c) _mm256_storeu_ps(o0 + i0 + 8 * c, acc[c]);
    }
  }
}

// Vector max, exp256 (about 1 ulp), an f32 sum in 8 lanes reduced in a fixed order, one reciprocal: every
// value depends only on the row and n (the tail is masked, not handled by scalar code).
void softmax_avx2(float* s, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 vm = ninf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + i));
  const __m256i tail = tail_mask(n - i);
  if (i < n)
    vm =
        _mm256_max_ps(vm, _mm256_blendv_ps(ninf, _mm256_maskload_ps(s + i, tail), _mm256_castsi256_ps(tail)));
  const __m256 mx = _mm256_set1_ps(hmax(vm));
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), mx));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const __m256 e =
        _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(s + i, tail), mx)), _mm256_castsi256_ps(tail));
    _mm256_maskstore_ps(s + i, tail, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), inv));
  if (i < n) _mm256_maskstore_ps(s + i, tail, _mm256_mul_ps(_mm256_maskload_ps(s + i, tail), inv));
}

}  // namespace llamarun::cpu
