// FP8 (E4M3) per-row quantization and the fp32 -> act rescale epilogue of the FP8 GEMM fallback.
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/fp8.h"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

bool fp8_supported(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();  // clear the error so that later launch checks don't report it
    return false;
  }
  return major * 10 + minor >= 89;
}

namespace {

constexpr int kQuantThreads = 256;
constexpr int kMaxGrid = 65535;

// 16 consecutive values of T (two 16-byte loads, kept as vector loads by __ldg) as floats.
template <typename T>
__device__ __forceinline__ void load16(const T* p, float* f) {
  const uint4* v = reinterpret_cast<const uint4*>(p);
  const uint4 a = __ldg(v), b = __ldg(v + 1);
  unpack8<T>(a, f);
  unpack8<T>(b, f + 8);
}

// E4M3 codes of (a / s, b / s), a in the low byte. The quotient is correctly rounded (__fdiv_rn, whatever
// the fast-math flags), then rounded to nearest even in E4M3 and saturated to +-448.
__device__ __forceinline__ uint32_t fp8x2(float a, float b, float s) {
  return __nv_cvt_float2_to_fp8x2(make_float2(__fdiv_rn(a, s), __fdiv_rn(b, s)), __NV_SATFINITE, __NV_E4M3);
}

// A row's E4M3 scale from its max |v|: max / 448, correctly rounded (1 for a zero row).
__device__ __forceinline__ float scale_of_max(float amax) {
  return amax > 0.f ? __fdiv_rn(amax, kFp8E4M3Max) : 1.f;
}

// The row's max |v| over the block (chunks of 16 values per thread), and its scale_of_max.
template <typename T>
__device__ __forceinline__ float row_max_scale(const T* row, int chunks, float* red) {
  float amax = 0.f;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float f[16];
    load16(row + size_t(c) * 16, f);
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(f[i]));
  }
  return scale_of_max(block_max(amax, red));
}

// The row's codes for scale s: two 16-byte loads and one 16-byte store per chunk of 16 values.
template <typename T>
__device__ __forceinline__ void row_codes(const T* row, int chunks, float s, uint8_t* qrow) {
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float f[16];
    load16(row + size_t(c) * 16, f);
    uint4 o;
    o.x = fp8x2(f[0], f[1], s) | (fp8x2(f[2], f[3], s) << 16);
    o.y = fp8x2(f[4], f[5], s) | (fp8x2(f[6], f[7], s) << 16);
    o.z = fp8x2(f[8], f[9], s) | (fp8x2(f[10], f[11], s) << 16);
    o.w = fp8x2(f[12], f[13], s) | (fp8x2(f[14], f[15], s) << 16);
    *reinterpret_cast<uint4*>(qrow + size_t(c) * 16) = o;
  }
}

// A block per row (grid-stride over rows). Pass 1: the row's max |v| (block reduction); pass 2 reads the
// row again (from L1 / L2) and writes the codes.
template <typename T>
__global__ void __launch_bounds__(kQuantThreads)
    fp8_quantize_rows_kernel(const T* __restrict__ src, int rows, int cols, uint8_t* __restrict__ q,
                             float* __restrict__ scale) {
  __shared__ float red[32];
  const int chunks = cols / 16;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = src + size_t(r) * cols;
    const float s = row_max_scale(row, chunks, red);
    if (threadIdx.x == 0) scale[r] = s;
    row_codes(row, chunks, s, q + size_t(r) * cols);
  }
}

// fp8_quantize_rows_search: as fp8_quantize_rows_kernel, with the scale chosen among
// amax / 448 * kFp8ScaleSteps[k] by the least sum of squared errors over the row. Pass 1: max |v|; pass 2:
// each thread's squared errors under every candidate (16 conversions per value), 16 block sums; pass 3
// writes the codes with the chosen scale.
struct ScaleSteps {  // kFp8ScaleSteps as a kernel argument (a host constant otherwise)
  float v[kFp8ScaleCandidates];
};

