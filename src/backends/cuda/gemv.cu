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
};

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

// Stages x (or its fused transform) into xs as T: M rows of K values.
template <typename T, int M>
__device__ __forceinline__ void stage_x(const T* __restrict__ x, uint4* xs, int K, const Fuse& f) {
  const int nvec = K / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  if (f.prologue == int(GemvPrologue::kNone)) {
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) xs[i] = ld_v4(xv + i);
  } else if (f.prologue == int(GemvPrologue::kSiluMul)) {
    // x rows are [gate (K) | up (K)]
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) {
      int m = i / nvec, v = i % nvec;
      float g[8], u[8], o[8];
      unpack8<T>(ld_v4(xv + size_t(m) * 2 * nvec + v), g);
      unpack8<T>(ld_v4(xv + size_t(m) * 2 * nvec + nvec + v), u);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = g[j] / (1.f + __expf(-g[j])) * u[j];
      xs[i] = pack8<T>(o);
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
      xs[i] = pack8<T>(a);
    }
  }
  __syncthreads();
}

template <typename T, typename OutT, int M, int R, int U>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const T* __restrict__ W, const T* __restrict__ x, OutT* __restrict__ y, int N, int K,
                bool x_in_smem, Fuse f) {
  extern __shared__ uint4 xs[];
  pdl_trigger();
  const int nvec = K / 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Work: row groups of R rows, warp-strided over the grid (one per warp when the grid covers N, several
  // per warp for a persistent grid). A warp's work is a flat sequence of (row group, batch) steps, each
  // batch U 16-byte vectors of each of the R rows per lane; the next step's loads are issued before the
  // current step's math, and the first step's before the PDL wait and the x staging (weights are
  // constant), so loads stay in flight across the prologue and across row groups.
  const int nbatch = (nvec + 32 * U - 1) / (32 * U);
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
        w[r][u] = v < nvec ? ld_stream(wrow + v) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  uint4 wc[R][U], wn[R][U];
  if (steps > 0) load(wc, 0);
  // While the previous kernel drains (PDL), pull the first prefetch_frac of this warp's steps into L2
  // (a step is U * 512 bytes of each of its R rows: R * U * 4 lines of 128 bytes).
  const int pf = min(steps, int(ceilf(f.prefetch_frac * float(steps))));
  for (int st = 1; st < pf; ++st) {
    const int rg = rg0 + (st / nbatch) * stride;
    const int base_el = (st % nbatch) * 32 * U * 8;  // first element of the step's span in each row
    for (int idx = lane; idx < R * U * 4; idx += 32) {
      const int r = idx / (U * 4), el = base_el + (idx % (U * 4)) * 64;  // 64 elements = 128 bytes
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
    stage_x<T, M>(x, xs, K, f);
    xv = xs;
  }

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) load(wn, step + 1);
    const int b = step % nbatch;
    const int base = lane + b * 32 * U;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int v = base + u * 32;
      if (v < nvec) {
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
  }
}

template <typename T, typename OutT, int M, int U = 4>
void launch_m(const T* W, const T* x, OutT* y, int N, int K, const Fuse& f, cudaStream_t stream, bool pdl) {
  constexpr int R = M <= 2 ? 2 : 1;
  if constexpr (M == 1 && U == 4) {
    if (f.wide) return launch_m<T, OutT, 1, 8>(W, x, y, N, K, f, stream, pdl);
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
  auto kernel = gemv_kernel<T, OutT, M, R, U>;
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

template <typename T, typename OutT>
void launch(const T* W, const T* x, OutT* y, int M, int N, int K, const Fuse& f, cudaStream_t stream,
            bool pdl) {
  switch (M) {
    case 1:
      launch_m<T, OutT, 1>(W, x, y, N, K, f, stream, pdl);
      break;
    case 2:
      launch_m<T, OutT, 2>(W, x, y, N, K, f, stream, pdl);
      break;
    case 3:
      launch_m<T, OutT, 3>(W, x, y, N, K, f, stream, pdl);
      break;
    case 4:
      launch_m<T, OutT, 4>(W, x, y, N, K, f, stream, pdl);
      break;
    case 5:
      launch_m<T, OutT, 5>(W, x, y, N, K, f, stream, pdl);
      break;
    case 6:
      launch_m<T, OutT, 6>(W, x, y, N, K, f, stream, pdl);
      break;
    case 7:
      launch_m<T, OutT, 7>(W, x, y, N, K, f, stream, pdl);
      break;
    case 8:
      launch_m<T, OutT, 8>(W, x, y, N, K, f, stream, pdl);
      break;
  }
}

void gemv_impl(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
               const Fuse& f, cudaStream_t stream, bool pdl) {
  if (M < 1 || M > 8) fail("gemv: M = ", M, " rows; the GEMV path takes 1..8 (use the GEMM path)");
  if (K % 8 != 0) fail("gemv: K = ", K, " must be a multiple of 8 (16-byte vectors)");
  if ((reinterpret_cast<uintptr_t>(W) | reinterpret_cast<uintptr_t>(x) |
       reinterpret_cast<uintptr_t>(f.norm_w)) %
          16 !=
      0)
    fail("gemv: W, x and the norm weight must be 16-byte aligned");
  if (f.prologue == int(GemvPrologue::kRmsNorm) && !f.norm_w)
    fail("gemv_fused: RMSNorm prologue without weight");
  if (N <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "gemv", {
    if (y_f32)
      launch<T, float>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<float*>(y), M, N, K, f,
                       stream, pdl);
    else
      launch<T, T>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<T*>(y), M, N, K, f, stream,
                   pdl);
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
  f.prefetch_frac =
      N > 0 && K > 0 ? std::min(1.f, float(double(fusion.prefetch_bytes) / (double(N) * K * 2))) : 0.f;
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
