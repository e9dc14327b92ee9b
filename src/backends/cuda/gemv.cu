// Decode GEMV: y = x W^T for M = 1..8 rows of x, streaming W [N, K] once at close to memory bandwidth.
//
// Each warp owns R consecutive rows of W; each lane reads 16-byte vectors (8 values) of those rows,
// U vectors per row before the first use (R * U independent 16-byte loads in flight per lane), with
// loads that bypass L1 (W is read once). x is staged in shared memory when it fits (48 KB), else read
// through L1/L2. fp32 accumulation; one warp reduction per output.
//
// Fusions (gemv_fused), chosen at run time so no extra instantiations are needed: the x staging can apply
// RMSNorm (each block recomputes the row's sum of squares: a few KB from L2) or SiLU-and-multiply, and the
// epilogue can add into y (the residual stream). In the decode step this removes the separate norm,
// SiLU and residual kernels.
//
// FP8 weights (GemvFusion::w_fp8_scale): the kernel is templated on the weight element type WT. A 16-byte
// weight vector then holds 16 E4M3 values (two 8-value halves, each matched with one 16-byte x vector),
// so a lane keeps the same R * U 16-byte loads in flight and a step reads the same bytes as with fp16
// weights (U vectors cover 16 U values). The codes are widened exactly (E4M3 -> fp16 -> fp32) and each
// row's fp32 warp sum is multiplied by its scale before the epilogue. The staged x is laid out so that
// each half's x loads of a warp are contiguous (see xpos).
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

constexpr int kWarps = 8;  // per block
constexpr int kThreads = kWarps * 32;
constexpr int kSmemX = kGemvStageBytes;

struct Fuse {
  int prologue;        // GemvPrologue
  const void* norm_w;  // kRmsNorm: [K]
  float eps;
  bool add;         // y += result
  bool persistent;  // grid of one resident wave (each warp takes several row groups)
  bool wide;
  float prefetch_frac;  // fraction of each warp's steps pulled into L2 before the PDL wait
  // RoPE epilogue (M = 1, R = 2): rope 0 off, 1 half layout, 2 interleaved.
  int rope;
  const int32_t* pos;
  const int32_t* slot;
  const float* inv_freq;
  int nh, nkv, hd, block_size;
  void *q_out, *k_pool, *v_pool;
  const float* w_scale;  // FP8 weights: the per-row scales [N] (null for fp16 / bf16 weights)
};

using Fp8 = __nv_fp8_e4m3;  // weight element type of the FP8 path (one byte, no arithmetic used)

// Eight E4M3 codes (two words, the first value in the low byte) -> floats. Exact: every E4M3 value is an
// fp16 value (cvt.rn.f16x2.e4m3x2 on sm_89+, cuda_fp8.h's software decoding below).
__device__ __forceinline__ void fp8x4_to_f32(uint32_t w, float* f) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w >> 16), __NV_E4M3);
  unpack2<__half>(uint32_t(lo.x) | (uint32_t(lo.y) << 16), f[0], f[1]);
  unpack2<__half>(uint32_t(hi.x) | (uint32_t(hi.y) << 16), f[2], f[3]);
}

// FP8 weights, x staged in shared memory: where x vector i (8 values) of a row is kept. Weight vector v
// (16 values) needs x vectors 2v and 2v + 1; the lanes of a warp read weight vectors 32c .. 32c + 31
// (chunk c), so chunk c's 64 x vectors are stored as all its first halves, then all its second halves
// (half = 32, or what the row's last, partial chunk has), and each of a warp's two x loads is contiguous
// (no shared-memory bank conflicts). A permutation of 0 .. nvec - 1 (nvec = K / 8, even).
__device__ __forceinline__ int xpos(int i, int nvec) {
  const int c = i >> 6, half = min(32, (nvec >> 1) - (c << 5));
  return (c << 6) + (i & 1) * half + ((i >> 1) & 31);
}

// Row r (< R) of row group rg. With the RoPE epilogue a group is the rotation pair (i, i + hd/2) (half)
// or (2i, 2i + 1) (interleaved) of one head, so one lane holds both values it rotates.
template <int R>
__device__ __forceinline__ int row_of(const Fuse& f, int rg, int r) {
  if (!f.rope) return rg * R + r;
  const int half = f.hd >> 1, head = rg / half, i = rg - head * half;
  return head * f.hd + (f.rope == 1 ? i + r * half : 2 * i + r);
}