template <typename T>
__global__ void __launch_bounds__(kQuantThreads)
    fp8_quantize_rows_search_kernel(const T* __restrict__ src, int rows, int cols, uint8_t* __restrict__ q,
                                    float* __restrict__ scale, ScaleSteps steps) {
  __shared__ float red[32];
  const int chunks = cols / 16;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = src + size_t(r) * cols;
    const float s0 = row_max_scale(row, chunks, red);
    float err[kFp8ScaleCandidates];
#pragma unroll
    for (int k = 0; k < kFp8ScaleCandidates; ++k) err[k] = 0.f;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float f[16];
      load16(row + size_t(c) * 16, f);
#pragma unroll
      for (int k = 0; k < kFp8ScaleCandidates; ++k) {
        const float sk = s0 * steps.v[k];
#pragma unroll
        for (int i = 0; i < 16; i += 2) {
          const uint32_t two = fp8x2(f[i], f[i + 1], sk);
          const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two), __NV_E4M3));
          const float2 d = __half22float2(h);
          const float e0 = d.x * sk - f[i], e1 = d.y * sk - f[i + 1];
          err[k] = fmaf(e0, e0, fmaf(e1, e1, err[k]));
        }
      }
    }
    int best = 0;
    float best_err = 0.f;
    for (int k = 0; k < kFp8ScaleCandidates; ++k) {
      const float e = block_sum(err[k], red);
      if (k == 0 || e < best_err) best = k, best_err = e;  // ties keep the smaller scale
    }
    const float s = s0 * steps.v[best];
    if (threadIdx.x == 0) scale[r] = s;
    row_codes(row, chunks, s, q + size_t(r) * cols);
    __syncthreads();  // red is reused by the next row's reductions
  }
}

// E4M3 code of v / s: the per-element form of fp8x2 (the same correctly rounded quotient and conversion).
__device__ __forceinline__ uint8_t fp8_code(float v, float s) {
  return uint8_t(__nv_cvt_float_to_fp8(__fdiv_rn(v, s), __NV_SATFINITE, __NV_E4M3));
}

// add_rmsnorm_kernel (elementwise.cu) with fp8_quantize_rows_kernel of its output: the same block size
// (kRmsNormThreads), loops and reductions, so the residual stream, the normalised values (rounded to T) and
// hence the row's max, scale and codes are those of the two kernels; the normalised row is kept in shared
// memory instead of being stored.
template <typename T>
__global__ void add_rmsnorm_fp8_kernel(T* __restrict__ x, const T* __restrict__ residual,
                                       const T* __restrict__ w, int H, float eps, uint8_t* __restrict__ q,
                                       float* __restrict__ scale) {
  __shared__ float scratch[32];
  extern __shared__ float rowbuf[];  // H floats
  const int m = blockIdx.x;
  const float ss = residual_add_sumsq(x + size_t(m) * H, residual ? residual + size_t(m) * H : nullptr,
                                      rowbuf, H, scratch);
  const float inv = rsqrtf(ss / float(H) + eps);
  float amax = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float o = to_f32(from_f32<T>(rowbuf[i] * inv * to_f32(w[i])));
    rowbuf[i] = o;
    amax = fmaxf(amax, fabsf(o));
  }
  const float s = scale_of_max(block_max(amax, scratch));
  if (threadIdx.x == 0) scale[m] = s;
  uint8_t* qr = q + size_t(m) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) qr[i] = fp8_code(rowbuf[i], s);
}

// silu_mul_kernel's values (rounded to T) quantized per row as fp8_quantize_rows does: a block per row,
// the row computed twice (for its max, then for the codes) instead of stored.
template <typename T>
__device__ __forceinline__ float silu_mul_value(const T* g, const T* u, int i) {
  return to_f32(from_f32<T>(silu_mul_f32(to_f32(g[i]), to_f32(u[i]))));
}
template <typename T>
__global__ void silu_mul_fp8_kernel(const T* __restrict__ gu, int I, uint8_t* __restrict__ q,
                                    float* __restrict__ scale) {
  __shared__ float scratch[32];
  const int m = blockIdx.x;
  const T* g = gu + size_t(m) * 2 * I;
  const T* u = g + I;
  float amax = 0.f;
  for (int i = threadIdx.x; i < I; i += blockDim.x) amax = fmaxf(amax, fabsf(silu_mul_value(g, u, i)));
  const float s = scale_of_max(block_max(amax, scratch));
  if (threadIdx.x == 0) scale[m] = s;
  uint8_t* qr = q + size_t(m) * I;
  for (int i = threadIdx.x; i < I; i += blockDim.x) qr[i] = fp8_code(silu_mul_value(g, u, i), s);
}

