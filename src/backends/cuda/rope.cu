// Rotary position embedding fused with the KV-cache append (see kernels.h: rope_store_kv).
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

// grid (nh + 2*nkv, M); block hd/2 threads: thread i handles rotation pair i of one head.
template <typename T, bool kInterleaved>
__global__ void rope_store_kv_kernel(const T* __restrict__ qkv, const int32_t* __restrict__ pos,
                                     const float* __restrict__ inv_freq, int nh, int nkv, int hd, int max_ctx,
                                     T* __restrict__ q_out, T* __restrict__ k_cache,
                                     T* __restrict__ v_cache) {
  pdl_trigger();
  pdl_wait();
  int head = blockIdx.x;
  int m = blockIdx.y;
  int i = threadIdx.x;  // pair index, < hd/2
  int p = pos[m];
  const T* src = qkv + (size_t(m) * (nh + 2 * nkv) + head) * hd;
  int i0, i1;
  rope_pair_index<kInterleaved>(i, hd, i0, i1);
  if (head >= nh + nkv) {  // value head: plain copy into the cache
    if (p < 0 || p >= max_ctx) return;
    T* dst = v_cache + (size_t(head - nh - nkv) * max_ctx + p) * hd;
    dst[i0] = src[i0];
    dst[i1] = src[i1];
    return;
  }
  float f0, f1;
  rope_rotate(to_f32(src[i0]), to_f32(src[i1]), p, inv_freq[i], f0, f1);
  T r0 = from_f32<T>(f0);
  T r1 = from_f32<T>(f1);
  T* dst;
  if (head < nh) {
    dst = q_out + (size_t(m) * nh + head) * hd;
  } else {
    if (p < 0 || p >= max_ctx) return;
    dst = k_cache + (size_t(head - nh) * max_ctx + p) * hd;
  }
  dst[i0] = r0;
  dst[i1] = r1;
}

}  // namespace

void rope_store_kv(DType act, RopeLayout layout, const void* qkv, const int32_t* pos, const float* inv_freq,
                   int M, int nh, int nkv, int hd, int max_ctx, void* q_out, void* k_cache, void* v_cache,
                   cudaStream_t stream, bool pdl) {
  if (M <= 0) return;
  if (hd % 2 != 0 || hd > 2048) fail("rope_store_kv: head_dim ", hd, " must be even and <= 2048");
  dim3 grid(nh + 2 * nkv, M);
  LLAMARUN_DISPATCH_ACT(act, "rope_store_kv", {
    auto* qo = static_cast<T*>(q_out);
    auto* kc = static_cast<T*>(k_cache);
    auto* vc = static_cast<T*>(v_cache);
    auto* in = static_cast<const T*>(qkv);
    if (layout == RopeLayout::kInterleaved)
      launch_kernel(pdl, rope_store_kv_kernel<T, true>, grid, dim3(hd / 2), 0, stream, in, pos, inv_freq, nh,
                    nkv, hd, max_ctx, qo, kc, vc);
    else
      launch_kernel(pdl, rope_store_kv_kernel<T, false>, grid, dim3(hd / 2), 0, stream, in, pos, inv_freq, nh,
                    nkv, hd, max_ctx, qo, kc, vc);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("rope_store_kv");
}

}  // namespace llamarun::cuda
