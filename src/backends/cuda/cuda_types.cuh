// Device helpers shared by the kernels: fp16/bf16 <-> fp32 conversion, 16-byte vectors, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "core/dtype.h"
#include "core/error.h"

namespace llamarun::cuda {

__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}

// 8 fp16/bf16 values = 16 bytes.
struct alignas(16) Vec8 {
  uint4 u;
};

// Two 16-bit values packed in a 32-bit word -> floats, in registers (no reinterpretation through memory,
// which makes the compiler split 16-byte loads into 2-byte ones).
template <typename T>
__device__ __forceinline__ void unpack2(uint32_t w, float& lo, float& hi);
template <>
__device__ __forceinline__ void unpack2<__half>(uint32_t w, float& lo, float& hi) {
  lo = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
  hi = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}
template <>
__device__ __forceinline__ void unpack2<__nv_bfloat16>(uint32_t w, float& lo, float& hi) {
  lo = __uint_as_float(w << 16);
  hi = __uint_as_float(w & 0xffff0000u);
}

template <typename T>
__device__ __forceinline__ uint32_t bits16(float f);
template <>
__device__ __forceinline__ uint32_t bits16<__half>(float f) {
  return __half_as_ushort(__float2half_rn(f));
}
template <>
__device__ __forceinline__ uint32_t bits16<__nv_bfloat16>(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Unpacks 8 values of T held in a uint4 into floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& u, float* f) {
  unpack2<T>(u.x, f[0], f[1]);
  unpack2<T>(u.y, f[2], f[3]);
  unpack2<T>(u.z, f[4], f[5]);
  unpack2<T>(u.w, f[6], f[7]);
}

template <typename T>
__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 u;
  u.x = bits16<T>(f[0]) | (bits16<T>(f[1]) << 16);
  u.y = bits16<T>(f[2]) | (bits16<T>(f[3]) << 16);
  u.z = bits16<T>(f[4]) | (bits16<T>(f[5]) << 16);
  u.w = bits16<T>(f[6]) | (bits16<T>(f[7]) << 16);
  return u;
}

// Streaming 16-byte load (read once: don't keep in L1).
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// 16-byte load through a generic pointer (shared or global), kept as one vector load.
__device__ __forceinline__ uint4 ld_v4(const void* p) {
  uint4 r;
  asm volatile("ld.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum; every thread gets the result. `scratch` holds >= 32 floats. blockDim.x % 32 == 0.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nw ? scratch[lane] : 0.f;
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(r);
}

// The residual add + RMSNorm kernels (add_rmsnorm_kernel, add_rmsnorm_fp8_kernel): one block of
// kRmsNormThreads per row (the same for both, so that their sums of squares are the same bits), the row in
// shared memory, so at most kRmsNormMaxHidden values (48 KB less 256 bytes of floats).
constexpr int kRmsNormThreads = 512;
constexpr int kRmsNormMaxHidden = (48 * 1024 - 256) / 4;

// The first pass of the residual add + RMSNorm (add_rmsnorm_kernel, add_rmsnorm_fp8_kernel; one block per
// row): x += residual when residual is non-null (the residual stream is stored in T), the row's values into
// rowbuf, and the block's sum of their squares (the same loop and reduction for both, so the same bits).
template <typename T>
__device__ __forceinline__ float residual_add_sumsq(T* xr, const T* rr, float* rowbuf, int H,
                                                    float* scratch) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float v = to_f32(xr[i]);
    if (rr) {
      T sum = from_f32<T>(v + to_f32(rr[i]));
      xr[i] = sum;
      v = to_f32(sum);
    }
    rowbuf[i] = v;
    ss += v * v;
  }
  return block_sum(ss, scratch);
}

// SiLU(g) * u in f32, before the rounding to the activation type (silu_mul_kernel, silu_mul_fp8_kernel).
__device__ __forceinline__ float silu_mul_f32(float g, float u) { return g / (1.f + __expf(-g)) * u; }

// RoPE: element indices of rotation pair i of a head of hd values ((i, i + hd/2) for the half layout,
// (2i, 2i + 1) interleaved), and the rotation of (x0, x1) by angle p * inv_freq. Shared by rope_store_kv
// and rope_store_kv_paged so that both caches hold bit-identical keys.
template <bool kInterleaved>
__device__ __forceinline__ void rope_pair_index(int i, int hd, int& i0, int& i1) {
  i0 = kInterleaved ? 2 * i : i;
  i1 = kInterleaved ? 2 * i + 1 : i + hd / 2;
}
__device__ __forceinline__ void rope_rotate(float x0, float x1, int p, float inv_freq, float& r0, float& r1) {
  float s, c;
  sincosf(float(p) * inv_freq, &s, &c);
  r0 = x0 * c - x1 * s;
  r1 = x1 * c + x0 * s;
}

// Programmatic dependent launch (Hopper): a kernel launched with launch_kernel(pdl = true) may start while
// the previous kernel in the stream is still running. Every kernel so launched calls pdl_wait() before
// it reads anything an earlier kernel wrote or writes anything at all (only constant data such as
// weights may be touched before), and pdl_trigger() early so that the next kernel can be scheduled.
// Both are no-ops when the kernel was launched normally, and on pre-Hopper GPUs.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Hint: bring a 16-byte line into L2 (used for weights before pdl_wait).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Launches `kernel` on `stream`, with the programmatic-stream-serialization attribute when pdl is set.
template <typename... KArgs, typename... Args>
void launch_kernel(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = pdl ? attr : nullptr;
  cfg.numAttrs = pdl ? 1 : 0;
  LLAMARUN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace llamarun::cuda

// Calls FN<T>(args...) with T = __half or __nv_bfloat16 according to `act`.
#define LLAMARUN_DISPATCH_ACT(act, where, ...)         \
  do {                                                 \
    ::llamarun::cuda::check_act_dtype((act), (where)); \
    if ((act) == ::llamarun::DType::F16) {             \
      using T = __half;                                \
      __VA_ARGS__;                                     \
    } else {                                           \
      using T = __nv_bfloat16;                         \
      __VA_ARGS__;                                     \
    }                                                  \
  } while (0)
