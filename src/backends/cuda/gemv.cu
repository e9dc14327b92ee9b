// Decode GEMV: y = x W^T for M = 1..8 rows of x, streaming W [N, K] once at close to memory bandwidth.
//
// Each warp owns R consecutive rows of W; each lane reads 16-byte vectors (8 values) of those rows,
// U vectors per row before the first use (R * U independent 16-byte loads in flight per lane), with
// loads that bypass L1 (W is read once). x is staged in shared memory when it fits (48 KB), else read
// through L1/L2. fp32 accumulation; one warp reduction per output.
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

constexpr int kWarps = 8;  // per block
constexpr int kSmemX = 48 * 1024;

template <typename T, typename OutT, int M, int R, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const T* __restrict__ W, const T* __restrict__ x,
                                                            OutT* __restrict__ y, int N, int K, bool x_in_smem) {
  extern __shared__ uint4 xs[];
  const int nvec = K / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  if (x_in_smem) {
    for (int i = threadIdx.x; i < M * nvec; i += blockDim.x) xs[i] = xv[i];
    __syncthreads();
    xv = xs;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + warp) * R;
  if (row0 >= N) return;
  const uint4* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wrow[r] = reinterpret_cast<const uint4*>(W + size_t(min(row0 + r, N - 1)) * K);

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int base = lane; base < nvec; base += 32 * U) {
    uint4 w[R][U];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        int v = base + u * 32;
        w[r][u] = v < nvec ? ld_stream(wrow[r] + v) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int v = base + u * 32;
      if (v < nvec) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float xf[8];
          unpack8<T>(xv[m * nvec + v], xf);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float wf[8];
            unpack8<T>(w[r][u], wf);
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[r][m] = fmaf(wf[j], xf[j], acc[r][m]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (row0 + r < N)
#pragma unroll
        for (int m = 0; m < M; ++m) y[size_t(m) * N + row0 + r] = from_f32<OutT>(acc[r][m]);
  }
}

template <typename T, typename OutT, int M>
void launch_m(const T* W, const T* x, OutT* y, int N, int K, cudaStream_t stream) {
  constexpr int R = M <= 2 ? 2 : 1;
  constexpr int U = 4;
  size_t xbytes = size_t(M) * K * sizeof(T);
  bool smem = xbytes <= size_t(kSmemX);
  int rows_per_block = kWarps * R;
  int grid = (N + rows_per_block - 1) / rows_per_block;
  gemv_kernel<T, OutT, M, R, U><<<grid, kWarps * 32, smem ? xbytes : 0, stream>>>(W, x, y, N, K, smem);
}

template <typename T, typename OutT>
void launch(const T* W, const T* x, OutT* y, int M, int N, int K, cudaStream_t stream) {
  switch (M) {
    case 1: launch_m<T, OutT, 1>(W, x, y, N, K, stream); break;
    case 2: launch_m<T, OutT, 2>(W, x, y, N, K, stream); break;
    case 3: launch_m<T, OutT, 3>(W, x, y, N, K, stream); break;
    case 4: launch_m<T, OutT, 4>(W, x, y, N, K, stream); break;
    case 5: launch_m<T, OutT, 5>(W, x, y, N, K, stream); break;
    case 6: launch_m<T, OutT, 6>(W, x, y, N, K, stream); break;
    case 7: launch_m<T, OutT, 7>(W, x, y, N, K, stream); break;
    case 8: launch_m<T, OutT, 8>(W, x, y, N, K, stream); break;
  }
}

}  // namespace

void gemv(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
          cudaStream_t stream) {
  if (M < 1 || M > 8) fail("gemv: M = ", M, " rows; the GEMV path takes 1..8 (use the GEMM path)");
  if (K % 8 != 0) fail("gemv: K = ", K, " must be a multiple of 8 (16-byte vectors)");
  if ((reinterpret_cast<uintptr_t>(W) | reinterpret_cast<uintptr_t>(x)) % 16 != 0)
    fail("gemv: W and x must be 16-byte aligned");
  if (N <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "gemv", {
    if (y_f32)
      launch<T, float>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<float*>(y), M, N, K, stream);
    else
      launch<T, T>(static_cast<const T*>(W), static_cast<const T*>(x), static_cast<T*>(y), M, N, K, stream);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("gemv");
}

}  // namespace llamarun::cuda