// The RoPE epilogue for one rotation pair (a: row i0, b: row i1 of `head`) at position p; the key / value
// go to the slot whose pool row ([blocks][nkv][block_size][hd]) for kv head kh is kv_row + kh * block_size
// (kv_row: (s / block_size) * nkv * block_size + s % block_size for slot s; negative: not stored).
template <typename T>
__device__ __forceinline__ void rope_store(const Fuse& f, int rg, float a, float b, int p, long long kv_row) {
  const int half = f.hd >> 1, head = rg / half, i = rg - head * half;
  const int i0 = f.rope == 1 ? i : 2 * i, i1 = f.rope == 1 ? i + half : 2 * i + 1;
  // Round as the unfused path does (GEMV output stored as T, rotated from there).
  a = to_f32(from_f32<T>(a));
  b = to_f32(from_f32<T>(b));
  T* dst;
  auto pool_off = [&](int kh) { return (size_t(kv_row) + size_t(kh) * f.block_size) * f.hd; };
  if (head >= f.nh + f.nkv) {  // value head: no rotation
    if (kv_row < 0) return;
    dst = static_cast<T*>(f.v_pool) + pool_off(head - f.nh - f.nkv);
  } else {
    float sn, cs;
    sincosf(float(p) * f.inv_freq[i], &sn, &cs);
    const float r0 = a * cs - b * sn, r1 = b * cs + a * sn;
    a = r0;
    b = r1;
    if (head < f.nh) {
      dst = static_cast<T*>(f.q_out) + size_t(head) * f.hd;
    } else {
      if (kv_row < 0) return;
      dst = static_cast<T*>(f.k_pool) + pool_off(head - f.nh);
    }
  }
  dst[i0] = from_f32<T>(a);
  dst[i1] = from_f32<T>(b);
}

// Stages x (or its fused transform) into xs as T: M rows of K values (kFp8: each row's vectors in xpos
// order).
template <typename T, int M, bool kFp8>
__device__ __forceinline__ void stage_x(const T* __restrict__ x, uint4* xs, int K, const Fuse& f) {
  const int nvec = K / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  // Shared-memory index of x vector v of row m (flat index i = m * nvec + v).
  auto dst = [&](int i, int m, int v) {
    if constexpr (kFp8)
      return m * nvec + xpos(v, nvec);
    else
      return i;
  };
  if (f.prologue == int(GemvPrologue::kNone)) {
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) xs[dst(i, i / nvec, i % nvec)] = ld_v4(xv + i);
  } else if (f.prologue == int(GemvPrologue::kSiluMul)) {
    // x rows are [gate (K) | up (K)]
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) {
      int m = i / nvec, v = i % nvec;
      float g[8], u[8], o[8];
      unpack8<T>(ld_v4(xv + size_t(m) * 2 * nvec + v), g);
      unpack8<T>(ld_v4(xv + size_t(m) * 2 * nvec + nvec + v), u);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = g[j] / (1.f + __expf(-g[j])) * u[j];
      xs[dst(i, m, v)] = pack8<T>(o);
    }
  } else {  // kRmsNorm
    __shared__ float red[kWarps][M];
    __shared__ float inv[M];
    float ss[M];
#pragma unroll
    for (int m = 0; m < M; ++m) ss[m] = 0.f;
    for (int v = threadIdx.x; v < nvec; v += blockDim.x) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float a[8];
        unpack8<T>(ld_v4(xv + size_t(m) * nvec + v), a);
#pragma unroll
        for (int j = 0; j < 8; ++j) ss[m] = fmaf(a[j], a[j], ss[m]);
      }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s = warp_sum(ss[m]);
      if (lane == 0) red[warp][m] = s;
    }
    __syncthreads();
    if (threadIdx.x < M) {
      float s = 0.f;
      for (int w = 0; w < kWarps; ++w) s += red[w][threadIdx.x];
      inv[threadIdx.x] = rsqrtf(s / float(K) + f.eps);
    }
    __syncthreads();
    const uint4* wv = reinterpret_cast<const uint4*>(f.norm_w);
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) {
      int m = i / nvec, v = i % nvec;
      float a[8], w[8];
      unpack8<T>(ld_v4(xv + i), a);
      unpack8<T>(__ldg(wv + v), w);
      float r = inv[m];
#pragma unroll
      for (int j = 0; j < 8; ++j) a[j] = a[j] * r * w[j];
      xs[dst(i, m, v)] = pack8<T>(a);
    }
  }
  __syncthreads();
}

