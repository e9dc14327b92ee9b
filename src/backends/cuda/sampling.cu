// The greedy token on the GPU: argmax over the logits, one block of 1024 threads (the batch-1 decode path's;
// varlen batches take argmax_rows in paged_attention.cu).
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

constexpr int kThreads = 1024;

struct ValIdx {
  float v;
  int i;
};
__device__ __forceinline__ ValIdx better(ValIdx a, ValIdx b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

// Block argmax; every thread gets the result. scratch_v/i hold >= 32 entries.
__device__ ValIdx block_argmax(ValIdx x, float* sv, int* si) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ValIdx y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    x = better(x, y);
  }
  __syncthreads();
  if (lane == 0) {
    sv[warp] = x.v;
    si[warp] = x.i;
  }
  __syncthreads();
  ValIdx r{-INFINITY, 0x7fffffff};
  if (lane < nw) r = ValIdx{sv[lane], si[lane]};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ValIdx y{__shfl_xor_sync(0xffffffffu, r.v, o), __shfl_xor_sync(0xffffffffu, r.i, o)};
    r = better(r, y);
  }
  return r;
}

__device__ ValIdx argmax_all(const float* logits, int V, float* sv, int* si) {
  ValIdx best{-INFINITY, 0x7fffffff};
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    float v = logits[i];
    if (v != v) v = -INFINITY;
    best = better(best, ValIdx{v, i});
  }
  best = block_argmax(best, sv, si);
  if (best.i == 0x7fffffff) best.i = 0;  // all NaN / -inf: token 0
  return best;
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int V, int32_t* out, int32_t* host_out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  // Launched with pdl after the lm_head GEMV: the logits are only complete after the wait (without it the
  // token read back was the argmax of the previous step's logits).
  pdl_wait();
  ValIdx best = argmax_all(logits, V, sv, si);
  if (threadIdx.x == 0) {
    out[0] = best.i;
    if (host_out) host_out[0] = best.i;  // straight into pinned host memory: no copy after the kernel
  }
}

}  // namespace

void argmax(const float* logits, int V, int32_t* out, cudaStream_t stream, bool pdl, int32_t* host_out) {
  if (V <= 0) fail("argmax: empty vocabulary");
  launch_kernel(pdl, argmax_kernel, dim3(1), dim3(kThreads), 0, stream, logits, V, out, host_out);
  LLAMARUN_CUDA_LAUNCH_CHECK("argmax");
}

}  // namespace llamarun::cuda
