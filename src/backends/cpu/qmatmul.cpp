// The int8-activation matmul driver (qdot.h): activation quantisation and the row loop. Built at the
// baseline ISA: the per-level work is in the dot functions it is handed.
#include <emmintrin.h>
#include <omp.h>

#include <cmath>

#include "backends/cpu/kernels.h"
#include "backends/cpu/qdot.h"
#include "backends/cpu/scratch.h"

namespace llamarun::cpu {
namespace {

bool is_super(DType w) {
  switch (w) {
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

// q = round-to-nearest-even(x * 127 / amax), in [-127, 127]; returns d = amax / 127.
float quantize_block(const float* x, int n, int8_t* q) {
  // max |x| (n is a multiple of 32) with SSE2 (the baseline ISA), as std::fmax here is a libm call per
  // value. maxps returns its second operand when either is NaN: NaNs in x are skipped, as fmax does.
  const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  __m128 m0 = _mm_setzero_ps(), m1 = _mm_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    m0 = _mm_max_ps(_mm_and_ps(_mm_loadu_ps(x + i), abs_mask), m0);
    m1 = _mm_max_ps(_mm_and_ps(_mm_loadu_ps(x + i + 4), abs_mask), m1);
  }
  m0 = _mm_max_ps(m0, m1);
  m0 = _mm_max_ps(m0, _mm_movehl_ps(m0, m0));
  m0 = _mm_max_ss(m0, _mm_shuffle_ps(m0, m0, 1));
  const float amax = _mm_cvtss_f32(m0);
  if (amax == 0) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    return 0;
  }
  const float id = 127.f / amax;
  // Round to nearest even by adding and subtracting 1.5 * 2^23 (exact for |v| < 2^22; here |v| <= 127):
  // no libm call (std::nearbyint is one at the baseline ISA), and the loop vectorises.
  constexpr float kMagic = 12582912.f;
  for (int i = 0; i < n; ++i) {
    const float v = (x[i] * id + kMagic) - kMagic;
    q[i] = int8_t(v > 127.f ? 127 : (v < -127.f ? -127 : int(v)));
  }
  return amax / 127.f;
}

}  // namespace

// Q8_0 / Q4_0 / Q4_1 have both paths. Measured (bench_ops qgemv/qgemm, N = K = 2048, one thread's CPU
// time, the 2-vCPU AVX-512 Xeon), the int8 path is faster except for the free-order prefill GEMM: M = 1:
// 1.14x (Q8_0), 1.55x (Q4_0), 1.6x (Q4_1); M = 512 batch-invariant: 1.46x / 1.32x / 1.18x; M = 512 free
// order: 0.6-0.9x, unless the level's tile decodes each weight row once (QTile::prep, the AVX-512 VNNI
// and AVX2 tiles): 2.0-2.4x there (9.0-10.8 against 21.6-22.2 ms, 2-vCPU AMD EPYC with AVX-512, 2026-12-07),
// and 1.1-1.7x for the AVX2 tile on the same machine (19.3 / 15.8 / 14.0 against 21.3 / 21.8 / 23.9 ms).
// Models take it unless run with f32 activations (`--act f32`, which the golden tests use: they hold these
// types to f32-activation accuracy against transformers on the dequantised weights).
bool qdot_uses_int8(DType w, int64_t M, bool batch_invariant, bool allow_int8, bool prep_tile) {
  switch (w) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
      return allow_int8 && (M <= 8 || batch_invariant || prep_tile);
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

DType qdot_act_type(DType w) { return is_super(w) ? DType::Q8_K : DType::Q8_0; }

size_t qdot_act_row_bytes(DType w, int64_t K) {
  return is_super(w) ? size_t(K / 256) * sizeof(BlockQ8_K) : size_t(K / 32) * sizeof(BlockQ8A32);
}

void quantize_act_row(DType w, const float* x, void* act, int64_t K) {
  if (is_super(w)) {
    auto* b = static_cast<BlockQ8_K*>(act);
    for (int64_t i = 0; i < K / 256; ++i) {
      b[i].d = quantize_block(x + 256 * i, 256, b[i].qs);
      for (int j = 0; j < 16; ++j) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += b[i].qs[16 * j + l];
        b[i].bsums[j] = int16_t(s);
      }
    }
  } else {
    auto* b = static_cast<BlockQ8A32*>(act);
    for (int64_t i = 0; i < K / 32; ++i) {
      b[i].d = quantize_block(x + 32 * i, 32, b[i].qs);
      int s = 0;
      for (int l = 0; l < 32; ++l) s += b[i].qs[l];
      b[i].sum = s;
    }
  }
}

void qmatmul(const MatmulArgs& a, QDot dot) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const size_t arb = qdot_act_row_bytes(a.dtype, K);
  // Quantised activations, shared by all threads; taken by the calling thread so allocation errors
  // surface here.
  uint8_t* act = static_cast<uint8_t*>(thread_scratch(kScratchActivations, size_t(M) * arb));
  const bool par = N * K * M >= (1 << 16);
  // A few rows (decode) are quantised by the calling thread: cheaper than a second barrier.
  const bool serial_act = M <= 8;
  // A tile that sums in its own order only where a row's result may depend on the batch.
  const QTile& tile = dot.free_tile.fn && !a.batch_invariant ? dot.free_tile : dot.tile;
  const bool use_tile = tile.fn && dot.rows && (tile.exact || !a.batch_invariant) && M >= tile.m;
  // Tiles that read packed activation groups: M / tile.m groups, packed once, shared by all threads.
  const int64_t groups = use_tile && tile.pack ? M / tile.m : 0;
  const size_t gbytes = groups ? tile.packed_bytes(K) : 0;
  uint8_t* packed =
      groups ? static_cast<uint8_t*>(thread_scratch(kScratchWeights, size_t(groups) * gbytes)) : nullptr;
  // Tiles that read decoded weight rows: one buffer per thread, taken here so allocation errors surface
  // outside the parallel region.
  const int nthreads = omp_get_max_threads();
  const size_t pbytes = use_tile && tile.prep ? (tile.prep_bytes(K) + 63) & ~size_t(63) : 0;
  uint8_t* prepped =
      pbytes ? static_cast<uint8_t*>(thread_scratch(kScratchTileWeights, size_t(nthreads) * pbytes))
             : nullptr;
  if (serial_act)
    for (int64_t m = 0; m < M; ++m) quantize_act_row(a.dtype, a.x + m * K, act + size_t(m) * arb, K);
#pragma omp parallel num_threads(nthreads) if (par)
  {
    if (!serial_act) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m) quantize_act_row(a.dtype, a.x + m * K, act + size_t(m) * arb, K);
    }
    if (groups) {
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g)
        tile.pack(K, act + size_t(g * tile.m) * arb, arb, packed + size_t(g) * gbytes);
    }
    // Tiles of kR weight rows (a few KiB, kept in L1) against every activation row.
    constexpr int64_t kR = 16;
    const int64_t tiles = (N + kR - 1) / kR;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t n0 = t * kR, n1 = n0 + kR < N ? n0 + kR : N;
      int64_t m = 0;
      if (prepped) {  // each tile's weight rows decoded once, then against every group of activation rows
        uint8_t* wbuf = prepped + size_t(omp_get_thread_num()) * pbytes;
        const int64_t mt = M - M % tile.m;
        int64_t n = n0;
        for (; n + tile.n <= n1; n += tile.n) {
          tile.prep(K, a.w + size_t(n) * a.w_row_bytes, a.w_row_bytes, wbuf);
          for (int64_t g = 0; g < mt; g += tile.m)
            tile.fn(K, wbuf, 0, groups ? packed + size_t(g / tile.m) * gbytes : act + size_t(g) * arb, arb,
                    a.y + g * N + n, size_t(N));
        }
        for (; n < n1; ++n)
          for (int64_t i = 0; i < mt; i += kQDotRows)
            dot.rows(K, a.w + size_t(n) * a.w_row_bytes, act + size_t(i) * arb, arb, a.y + i * N + n,
                     size_t(N));
        m = mt;
      } else if (use_tile) {  // tiles; the last n1 % tile.n weight rows kQDotRows activation rows at a time
        for (; m + tile.m <= M; m += tile.m) {
          const uint8_t* am = act + size_t(m) * arb;
          float* ym = a.y + m * N;
          int64_t n = n0;
          const uint8_t* tact = groups ? packed + size_t(m / tile.m) * gbytes : am;
          for (; n + tile.n <= n1; n += tile.n)
            tile.fn(K, a.w + size_t(n) * a.w_row_bytes, a.w_row_bytes, tact, arb, ym + n, size_t(N));
          for (; n < n1; ++n)
            for (int i = 0; i < tile.m; i += kQDotRows)
              dot.rows(K, a.w + size_t(n) * a.w_row_bytes, am + size_t(i) * arb, arb, ym + i * N + n,
                       size_t(N));
        }
      }
      if (dot.rows) {
        auto rows_from = [&](int64_t r0) {  // activation rows r0 .. r0 + kQDotRows against the tile's rows
          const uint8_t* am = act + size_t(r0) * arb;
          float* ym = a.y + r0 * N;
          for (int64_t n = n0; n < n1; ++n)
            dot.rows(K, a.w + size_t(n) * a.w_row_bytes, am, arb, ym + n, size_t(N));
        };
        const int64_t rows_start = m;  // the rows before it came from a tile
        for (; m + kQDotRows <= M; m += kQDotRows) rows_from(m);
        // 3 rows left after at least one group here: the last kQDotRows rows in one pass over the weights
        // instead of three single-row passes (with 1 or 2 left the single rows measured as fast). The rows
        // done already are computed again and written with the same bits (each result of QDotMultiFn is
        // QDotFn's: qdot.h).
        if (M - m == 3 && M - kQDotRows >= rows_start) {
          rows_from(M - kQDotRows);
          m = M;
        }
      }
      for (; m < M; ++m) {
        const uint8_t* am = act + size_t(m) * arb;
        float* ym = a.y + m * N;
        for (int64_t n = n0; n < n1; ++n) ym[n] = dot.one(K, a.w + size_t(n) * a.w_row_bytes, am);
      }
    }
  }
}

}  // namespace llamarun::cpu
