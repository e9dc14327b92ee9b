// Quantized weights on the GPU: GGML block types (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) kept in their bytes,
// reordered at load into qlayout.h's layout, read by a decode GEMV that dequantizes in registers, and by a
// dequantize kernel that feeds the tensor-core GEMM of prefill / large batches.
//
// The GEMV multiplies int8 activations (quantized per 32 values, like llama.cpp's q8_1: x ~ d * q with
// d = max|x| / 127, plus s = d * sum(q) for the types with an offset) with the weights' integer quants by
// dp4a, and applies the block scales in fp32. Each warp owns one output row; each lane decodes one unit of
// 32 values at a time (qgpu::Dec) and multiplies it with M rows of x, which are stored in the same grouped
// order as Q8_0's quants (qgpu::qx_off), so that the lanes' 16-byte loads of x are contiguous too.
#include <algorithm>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/qlayout.h"

namespace llamarun::cuda {

size_t qmatrix_bytes(DType t, int64_t rows, int64_t cols) {
  QLayout l;
  if (!qlayout(t, &l)) fail("qmatrix_bytes: ", dtype_name(t), " is not a GPU quantized type");
  return size_t(rows) * size_t(cols / l.block) * size_t(l.payload + l.header);
}

void qpack_rows(DType t, const void* src, int64_t rows, int64_t cols, void* payload, void* header) {
  if (!qlayout(t)) fail("qpack_rows: ", dtype_name(t), " is not a GPU quantized type");
  qgpu::pack_rows(t, src, rows, cols, payload, header);
}

namespace {

constexpr int kWarps = 8;
using qgpu::Dec;
using qgpu::qx_off;
using qgpu::with_qtype;

struct QFuse {
  int prologue;        // GemvPrologue
  const void* norm_w;  // kRmsNorm: [K]
  float eps;
  bool add;  // y += result
  bool y_f32;
  int ldy;
  bool x_smem;  // a pre-quantized x (gq) copied into shared memory once per block
};

// Row m of x: K values, or gate | up (2 K) with the SiLU-mul prologue.
template <typename T>
__device__ __forceinline__ const T* x_row(const T* x, int m, int K, const QFuse& f) {
  return x + size_t(m) * (f.prologue == int(GemvPrologue::kSiluMul) ? 2 * K : K);
}

// 1 / rms of row m of x over K values (RMSNorm), summed by the whole block; 1 without the RMSNorm prologue.
template <typename T>
__device__ float row_inv_rms(const T* __restrict__ xr, int K, const QFuse& f, float* red) {
  if (f.prologue != int(GemvPrologue::kRmsNorm)) return 1.f;
  float sum = 0.f;
  for (int i = threadIdx.x; i < K; i += blockDim.x) {
    const float v = to_f32(xr[i]);
    sum += v * v;
  }
  return rsqrtf(block_sum(sum, red) / float(K) + f.eps);
}

// Units [c0, c1) of row m of x' (the prologue applied to x, rounded to T as the unfused kernels would store
// it; inv: row_inv_rms) quantized to int8 per 32 values: x' ~ d * q, d = max|x'| / 127, q stored at qx_off
// in q (the row's K bytes), s[c] = (d, d * sum q). Two adjacent threads share a unit (16 values each, one
// shuffle for the maximum and one for the sum), so the whole block quantizes K / 32 units in about
// K / 16 / blockDim.x steps instead of a warp-wide reduction chain per unit. Every thread of the block
// must call it (the shuffles need the whole warp).
template <typename T>
__device__ void quantize_units(const T* __restrict__ xr, int K, const QFuse& f, float inv, int c0, int c1,
                               int8_t* __restrict__ q, float2* __restrict__ s) {
  const int units = K / 32;
  const int halves = 2 * (c1 - c0);
  for (int base = 0; base < halves; base += blockDim.x) {  // the same trip count for every thread
    const int h = base + int(threadIdx.x);
    const bool on = h < halves;  // pairs are both on or both off (halves and blockDim.x are even)
    const int c = c0 + (h >> 1), half = h & 1;
    float v[16] = {};
    float amax = 0.f;
    if (on) {
      const int k0 = c * 32 + half * 16;
      float a[16];
      unpack8<T>(ld_v4(xr + k0), a);
      unpack8<T>(ld_v4(xr + k0 + 8), a + 8);
      if (f.prologue == int(GemvPrologue::kRmsNorm)) {
        float w[16];
        const T* nw = static_cast<const T*>(f.norm_w);
        unpack8<T>(ld_v4(nw + k0), w);
        unpack8<T>(ld_v4(nw + k0 + 8), w + 8);
#pragma unroll
        for (int i = 0; i < 16; ++i) v[i] = to_f32(from_f32<T>(a[i] * inv * w[i]));
      } else if (f.prologue == int(GemvPrologue::kSiluMul)) {
        float u[16];
        unpack8<T>(ld_v4(xr + K + k0), u);
        unpack8<T>(ld_v4(xr + K + k0 + 8), u + 8);
#pragma unroll
        for (int i = 0; i < 16; ++i) v[i] = to_f32(from_f32<T>(a[i] / (1.f + __expf(-a[i])) * u[i]));
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) v[i] = a[i];
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    const float d = amax / 127.f;
    int sum = 0;
    uint32_t packed[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t w = 0;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int qi = amax > 0.f ? max(-127, min(127, __float2int_rn(v[4 * j + b] / d))) : 0;
        sum += qi;
        w |= uint32_t(qi & 0xff) << (8 * b);
      }
      packed[j] = w;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (on) {
      *reinterpret_cast<uint4*>(q + qx_off(c, units, half)) =
          make_uint4(packed[0], packed[1], packed[2], packed[3]);
      if (half == 0) s[c] = make_float2(d, d * float(sum));
    }
  }
}

// qquantize_x: block (bx, m) quantizes units [128 bx, 128 bx + 128) of row m into the global buffer (q
// [M][K], then s [M][K / 32]); with the RMSNorm prologue every block sums its row's squares itself (K values
// from L2), so the quantization is spread over the GPU instead of one block per row.
constexpr int kQuantUnitsPerBlock = 128;
template <typename T>
__global__ void __launch_bounds__(256) qquantize_x_kernel(const T* __restrict__ x, int K, QFuse f,
                                                          int8_t* __restrict__ q, float2* __restrict__ s) {
  __shared__ float red[32];
  pdl_trigger();
  pdl_wait();
  const int m = blockIdx.y, units = K / 32;
  const T* xr = x_row(x, m, K, f);
  const float inv = row_inv_rms(xr, K, f, red);
  const int c0 = blockIdx.x * kQuantUnitsPerBlock;
  quantize_units(xr, K, f, inv, c0, min(units, c0 + kQuantUnitsPerBlock), q + size_t(m) * K,
                 s + size_t(m) * units);
}

// One unit of 32 values (decoded: q, a, b) times the int8 x' of those 32 positions (x0: values 0-15, x1:
// 16-31, sc: x's scale and sum term): the int32 dot products (one chain for one-scale types, one per 16
// values otherwise) scaled to f32.
template <typename D>
__device__ __forceinline__ float unit_dot(const int* q, const int4& x0, const int4& x1, const float* a,
                                          float b, const float2& sc) {
  int s0 = __dp4a(q[0], x0.x, 0);
  s0 = __dp4a(q[1], x0.y, s0);
  s0 = __dp4a(q[2], x0.z, s0);
  s0 = __dp4a(q[3], x0.w, s0);
  if constexpr (D::kOneScale) {  // one scale for the unit's 32 values: one sum
    s0 = __dp4a(q[4], x1.x, s0);
    s0 = __dp4a(q[5], x1.y, s0);
    s0 = __dp4a(q[6], x1.z, s0);
    s0 = __dp4a(q[7], x1.w, s0);
    return sc.x * (a[0] * float(s0)) + b * sc.y;
  } else {
    int s1 = __dp4a(q[4], x1.x, 0);
    s1 = __dp4a(q[5], x1.y, s1);
    s1 = __dp4a(q[6], x1.z, s1);
    s1 = __dp4a(q[7], x1.w, s1);
    return sc.x * (a[0] * float(s0) + a[1] * float(s1)) + b * sc.y;
  }
}

// y[o] = v, or y[o] += v with f.add; y fp32 (f.y_f32) or T.
template <typename T>
__device__ __forceinline__ void store_y(const QFuse& f, void* y, size_t o, float v) {
  if (f.y_f32) {
    float* yo = static_cast<float*>(y) + o;
    *yo = f.add ? *yo + v : v;
  } else {
    T* yo = static_cast<T*>(y) + o;
    *yo = from_f32<T>(f.add ? to_f32(*yo) + v : v);
  }
}

// y[m * ldy + row] (+)= sum_k x'[m, k] W[row, k] for the M rows of x (MT >= M). The int8 x' comes either
// from qquantize_x (gq / gs: read from global memory, where it stays in L1 / L2) or, when gq is null, each
// block quantizes x itself into shared memory (sq [MT][K], ss [MT][K / 32]). Each warp takes rows row,
// row + gridDim.x * warps, ..., 4 units per lane at a time (kBatch): their weights are loaded and decoded,
// then multiplied; the first batch of the warp's first row before the PDL wait and the staging of x
// (weights are constant), so that those loads are in flight across the previous kernel's tail.
// kRaw: the batch held as loaded (Dec::Raw: packed quants, float scales) and unpacked unit by unit in the
// products, instead of unpacked at load (4-8 registers a unit fewer: at 64 registers a thread the
// unpacked batch spilled, ncu).
// kPre: compiled for a pre-quantized x only (gq never null; no staging code, whose registers would
// otherwise count against the streaming loop's).
constexpr int kBatch = 4;
template <DType QT, int MT, int kMinBlocks, bool kRaw, bool kPre, typename T>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks)
    qgemv_kernel(const uint8_t* __restrict__ pay, const uint8_t* __restrict__ hdr, int N, int K,
                 const T* __restrict__ x, int M, QFuse f, const int8_t* gq, const float2* gs,
                 void* __restrict__ y) {
  using D = Dec<QT>;
  extern __shared__ int4 smem_q[];
  __shared__ float red[32];
  pdl_trigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int chunks = K / 32;
  const int nb = K / D::kBlock;
  const int stride = gridDim.x * kWarps;
  typename D::Raw raw[kBatch];  // kRaw
  int q[kBatch][8];
  float a[kBatch][2], b[kBatch];
  auto load = [&](int row, int u0) {
    const uint8_t* prow = pay + size_t(row) * nb * D::kPayload;
    const uint8_t* hrow = hdr + size_t(row) * nb * D::kHeader;
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      if (u0 + 32 * i >= chunks) continue;
      if constexpr (kRaw)
        raw[i] = D::load(prow, hrow, chunks, u0 + 32 * i);
      else
        D::run(prow, hrow, chunks, u0 + 32 * i, q[i], a[i], b[i]);
    }
  };
  int row = blockIdx.x * kWarps + warp;
  if (row < N) load(row, lane);
  pdl_wait();  // x, and y when adding, come from earlier kernels
  const int8_t* sq = gq;
  const float2* ss = gs;
  if (!kPre && !gq) {
    int8_t* qx = reinterpret_cast<int8_t*>(smem_q);
    float2* sx = reinterpret_cast<float2*>(qx + size_t(MT) * K);
    for (int m = 0; m < M; ++m) {
      const T* xr = x_row(x, m, K, f);
      quantize_units(xr, K, f, row_inv_rms(xr, K, f, red), 0, chunks, qx + size_t(m) * K,
                     sx + size_t(m) * chunks);
    }
    sq = qx;
    ss = sx;
    __syncthreads();
  } else if (f.x_smem) {  // the pre-quantized x into shared memory: 16-byte quants, 8-byte scales
    int8_t* qx = reinterpret_cast<int8_t*>(smem_q);
    float2* sx = reinterpret_cast<float2*>(qx + size_t(MT) * K);
    const int q16 = M * K / 16, ns = M * chunks;
    for (int i = threadIdx.x; i < q16; i += blockDim.x)
      reinterpret_cast<int4*>(qx)[i] = reinterpret_cast<const int4*>(gq)[i];
    for (int i = threadIdx.x; i < ns; i += blockDim.x) sx[i] = gs[i];
    sq = qx;
    ss = sx;
    __syncthreads();
  }
  for (; row < N; row += stride) {
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[m] = 0.f;
    for (int u0 = lane; u0 < chunks; u0 += 32 * kBatch) {
      if (u0 != lane) load(row, u0);  // the row's first batch is loaded already
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        const int u = u0 + 32 * i;
        if (u >= chunks) break;
        if constexpr (kRaw) D::decode(raw[i], q[i], a[i], b[i]);
        const int o0 = qx_off(u, chunks, 0), o1 = qx_off(u, chunks, 1);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (m >= M) break;
          const int8_t* xq = sq + size_t(m) * K;
          const int4 x0 = *reinterpret_cast<const int4*>(xq + o0);
          const int4 x1 = *reinterpret_cast<const int4*>(xq + o1);
          acc[m] += unit_dot<D>(q[i], x0, x1, a[i], b[i], ss[size_t(m) * chunks + u]);
        }
      }
    }
    if (row + stride < N) load(row + stride, lane);  // the next row's first batch, before this row's sums
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m >= M) break;
      const float v = warp_sum(acc[m]);
      if (lane != 0) continue;
      store_y<T>(f, y, size_t(m) * f.ldy + row, v);
    }
  }
}