template <typename T>
__device__ __forceinline__ void store4(T* p, const float* v) {
  uint2 u;
  u.x = bits16<T>(v[0]) | (bits16<T>(v[1]) << 16);
  u.y = bits16<T>(v[2]) | (bits16<T>(v[3]) << 16);
  *reinterpret_cast<uint2*>(p) = u;
}
template <>
__device__ __forceinline__ void store4<float>(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

// Four outputs per thread (N % 4 == 0: the four lie in one row), grid-stride.
template <typename TO>
__global__ void fp8_rescale_kernel(const float* acc, const float* __restrict__ xscale,
                                   const float* __restrict__ wscale, TO* y, int M, int N) {
  const int64_t total = int64_t(M) * N / 4;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = i * 4;
    const int m = int(e / N), n = int(e % N);
    const float4 a = *reinterpret_cast<const float4*>(acc + e);
    const float4 w = *reinterpret_cast<const float4*>(wscale + n);
    const float xs = xscale[m];
    float v[4] = {a.x * xs * w.x, a.y * xs * w.y, a.z * xs * w.z, a.w * xs * w.w};
    store4<TO>(y + e, v);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void fp8_quantize_rows(DType act, const void* src, int rows, int cols, void* q, float* scale,
                       cudaStream_t stream, Fp8Scale how) {
  if (cols <= 0 || cols % 16 != 0)
    fail("fp8_quantize_rows: cols = ", cols, " must be a positive multiple of 16 (16-byte code vectors)");
  if (rows < 0) fail("fp8_quantize_rows: rows = ", rows);
  if (rows == 0) return;
  if (!aligned16(src) || !aligned16(q)) fail("fp8_quantize_rows: src and q must be 16-byte aligned");
  if (!scale) fail("fp8_quantize_rows: no scale output");
  const int chunks = cols / 16;
  const int threads = std::min(kQuantThreads, (chunks + 31) / 32 * 32);
  const int grid = std::min(rows, kMaxGrid);
  ScaleSteps steps;
  std::copy(kFp8ScaleSteps, kFp8ScaleSteps + kFp8ScaleCandidates, steps.v);
  LLAMARUN_DISPATCH_ACT(act, "fp8_quantize_rows", {
    if (how == Fp8Scale::kSearch)
      fp8_quantize_rows_search_kernel<T><<<grid, threads, 0, stream>>>(
          static_cast<const T*>(src), rows, cols, static_cast<uint8_t*>(q), scale, steps);
    else
      fp8_quantize_rows_kernel<T><<<grid, threads, 0, stream>>>(static_cast<const T*>(src), rows, cols,
                                                                static_cast<uint8_t*>(q), scale);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("fp8_quantize_rows");
}

void add_rmsnorm_fp8(DType act, void* x, const void* residual, const void* w, int M, int H, float eps,
                     void* q, float* scale, cudaStream_t stream) {
  if (M <= 0) return;
  if (H > kRmsNormMaxHidden)
    fail("add_rmsnorm_fp8: hidden size ", H, " too large (max ", kRmsNormMaxHidden, ")");
  const size_t smem = size_t(H) * sizeof(float);
  if (!scale) fail("add_rmsnorm_fp8: no scale output");
  LLAMARUN_DISPATCH_ACT(act, "add_rmsnorm_fp8", {
    add_rmsnorm_fp8_kernel<T><<<M, kRmsNormThreads, smem, stream>>>(
        static_cast<T*>(x), static_cast<const T*>(residual), static_cast<const T*>(w), H, eps,
        static_cast<uint8_t*>(q), scale);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("add_rmsnorm_fp8");
}

void silu_mul_fp8(DType act, const void* gu, int M, int I, void* q, float* scale, cudaStream_t stream) {
  if (M <= 0) return;
  if (!scale) fail("silu_mul_fp8: no scale output");
  LLAMARUN_DISPATCH_ACT(act, "silu_mul_fp8", {
    silu_mul_fp8_kernel<T>
        <<<M, kQuantThreads * 2, 0, stream>>>(static_cast<const T*>(gu), I, static_cast<uint8_t*>(q), scale);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("silu_mul_fp8");
}

void fp8_rescale(DType act, const float* acc, const float* xscale, const float* wscale, void* y, bool y_f32,
                 int M, int N, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  if (N % 4 != 0) fail("fp8_rescale: N = ", N, " must be a multiple of 4");
  if (!aligned16(acc) || !aligned16(y) || !aligned16(wscale))
    fail("fp8_rescale: the accumulator, the output and the weight scales must be 16-byte aligned");
  const int64_t vecs = int64_t(M) * N / 4;
  const int threads = 256;
  const int grid = int(std::min<int64_t>((vecs + threads - 1) / threads, kMaxGrid));
  if (y_f32) {
    check_act_dtype(act, "fp8_rescale");
    fp8_rescale_kernel<float>
        <<<grid, threads, 0, stream>>>(acc, xscale, wscale, static_cast<float*>(y), M, N);
  } else {
    LLAMARUN_DISPATCH_ACT(act, "fp8_rescale", {
      fp8_rescale_kernel<T><<<grid, threads, 0, stream>>>(acc, xscale, wscale, static_cast<T*>(y), M, N);
    });
  }
  LLAMARUN_CUDA_LAUNCH_CHECK("fp8_rescale");
}

}  // namespace llamarun::cuda