// WT: the weight element type, T (fp16 / bf16, as x) or Fp8 (then f.w_scale holds the row scales).
template <typename T, typename WT, typename OutT, int M, int R, int U>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const WT* __restrict__ W, const T* __restrict__ x, OutT* __restrict__ y, int N, int K,
                bool x_in_smem, Fuse f) {
  static_assert(std::is_same_v<WT, T> || std::is_same_v<WT, Fp8>, "weights: the act type or E4M3");
  constexpr bool kFp8 = std::is_same_v<WT, Fp8>;
  constexpr int kVals = 16 / int(sizeof(WT));  // weight values per 16-byte vector (8, or 16 for FP8)
  extern __shared__ uint4 xs[];
  pdl_trigger();
  const int nvec = K / 8;       // x vectors (8 values) per row
  const int nwvec = K / kVals;  // weight vectors per row (nvec, or nvec / 2 for FP8)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Work: row groups of R rows, warp-strided over the grid (one per warp when the grid covers N, several
  // per warp for a persistent grid). A warp's work is a flat sequence of (row group, batch) steps, each
  // batch U 16-byte vectors of each of the R rows per lane; the next step's loads are issued before the
  // current step's math, and the first step's before the PDL wait and the x staging (weights are
  // constant), so loads stay in flight across the prologue and across row groups.
  const int nbatch = (nwvec + 32 * U - 1) / (32 * U);
  const int groups = (N + R - 1) / R;
  const int stride = gridDim.x * kWarps;
  const int rg0 = blockIdx.x * kWarps + warp;
  const int my_groups = rg0 < groups ? (groups - rg0 + stride - 1) / stride : 0;
  const int steps = my_groups * nbatch;

  auto load = [&](uint4(&w)[R][U], int step) {
    const int rg = rg0 + (step / nbatch) * stride;
    const int base = lane + (step % nbatch) * 32 * U;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint4* wrow = reinterpret_cast<const uint4*>(W + size_t(min(row_of<R>(f, rg, r), N - 1)) * K);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        int v = base + u * 32;
        w[r][u] = v < nwvec ? ld_stream(wrow + v) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // FP8: the scales of the row group of `step` (loaded with the group's first weights, used at its end).
  auto load_scale = [&](float(&s)[R], int step) {
    const int rg = rg0 + (step / nbatch) * stride;
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = __ldg(f.w_scale + min(row_of<R>(f, rg, r), N - 1));
  };
  uint4 wc[R][U], wn[R][U];
  float sc[R], sn[R];  // FP8 only: scales of the current and of the next row group
#pragma unroll
  for (int r = 0; r < R; ++r) sc[r] = sn[r] = 0.f;
  if (steps > 0) load(wc, 0);
  if constexpr (kFp8) {
    if (steps > 0) load_scale(sc, 0);
  }
  // While the previous kernel drains (PDL), pull the first prefetch_frac of this warp's steps into L2
  // (a step is U * 512 bytes of each of its R rows: R * U * 4 lines of 128 bytes).
  constexpr int kLine = 128 / int(sizeof(WT));  // elements per 128 bytes
  const int pf = min(steps, int(ceilf(f.prefetch_frac * float(steps))));
  for (int st = 1; st < pf; ++st) {
    const int rg = rg0 + (st / nbatch) * stride;
    const int base_el = (st % nbatch) * 32 * U * kVals;  // first element of the step's span in each row
    for (int idx = lane; idx < R * U * 4; idx += 32) {
      const int r = idx / (U * 4), el = base_el + (idx % (U * 4)) * kLine;
      if (el < K) prefetch_l2(W + size_t(min(row_of<R>(f, rg, r), N - 1)) * K + el);
    }
  }
  // The RoPE epilogue's position and slot: read before the PDL wait (their uploader writes them before the
  // previous kernel starts), so the epilogue does not wait on these loads and a division.
  int rope_p = 0;
  long long kv_row = -1;
  if (f.rope) {
    rope_p = __ldg(f.pos);
    const int s = __ldg(f.slot);
    if (s >= 0) kv_row = (long long)(s / f.block_size) * f.nkv * f.block_size + s % f.block_size;
  }
  pdl_wait();  // x (and y, when adding) come from earlier kernels
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  if (x_in_smem) {
    stage_x<T, M, kFp8>(x, xs, K, f);
    xv = xs;
  }

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) load(wn, step + 1);
    if constexpr (kFp8) {
      if (step + 1 < steps && (step + 1) % nbatch == 0) load_scale(sn, step + 1);
    }
    const int b = step % nbatch;
    const int base = lane + b * 32 * U;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int v = base + u * 32;
      if constexpr (kFp8) {
        if (v < nwvec) {
          // Weight vector v: values 16v .. 16v + 15, the x vectors 2v (half 0) and 2v + 1 (half 1), found in
          // the staged x at xpos (v >> 5 is the chunk, v & 31 the lane).
          const int x0 = x_in_smem ? ((v >> 5) << 6) + lane : 2 * v;
          const int x1 = x_in_smem ? x0 + min(32, nwvec - (v & ~31)) : 2 * v + 1;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float wf[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
              fp8x4_to_f32(h ? wc[r][u].z : wc[r][u].x, wf[r]);
              fp8x4_to_f32(h ? wc[r][u].w : wc[r][u].y, wf[r] + 4);
            }
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float xf[8];
              unpack8<T>(ld_v4(xv + m * nvec + (h ? x1 : x0)), xf);
#pragma unroll
              for (int r = 0; r < R; ++r)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[r][m] = fmaf(wf[r][j], xf[j], acc[r][m]);
            }
          }
        }
      } else if (v < nvec) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float xf[8];
          unpack8<T>(ld_v4(xv + m * nvec + v), xf);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float wf[8];
            unpack8<T>(wc[r][u], wf);
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[r][m] = fmaf(wf[j], xf[j], acc[r][m]);
          }
        }
      }
    }
    if (b == nbatch - 1) {  // row group complete: reduce and store
      const int rg = rg0 + (step / nbatch) * stride;
      const int row0 = rg * R;
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
      if constexpr (kFp8) {  // the row scale, before the epilogue
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int m = 0; m < M; ++m) acc[r][m] *= sc[r];
      }
      bool roped = false;
      if constexpr (R == 2 && M == 1 && !std::is_same_v<OutT, float>) {
        if (f.rope) {
          if (lane == 0) rope_store<T>(f, rg, acc[0][0], acc[1][0], rope_p, kv_row);
          roped = true;
        }
      }
      if (lane == 0 && !roped) {
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (row0 + r < N)
#pragma unroll
            for (int m = 0; m < M; ++m) {
              size_t idx = size_t(m) * N + row0 + r;
              float v = acc[r][m];
              if (f.add) v += to_f32(y[idx]);
              y[idx] = from_f32<OutT>(v);
            }
      }
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u) wc[r][u] = wn[r][u];
    if constexpr (kFp8) {
      if ((step + 1) % nbatch == 0)
#pragma unroll
        for (int r = 0; r < R; ++r) sc[r] = sn[r];
    }
  }
}