// M = 1 with x quantized beforehand: each warp multiplies kR rows at once (rows kR w .. kR w + kR - 1),
// each lane taking kB units of every row per batch (kR kB = 4: the registers of qgemv_kernel's batch), so
// each unit's x (two 16-byte loads from L1 and its scales) is loaded once for kR rows and the rows'
// warp sums run interleaved. ncu put about a third of the default GEMV's stall samples on the x loads and
// 15% on the per-row sum.
template <DType QT, int kR, int kB, typename T>
__global__ void __launch_bounds__(kWarps * 32, 4)
    qgemv_rows_kernel(const uint8_t* __restrict__ pay, const uint8_t* __restrict__ hdr, int N, int K, QFuse f,
                      const int8_t* __restrict__ gq, const float2* __restrict__ gs, void* __restrict__ y) {
  using D = Dec<QT>;
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int r0 = kR * (blockIdx.x * kWarps + (threadIdx.x >> 5));
  if (r0 >= N) return;
  const int chunks = K / 32, nb = K / D::kBlock;
  typename D::Raw raw[kR][kB];
  auto load = [&](int u0) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      if (r0 + r >= N) break;
      const uint8_t* prow = pay + size_t(r0 + r) * nb * D::kPayload;
      const uint8_t* hrow = hdr + size_t(r0 + r) * nb * D::kHeader;
#pragma unroll
      for (int i = 0; i < kB; ++i)
        if (u0 + 32 * i < chunks) raw[r][i] = D::load(prow, hrow, chunks, u0 + 32 * i);
    }
  };
  load(lane);
  pdl_wait();  // x, and y when adding, come from earlier kernels
  float acc[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) acc[r] = 0.f;
  for (int u0 = lane; u0 < chunks; u0 += 32 * kB) {
    if (u0 != lane) load(u0);
#pragma unroll
    for (int i = 0; i < kB; ++i) {
      const int u = u0 + 32 * i;
      if (u >= chunks) break;
      const int4 x0 = *reinterpret_cast<const int4*>(gq + qx_off(u, chunks, 0));
      const int4 x1 = *reinterpret_cast<const int4*>(gq + qx_off(u, chunks, 1));
      const float2 sc = gs[u];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        int q[8];
        float a[2], b;
        D::decode(raw[r][i], q, a, b);
        acc[r] += unit_dot<D>(q, x0, x1, a, b, sc);
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    if (r0 + r >= N) break;
    store_y<T>(f, y, size_t(r0 + r), acc[r]);
  }
}

