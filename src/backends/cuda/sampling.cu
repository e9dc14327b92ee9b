// Token selection on the GPU: argmax, and temperature / top-k / top-p sampling. One block of 1024
// threads; the top-k and top-p thresholds are found by a bitwise (radix) search over the logits'
// order-preserving integer keys, so nothing is sorted and no scratch memory is needed.
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/sampling_rng.h"

namespace llamarun::cuda {

namespace {

constexpr int kThreads = 1024;

// Order-preserving map float -> uint32 (larger float, larger key; NaN treated as very small).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;
  uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

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
    argmax_kernel(const float* __restrict__ logits, int V, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  // Launched with pdl after the lm_head GEMV: the logits are only complete after the wait (without it the
  // token read back was the argmax of the previous step's logits).
  pdl_wait();
  ValIdx best = argmax_all(logits, V, sv, si);
  if (threadIdx.x == 0) out[0] = best.i;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int V, float inv_temp, int top_k, float top_p,
                  uint64_t seed, uint64_t* counter, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  __shared__ float scratch[32];
  __shared__ float s_scan[32];
  __shared__ float s_u;
  if (threadIdx.x == 0) {
    uint64_t c = *counter;
    s_u = sample_uniform(seed, c);
    *counter = c + 1;
  }
  ValIdx best = argmax_all(logits, V, sv, si);  // (contains barriers: s_u is visible after it)
  const float zmax = best.v * inv_temp;
  const float u = s_u;

  // k-th largest key: the largest t with count(key >= t) >= k.
  uint32_t tk = 0;
  if (top_k > 0 && top_k < V) {
    uint32_t ans = 0;
    for (int bit = 31; bit >= 0; --bit) {
      uint32_t cand = ans | (1u << bit);
      float cnt = 0.f;
      for (int i = threadIdx.x; i < V; i += blockDim.x) cnt += order_key(logits[i]) >= cand ? 1.f : 0.f;
      cnt = block_sum(cnt, scratch);
      if (cnt >= float(top_k)) ans = cand;
    }
    tk = ans;
  }
  auto weight = [&](float lv) { return __expf(lv * inv_temp - zmax); };
  auto mass_from = [&](uint32_t t) {
    float s = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      float lv = logits[i];
      if (order_key(lv) >= t) s += weight(lv);
    }
    return block_sum(s, scratch);
  };
  uint32_t thr = tk;
  if (top_p < 1.f) {
    float need = top_p * mass_from(tk);
    uint32_t ans = 0;
    for (int bit = 31; bit >= 0; --bit) {
      uint32_t cand = ans | (1u << bit);
      if (mass_from(max(cand, tk)) >= need) ans = cand;
    }
    thr = max(ans, tk);
  }
  // Inverse CDF over the kept tokens in index order: contiguous index range per thread.
  const int per = (V + blockDim.x - 1) / blockDim.x;
  const int lo = threadIdx.x * per, hi = min(V, lo + per);
  float mine = 0.f;
  for (int i = lo; i < hi; ++i)
    if (order_key(logits[i]) >= thr) mine += weight(logits[i]);
  // Exclusive block scan of `mine`.
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float incl = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    float y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) s_scan[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    float w = lane < int(blockDim.x >> 5) ? s_scan[lane] : 0.f;
    float wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      float y = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += y;
    }
    s_scan[lane] = wi - w;  // exclusive prefix of warp totals
  }
  __syncthreads();
  float before = s_scan[warp] + incl - mine;
  __shared__ float s_total;
  if (threadIdx.x == blockDim.x - 1) s_total = before + mine;  // the last thread's inclusive prefix
  __syncthreads();
  const float r = u * s_total;
  if (threadIdx.x == 0) out[0] = best.i;  // fallback (rounding at the top end): the argmax
  __syncthreads();
  if (mine > 0.f && r >= before && r < before + mine) {
    float c = before;
    int pick = -1;
    for (int i = lo; i < hi; ++i) {
      float lv = logits[i];
      if (order_key(lv) >= thr) {
        pick = i;
        c += weight(lv);
        if (r < c) break;
      }
    }
    if (pick >= 0) out[0] = pick;
  }
}

}  // namespace

void argmax(const float* logits, int V, int32_t* out, cudaStream_t stream, bool pdl) {
  if (V <= 0) fail("argmax: empty vocabulary");
  launch_kernel(pdl, argmax_kernel, dim3(1), dim3(kThreads), 0, stream, logits, V, out);
  LLAMARUN_CUDA_LAUNCH_CHECK("argmax");
}

void sample_top_k_top_p(const float* logits, int V, float temperature, int top_k, float top_p, uint64_t seed,
                        uint64_t* counter, int32_t* out, cudaStream_t stream) {
  if (V <= 0) fail("sample_top_k_top_p: empty vocabulary");
  if (!(temperature > 0.f)) {
    argmax(logits, V, out, stream);
    return;
  }
  if (!(top_p > 0.f)) fail("sample_top_k_top_p: top_p must be > 0, got ", top_p);
  sample_kernel<<<1, kThreads, 0, stream>>>(logits, V, 1.f / temperature, top_k, top_p, seed, counter, out);
  LLAMARUN_CUDA_LAUNCH_CHECK("sample_top_k_top_p");
}

}  // namespace llamarun::cuda