template <typename T, typename WT, typename OutT, int M, int U = 4>
void launch_m(const WT* W, const T* x, OutT* y, int N, int K, const Fuse& f, cudaStream_t stream, bool pdl) {
  constexpr int R = M <= 2 ? 2 : 1;
  if constexpr (M == 1 && U == 4) {
    if (f.wide) return launch_m<T, WT, OutT, 1, 8>(W, x, y, N, K, f, stream, pdl);
  }
  if (f.rope && (M != 1 || std::is_same_v<OutT, float>))
    fail("gemv_fused: the RoPE epilogue needs M = 1 and an fp16/bf16 output");
  size_t xbytes = size_t(M) * K * sizeof(T);
  bool smem = xbytes <= size_t(kSmemX);
  if (!smem && f.prologue != int(GemvPrologue::kNone))
    fail("gemv_fused: ", M, " rows of ", K,
         " values do not fit the shared-memory staging a fused prologue needs");
  int rows_per_block = kWarps * R;
  int grid = (N + rows_per_block - 1) / rows_per_block;
  auto kernel = gemv_kernel<T, WT, OutT, M, R, U>;
  const size_t dyn = smem ? xbytes : 0;
  if (f.persistent) {  // one resident wave: each warp walks several row groups
    int dev = 0, sms = 0, per_sm = 0;
    LLAMARUN_CUDA_CHECK(cudaGetDevice(&dev));
    LLAMARUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    LLAMARUN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, dyn));
    grid = std::max(1, std::min(grid, sms * std::max(per_sm, 1)));
  }
  launch_kernel(pdl, kernel, dim3(grid), dim3(kThreads), dyn, stream, W, x, y, N, K, smem, f);
}

template <typename T, typename WT, typename OutT>
void launch(const WT* W, const T* x, OutT* y, int M, int N, int K, const Fuse& f, cudaStream_t stream,
            bool pdl) {
  switch (M) {
    case 1:
      launch_m<T, WT, OutT, 1>(W, x, y, N, K, f, stream, pdl);
      break;
    case 2:
      launch_m<T, WT, OutT, 2>(W, x, y, N, K, f, stream, pdl);
      break;
    case 3:
      launch_m<T, WT, OutT, 3>(W, x, y, N, K, f, stream, pdl);
      break;
    case 4:
      launch_m<T, WT, OutT, 4>(W, x, y, N, K, f, stream, pdl);
      break;
    case 5:
      launch_m<T, WT, OutT, 5>(W, x, y, N, K, f, stream, pdl);
      break;
    case 6:
      launch_m<T, WT, OutT, 6>(W, x, y, N, K, f, stream, pdl);
      break;
    case 7:
      launch_m<T, WT, OutT, 7>(W, x, y, N, K, f, stream, pdl);
      break;
    case 8:
      launch_m<T, WT, OutT, 8>(W, x, y, N, K, f, stream, pdl);
      break;
  }
}