// One thread per unit of 32 values: W [N, K] -> dst [N, K] in T. kSmem: the block's 256 units (16 KiB of
// fp16 / bf16, contiguous in dst since dst is dense) are staged in shared memory and stored 16 bytes a lane
// contiguously, instead of each lane storing its unit's 64 bytes in four 16-byte stores 64 bytes apart.
constexpr int kDequantThreads = 256;
template <DType QT, typename T, bool kSmem>
__global__ void __launch_bounds__(kDequantThreads)
    qdequant_kernel(const uint8_t* __restrict__ pay, const uint8_t* __restrict__ hdr, int N, int K,
                    T* __restrict__ dst) {
  using D = Dec<QT>;
  __shared__ uint4 stage[kSmem ? kDequantThreads * 4 : 1];
  const int upr = K / 32;
  const int64_t units = int64_t(N) * upr, t0 = int64_t(blockIdx.x) * kDequantThreads;
  const int64_t t = t0 + threadIdx.x;
  if (t < units) {
    const int row = int(t / upr), u = int(t % upr);
    const int nb = K / D::kBlock;
    int q[8];
    float a[2], b;
    D::run(pay + size_t(row) * nb * D::kPayload, hdr + size_t(row) * nb * D::kHeader, upr, u, q, a, b);
    T* out = dst + size_t(t) * 32;  // = row * K + 32 u: dst is dense
#pragma unroll
    for (int e = 0; e < 32; e += 8) {
      float f[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int k = e + i;
        const int v = int(int8_t(uint32_t(q[k >> 2]) >> (8 * (k & 3))));
        f[i] = a[k >> 4] * float(v) + b;
      }
      if constexpr (kSmem)
        stage[4 * threadIdx.x + e / 8] = pack8<T>(f);
      else
        *reinterpret_cast<uint4*>(out + e) = pack8<T>(f);
    }
  }
  if constexpr (kSmem) {
    __syncthreads();
    // The block's units are dst's 16-byte chunks [4 t0, 4 t0 + 4 n): lane-contiguous stores.
    const int64_t n = units - t0 < kDequantThreads ? units - t0 : kDequantThreads;
    uint4* o = reinterpret_cast<uint4*>(dst) + 4 * t0;
    for (int i = threadIdx.x; i < 4 * n; i += kDequantThreads) o[i] = stage[i];
  }
}

