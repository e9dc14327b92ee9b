// Row and element-wise kernels: embedding lookup, fused residual-add + RMSNorm, SiLU-and-multiply,
// dtype conversion at load, random fills.
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/sampling_rng.h"

namespace llamarun::cuda {

void check_act_dtype(DType act, const char* where) {
  if (act != DType::F16 && act != DType::BF16)
    fail(where, ": activation dtype must be f16 or bf16, got ", dtype_name(act));
}

namespace {

constexpr int kRowThreads = 256;

// One block per row; 16-byte vectors when H % 8 == 0 (always for Llama sizes), scalar tail otherwise.
template <typename T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table, int V, int H,
                                 T* __restrict__ out) {
  int m = blockIdx.x;
  int id = ids[m];
  T* o = out + size_t(m) * H;
  bool ok = id >= 0 && id < V;
  const T* row = table + size_t(ok ? id : 0) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = ok ? row[i] : from_f32<T>(0.f);
}

template <typename T>
__global__ void add_rmsnorm_kernel(T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ w,
                                   T* __restrict__ out, int H, float eps) {
  __shared__ float scratch[32];
  extern __shared__ float rowbuf[];  // H floats: the updated row, kept for the second pass
  int m = blockIdx.x;
  const float ss = residual_add_sumsq(x + size_t(m) * H, residual ? residual + size_t(m) * H : nullptr,
                                      rowbuf, H, scratch);
  float inv = rsqrtf(ss / float(H) + eps);
  T* o = out + size_t(m) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = from_f32<T>(rowbuf[i] * inv * to_f32(w[i]));
}

template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gu, T* __restrict__ out, int I) {
  int m = blockIdx.y;
  const T* g = gu + size_t(m) * 2 * I;
  const T* u = g + I;
  T* o = out + size_t(m) * I;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < I; i += gridDim.x * blockDim.x) {
    o[i] = from_f32<T>(silu_mul_f32(to_f32(g[i]), to_f32(u[i])));
  }
}

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// One thread per output value.
template <typename T>
__global__ void convert_kernel(DType src_type, const void* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.f;
    switch (src_type) {
      case DType::F32:
        v = static_cast<const float*>(src)[i];
        break;
      case DType::F16:
        v = h2f(static_cast<const uint16_t*>(src)[i]);
        break;
      case DType::BF16:
        v = __bfloat162float(__ushort_as_bfloat16(static_cast<const uint16_t*>(src)[i]));
        break;
      default:
        break;
    }
    dst[i] = from_f32<T>(v);
  }
}

template <typename T>
__global__ void fill_random_kernel(T* __restrict__ dst, int64_t n, float scale, uint64_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float u = sample_uniform(seed, uint64_t(i));
    dst[i] = from_f32<T>((2.f * u - 1.f) * scale);
  }
}

template <typename T>
__global__ void fill_const_kernel(T* __restrict__ dst, int64_t n, float value) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<T>(value);
}

int grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return int(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

}  // namespace

void embedding(DType act, const int32_t* ids, int M, const void* table, int V, int H, void* out,
               cudaStream_t stream) {
  if (M <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "embedding", {
    embedding_kernel<T>
        <<<M, kRowThreads, 0, stream>>>(ids, static_cast<const T*>(table), V, H, static_cast<T*>(out));
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("embedding");
}

void add_rmsnorm(DType act, void* x, const void* residual, const void* w, void* out, int M, int H, float eps,
                 cudaStream_t stream) {
  if (M <= 0) return;
  if (H > kRmsNormMaxHidden) fail("add_rmsnorm: hidden size ", H, " too large (max ", kRmsNormMaxHidden, ")");
  const size_t smem = size_t(H) * sizeof(float);
  LLAMARUN_DISPATCH_ACT(act, "add_rmsnorm", {
    add_rmsnorm_kernel<T>
        <<<M, kRmsNormThreads, smem, stream>>>(static_cast<T*>(x), static_cast<const T*>(residual),
                                               static_cast<const T*>(w), static_cast<T*>(out), H, eps);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("add_rmsnorm");
}

void silu_mul(DType act, const void* gu, void* out, int M, int I, cudaStream_t stream) {
  if (M <= 0) return;
  dim3 grid((I + kRowThreads - 1) / kRowThreads, M);
  LLAMARUN_DISPATCH_ACT(act, "silu_mul", {
    silu_mul_kernel<T><<<grid, kRowThreads, 0, stream>>>(static_cast<const T*>(gu), static_cast<T*>(out), I);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("silu_mul");
}

void convert_to_act(DType act, DType src_type, const void* src, void* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (src_type != DType::F32 && src_type != DType::F16 && src_type != DType::BF16)
    fail("convert_to_act: ", dtype_name(src_type), " is not F32, F16 or BF16 (block types: qdequant)");
  LLAMARUN_DISPATCH_ACT(act, "convert_to_act", {
    convert_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(src_type, src, static_cast<T*>(dst), n);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("convert_to_act");
}

void fill_random(DType act, void* dst, int64_t n, float scale, uint64_t seed, cudaStream_t stream) {
  if (n <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "fill_random", {
    fill_random_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<T*>(dst), n, scale, seed);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("fill_random");
}

void fill_const(DType act, void* dst, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  LLAMARUN_DISPATCH_ACT(act, "fill_const", {
    fill_const_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<T*>(dst), n, value);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("fill_const");
}

}  // namespace llamarun::cuda