void gemv_impl(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
               const Fuse& f, cudaStream_t stream, bool pdl) {
  if (M < 1 || M > 8) fail("gemv: M = ", M, " rows; the GEMV path takes 1..8 (use the GEMM path)");
  if (K % 8 != 0) fail("gemv: K = ", K, " must be a multiple of 8 (16-byte vectors)");
  if (f.w_scale && K % 16 != 0) fail("gemv: K = ", K, " must be a multiple of 16 with FP8 weights");
  if ((reinterpret_cast<uintptr_t>(W) | reinterpret_cast<uintptr_t>(x) |
       reinterpret_cast<uintptr_t>(f.norm_w)) %
          16 !=
      0)
    fail("gemv: W, x and the norm weight must be 16-byte aligned");
  if (f.prologue == int(GemvPrologue::kRmsNorm) && !f.norm_w)
    fail("gemv_fused: RMSNorm prologue without weight");
  if (N <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "gemv", {
    if (f.w_scale) {
      const Fp8* W8 = static_cast<const Fp8*>(W);
      if (y_f32)
        launch<T, Fp8, float>(W8, static_cast<const T*>(x), static_cast<float*>(y), M, N, K, f, stream, pdl);
      else
        launch<T, Fp8, T>(W8, static_cast<const T*>(x), static_cast<T*>(y), M, N, K, f, stream, pdl);
    } else if (y_f32) {
      launch<T, T, float>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<float*>(y), M, N, K,
                          f, stream, pdl);
    } else {
      launch<T, T, T>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<T*>(y), M, N, K, f,
                      stream, pdl);
    }
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("gemv");
}

}  // namespace

void gemv(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
          cudaStream_t stream) {
  Fuse f{};
  f.prologue = int(GemvPrologue::kNone);
  gemv_impl(act, W, x, y, y_f32, M, N, K, f, stream, false);
}

void gemv_fused(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
                const GemvFusion& fusion, cudaStream_t stream, bool pdl) {
  Fuse f{};
  const int wbytes = fusion.w_fp8_scale ? 1 : 2;  // bytes per weight value
  f.prefetch_frac =
      N > 0 && K > 0 ? std::min(1.f, float(double(fusion.prefetch_bytes) / (double(N) * K * wbytes))) : 0.f;
  f.w_scale = fusion.w_fp8_scale;
  f.prologue = int(fusion.prologue);
  f.norm_w = fusion.norm_weight;
  f.eps = fusion.eps;
  f.add = fusion.add_to_y;
  f.persistent = fusion.persistent;
  f.wide = fusion.wide;
  if (fusion.rope_inv_freq) {
    if (fusion.rope_hd <= 0 || fusion.rope_hd % 2 ||
        N != (fusion.rope_nh + 2 * fusion.rope_nkv) * fusion.rope_hd)
      fail("gemv_fused: RoPE epilogue with N = ", N, " rows but ", fusion.rope_nh, " + 2 x ", fusion.rope_nkv,
           " heads of ", fusion.rope_hd);
    if (!fusion.rope_pos || !fusion.rope_slot || !fusion.rope_q_out || !fusion.rope_k_pool ||
        !fusion.rope_v_pool)
      fail("gemv_fused: RoPE epilogue without position, slot, q output or KV pools");
    if (fusion.rope_block_size < 1)
      fail("gemv_fused: RoPE epilogue with block_size ", fusion.rope_block_size);
    f.rope = fusion.rope_layout == RopeLayout::kHalf ? 1 : 2;
    f.pos = fusion.rope_pos;
    f.slot = fusion.rope_slot;
    f.inv_freq = fusion.rope_inv_freq;
    f.nh = fusion.rope_nh;
    f.nkv = fusion.rope_nkv;
    f.hd = fusion.rope_hd;
    f.block_size = fusion.rope_block_size;
    f.q_out = fusion.rope_q_out;
    f.k_pool = fusion.rope_k_pool;
    f.v_pool = fusion.rope_v_pool;
  }
  gemv_impl(act, W, x, y, y_f32, M, N, K, f, stream, pdl);
}

}  // namespace llamarun::cuda