// Launches MT's instantiation for M rows. Staging x in each block (gq null): a grid of one resident wave
// (as many blocks as fit on the SMs at once), each block staging x once and then streaming rows, with
// shared memory for MT rows of quantized x. With x quantized beforehand: one row per warp, as many blocks
// as that takes, or with `resident` one resident wave whose warps stream rows (each loading its next row's
// first weights before the current row's sums), x copied into shared memory per block with f.x_smem.
// occupancy4 (M = 1): the instantiation compiled for 4 resident blocks per SM (at most 64 registers a
// thread), so that 4,096 rows fit one wave.
template <DType QT, int MT, int kMinBlocks, bool kRaw = true, bool kPre = false>
void launch_qgemv_t(DType act, const QMatrix& w, const void* x, int M, const QFuse& f, const int8_t* gq,
                    const float2* gs, void* y, cudaStream_t stream, bool pdl, bool resident) {
  thread_local int sm_count = 0;
  if (!sm_count) {
    int dev = 0;
    LLAMARUN_CUDA_CHECK(cudaGetDevice(&dev));
    LLAMARUN_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
  }
  const size_t smem = gq && !f.x_smem ? 0 : size_t(MT) * w.cols + size_t(MT) * (w.cols / 32) * sizeof(float2);
  const int row_blocks = (w.rows + kWarps - 1) / kWarps;
  const auto* pay = static_cast<const uint8_t*>(w.data);
  const uint8_t* hdr = pay + w.payload_bytes();
  LLAMARUN_DISPATCH_ACT(act, "qgemv", {
    auto kernel = qgemv_kernel<QT, MT, kMinBlocks, kRaw, kPre, T>;
    if (smem > 48 * 1024) {
      static size_t opted = 0;  // per instantiation
      if (smem > opted) {
        LLAMARUN_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        opted = smem;
      }
    }
    int blocks = row_blocks;
    if (!gq || resident) {  // the occupancy per shared-memory size, asked once per instantiation
      thread_local size_t asked = ~size_t(0);
      thread_local int per_sm = 0;
      if (asked != smem) {
        LLAMARUN_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem));
        asked = smem;
      }
      blocks = std::min(row_blocks, std::max(1, per_sm) * sm_count);
    }
    launch_kernel(pdl, kernel, dim3(blocks), dim3(kWarps * 32), smem, stream, pay, hdr, w.rows, w.cols,
                  static_cast<const T*>(x), M, f, gq, gs, y);
  });
}

template <DType QT, int kR, int kB>
void launch_qgemv_rows(DType act, const QMatrix& w, const QFuse& f, const int8_t* gq, const float2* gs,
                       void* y, cudaStream_t stream, bool pdl) {
  const int rows_per_block = kR * kWarps;
  const auto* pay = static_cast<const uint8_t*>(w.data);
  const uint8_t* hdr = pay + w.payload_bytes();
  LLAMARUN_DISPATCH_ACT(act, "qgemv", {
    launch_kernel(pdl, qgemv_rows_kernel<QT, kR, kB, T>, dim3((w.rows + rows_per_block - 1) / rows_per_block),
                  dim3(kWarps * 32), 0, stream, pay, hdr, w.rows, w.cols, f, gq, gs, y);
  });
}

template <DType QT>
void launch_qgemv_m(DType act, const QMatrix& w, const void* x, int M, const QFuse& f, const int8_t* gq,
                    const float2* gs, void* y, cudaStream_t stream, bool pdl, bool occupancy4, bool resident,
                    bool decode_at_load, int rows) {
  if (M == 1) {
    if (gq && rows == 2) return launch_qgemv_rows<QT, 2, 2>(act, w, f, gq, gs, y, stream, pdl);
    if (gq && rows == 4) return launch_qgemv_rows<QT, 4, 1>(act, w, f, gq, gs, y, stream, pdl);
    if (occupancy4 && gq && decode_at_load)
      return launch_qgemv_t<QT, 1, 4, false, false>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
    if (occupancy4 && gq)
      return launch_qgemv_t<QT, 1, 4, true, true>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
    if (occupancy4) return launch_qgemv_t<QT, 1, 4>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
    return launch_qgemv_t<QT, 1, 1>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
  }
  if (M == 2) return launch_qgemv_t<QT, 2, 1>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
  if (M <= 4) return launch_qgemv_t<QT, 4, 1>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
  return launch_qgemv_t<QT, 8, 1>(act, w, x, M, f, gq, gs, y, stream, pdl, resident);
}

QFuse qfuse_of(const QGemvFusion& fusion, int rows) {
  return QFuse{int(fusion.prologue),
               fusion.norm_weight,
               fusion.eps,
               fusion.add_to_y,
               fusion.y_f32,
               fusion.ldy > 0 ? fusion.ldy : rows,
               fusion.xq8 && fusion.x_smem};
}

void check_prologue(const QGemvFusion& fusion, int M, int K, const char* where) {
  if (M < 1 || M > 8) fail(where, ": ", M, " rows of x (1 to 8)");
  if (K <= 0 || K % 32) fail(where, ": ", K, " columns is not a positive multiple of 32");
  if (fusion.prologue == GemvPrologue::kRmsNorm && !fusion.norm_weight)
    fail(where, ": the RMSNorm prologue needs the norm weight");
}

void check_qmatrix(const QMatrix& w, const char* where) {
  QLayout l;
  if (!qlayout(w.type, &l)) fail(where, ": ", dtype_name(w.type), " is not a GPU quantized type");
  if (w.rows <= 0 || w.cols <= 0 || w.cols % l.block)
    fail(where, ": a ", w.rows, " x ", w.cols, " ", dtype_name(w.type),
         " matrix (columns must be a positive ", "multiple of ", l.block, ")");
  if (reinterpret_cast<uintptr_t>(w.data) % 16) fail(where, ": the matrix is not 16-byte aligned");
}

}  // namespace

bool qlayout(DType t, QLayout* out) {
  return with_qtype(t, [&](auto tag) {
    using D = Dec<decltype(tag)::kType>;
    if (out) *out = {D::kBlock, D::kPayload, D::kHeader};
  });
}

size_t QMatrix::payload_bytes() const {
  QLayout l{1, 0, 0};
  if (!qlayout(type, &l)) fail("QMatrix: ", dtype_name(type), " is not a GPU quantized type");
  return size_t(rows) * size_t(cols / l.block) * size_t(l.payload);
}

size_t qx_bytes(int M, int K) { return size_t(M) * K + size_t(M) * (K / 32) * sizeof(float2); }

void qquantize_x(DType act, const void* x, int M, int K, const QGemvFusion& fusion, void* xq8,
                 cudaStream_t stream, bool pdl) {
  check_prologue(fusion, M, K, "qquantize_x");
  if (reinterpret_cast<uintptr_t>(xq8) % 16) fail("qquantize_x: the output buffer is not 16-byte aligned");
  const QFuse f = qfuse_of(fusion, 0);
  auto* q = static_cast<int8_t*>(xq8);
  auto* s = reinterpret_cast<float2*>(q + size_t(M) * K);
  const int units = K / 32;
  const dim3 grid((units + kQuantUnitsPerBlock - 1) / kQuantUnitsPerBlock, M);
  LLAMARUN_DISPATCH_ACT(act, "qquantize_x", {
    launch_kernel(pdl, qquantize_x_kernel<T>, grid, dim3(2 * kQuantUnitsPerBlock), 0, stream,
                  static_cast<const T*>(x), K, f, q, s);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("qquantize_x");
}

void qgemv(DType act, const QMatrix& w, const void* x, void* y, int M, const QGemvFusion& fusion,
           cudaStream_t stream, bool pdl) {
  check_qmatrix(w, "qgemv");
  check_prologue(fusion, M, w.cols, "qgemv");
  const QFuse f = qfuse_of(fusion, w.rows);
  const int8_t* gq = static_cast<const int8_t*>(fusion.xq8);
  const float2* gs = gq ? reinterpret_cast<const float2*>(gq + size_t(M) * w.cols) : nullptr;
  if (gq && reinterpret_cast<uintptr_t>(gq) % 16) fail("qgemv: the quantized x is not 16-byte aligned");
  with_qtype(w.type, [&](auto tag) {
    launch_qgemv_m<decltype(tag)::kType>(act, w, x, M, f, gq, gs, y, stream, pdl, fusion.occupancy4,
                                         gq && fusion.resident, fusion.decode_at_load, fusion.rows_per_warp);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("qgemv");
}

void qdequant(DType act, const QMatrix& w, void* dst, cudaStream_t stream, bool staged_stores) {
  check_qmatrix(w, "qdequant");
  const auto* pay = static_cast<const uint8_t*>(w.data);
  const uint8_t* hdr = pay + w.payload_bytes();
  LLAMARUN_DISPATCH_ACT(act, "qdequant", {
    with_qtype(w.type, [&](auto tag) {
      constexpr DType QT = decltype(tag)::kType;
      const int64_t n = int64_t(w.rows) * (w.cols / 32);
      const unsigned blocks = unsigned((n + kDequantThreads - 1) / kDequantThreads);
      if (staged_stores)
        qdequant_kernel<QT, T, true>
            <<<blocks, kDequantThreads, 0, stream>>>(pay, hdr, w.rows, w.cols, static_cast<T*>(dst));
      else
        qdequant_kernel<QT, T, false>
            <<<blocks, kDequantThreads, 0, stream>>>(pay, hdr, w.rows, w.cols, static_cast<T*>(dst));
    });
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("qdequant");
}

}  // namespace llamarun::cuda
