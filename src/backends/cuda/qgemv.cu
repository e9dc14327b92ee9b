// Quantized weights on the GPU: GGML block types (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) kept as they are in
// the file, read by a decode GEMV that dequantizes in registers, and by a dequantize kernel that feeds the
// tensor-core GEMM of prefill / large batches.
//
// Device layout ("split"): a matrix of `rows` rows of nb = cols / block blocks stores first every block's
// payload (the 16-byte aligned part: the quants, and for Q4_K / Q5_K the whole 144 / 176-byte block), then
// every block's header (the fp16 scale(s) that sit in front of the quants in GGML's layout and make its
// blocks 2-byte aligned: 34 bytes for Q8_0, 210 for Q6_K). The GEMV then reads the quants with 16-byte
// loads. Bytes are unchanged: a matrix takes exactly its GGUF size.
//
// The GEMV multiplies int8 activations (quantized per 32 values, like llama.cpp's q8_1: x ~ d * q with
// d = max|x| / 127, plus s = d * sum(q) for the types with an offset) with the weights' integer quants by
// dp4a, and applies the block scales in fp32. Each warp owns one output row; each lane decodes one "unit"
// of the row (32, 64 or 128 values, the span that one 16-byte-aligned read of quants covers) into int8
// quants q, per-16-value scales a and per-32-value offsets b (value = a * q + b), and multiplies it with M
// rows of x. The dequantize kernel shares that decoder.
#include <algorithm>
#include <cstring>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

size_t qmatrix_bytes(DType t, int64_t rows, int64_t cols) {
  QLayout l;
  if (!qlayout(t, &l)) fail("qmatrix_bytes: ", dtype_name(t), " is not a GPU quantized type");
  return size_t(rows) * size_t(cols / l.block) * size_t(l.payload + l.header);
}

void qpack_rows(DType t, const void* src, int64_t rows, int64_t cols, void* payload, void* header) {
  QLayout l;
  if (!qlayout(t, &l)) fail("qpack_rows: ", dtype_name(t), " is not a GPU quantized type");
  const size_t n = size_t(rows) * size_t(cols / l.block);
  const size_t bb = size_t(l.payload + l.header);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* p = static_cast<uint8_t*>(payload);
  auto* h = static_cast<uint8_t*>(header);
  if (l.header == 0) {
    std::memcpy(p, s, n * bb);
    return;
  }
  // Q6_K keeps its fp16 scale at the end of the block; the others at the front.
  const bool tail = t == DType::Q6_K;
  for (size_t i = 0; i < n; ++i, s += bb) {
    std::memcpy(p + i * l.payload, s + (tail ? 0 : l.header), l.payload);
    std::memcpy(h + i * l.header, s + (tail ? l.payload : 0), l.header);
  }
}

namespace {

constexpr int kWarps = 8;
constexpr uint32_t kLow4 = 0x0F0F0F0Fu;

__device__ __forceinline__ float h2f(uint32_t bits16) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16 & 0xffffu)));
}
__device__ __forceinline__ uint32_t byte_of(const uint32_t* w, int k) {
  return (w[k >> 2] >> (8 * (k & 3))) & 0xffu;
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j from the 12 scale bytes (as 3 words).
__device__ __forceinline__ void k4_scale_min(const uint32_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = int(byte_of(s, j) & 63);
    m = int(byte_of(s, j + 4) & 63);
  } else {
    sc = int((byte_of(s, j + 4) & 0x0f) | ((byte_of(s, j - 4) >> 6) << 4));
    m = int((byte_of(s, j + 4) >> 4) | ((byte_of(s, j) >> 6) << 4));
  }
}

__device__ __forceinline__ void words(const uint4& v, int* q) {
  q[0] = int(v.x);
  q[1] = int(v.y);
  q[2] = int(v.z);
  q[3] = int(v.w);
}

// Decoders: unit u of a row (payload row p, header row h) -> q[kUnit / 4] (4 int8 quants per int, in value
// order), a[kUnit / 16] (scale per 16 values), b[kUnit / 32] (offset per 32 values).
template <DType QT>
struct Dec;

template <>
struct Dec<DType::Q8_0> {
  static constexpr int kBlock = 32, kPayload = 32, kHeader = 2;
  static constexpr int kUnit = 32;
  __device__ static void run(const uint8_t* p, const uint8_t* h, int u, int* q, float* a, float* b) {
    words(ld_stream(p + size_t(u) * 32), q);
    words(ld_stream(p + size_t(u) * 32 + 16), q + 4);
    a[0] = a[1] = h2f(__ldg(reinterpret_cast<const uint16_t*>(h) + u));
    b[0] = 0.f;
  }
};

// Q4_0 / Q4_1: value i < 16 is the low nibble of byte i, value 16 + i its high nibble. The 16 bytes at p ->
// q[0..8): the 32 quants, 4 per int, in value order.
__device__ __forceinline__ void nibbles32(const uint8_t* p, int* q) {
  const uint4 v = ld_stream(p);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    q[i] = int(w[i] & kLow4);
    q[4 + i] = int((w[i] >> 4) & kLow4);
  }
}

template <>
struct Dec<DType::Q4_0> {
  static constexpr int kBlock = 32, kPayload = 16, kHeader = 2;
  static constexpr int kUnit = 32;
  __device__ static void run(const uint8_t* p, const uint8_t* h, int u, int* q, float* a, float* b) {
    nibbles32(p + size_t(u) * 16, q);
    const float d = h2f(__ldg(reinterpret_cast<const uint16_t*>(h) + u));
    a[0] = a[1] = d;
    b[0] = -8.f * d;
  }
};

template <>
struct Dec<DType::Q4_1> {
  static constexpr int kBlock = 32, kPayload = 16, kHeader = 4;
  static constexpr int kUnit = 32;
  __device__ static void run(const uint8_t* p, const uint8_t* h, int u, int* q, float* a, float* b) {
    nibbles32(p + size_t(u) * 16, q);
    const uint32_t dm = __ldg(reinterpret_cast<const uint32_t*>(h) + u);
    a[0] = a[1] = h2f(dm);
    b[0] = h2f(dm >> 16);
  }
};

// Q4_K: unit c (of 4 per block) = values 64c .. 64c + 63: the low nibbles of qs[32c .. 32c + 32) (sub-block
// 2c), then their high nibbles (sub-block 2c + 1). Q5_K adds bit j of qh[l] as the 5th bit of value
// 32j + l.
template <bool kFive>
__device__ __forceinline__ void dec_k45(const uint8_t* p, int u, int* q, float* a, float* b) {
  constexpr int kBlock = kFive ? 176 : 144;
  const int c = u & 3;
  const uint8_t* blk = p + size_t(u >> 2) * kBlock;
  const uint4 hd = ld_stream(blk);  // d, dmin, 12 scale bytes
  const int qs_off = (kFive ? 48 : 16) + 32 * c;
  const uint4 v0 = ld_stream(blk + qs_off), v1 = ld_stream(blk + qs_off + 16);
  const uint32_t w[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
  uint32_t hb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (kFive) {
    const uint4 h0 = ld_stream(blk + 16), h1 = ld_stream(blk + 32);
    const uint32_t hw[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) hb[i] = hw[i];
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    uint32_t lo = w[i] & kLow4, hi = (w[i] >> 4) & kLow4;
    if (kFive) {
      lo |= ((hb[i] >> (2 * c)) & 0x01010101u) << 4;
      hi |= ((hb[i] >> (2 * c + 1)) & 0x01010101u) << 4;
    }
    q[i] = int(lo);
    q[8 + i] = int(hi);
  }
  const uint32_t s[3] = {hd.y, hd.z, hd.w};
  const float d = h2f(hd.x), dmin = h2f(hd.x >> 16);
  int sc, m;
  k4_scale_min(s, 2 * c, sc, m);
  a[0] = a[1] = d * float(sc);
  b[0] = -dmin * float(m);
  k4_scale_min(s, 2 * c + 1, sc, m);
  a[2] = a[3] = d * float(sc);
  b[1] = -dmin * float(m);
}

template <>
struct Dec<DType::Q4_K> {
  static constexpr int kBlock = 256, kPayload = 144, kHeader = 0;
  static constexpr int kUnit = 64;
  __device__ static void run(const uint8_t* p, const uint8_t*, int u, int* q, float* a, float* b) {
    dec_k45<false>(p, u, q, a, b);
  }
};
template <>
struct Dec<DType::Q5_K> {
  static constexpr int kBlock = 256, kPayload = 176, kHeader = 0;
  static constexpr int kUnit = 64;
  __device__ static void run(const uint8_t* p, const uint8_t*, int u, int* q, float* a, float* b) {
    dec_k45<true>(p, u, q, a, b);
  }
};

// Q6_K: unit hh (of 2 per block) = values 128 hh + 32 t + l (t < 4, l < 32): low 4 bits from nibble t / 2
// of ql[64 hh + 32 (t % 2) + l], high 2 bits from bits 2t of qh[32 hh + l], minus 32; scale
// d * scales[8 hh + 2t + l / 16].
template <>
struct Dec<DType::Q6_K> {
  static constexpr int kBlock = 256, kPayload = 208, kHeader = 2;
  static constexpr int kUnit = 128;
  __device__ static void run(const uint8_t* p, const uint8_t* h, int u, int* q, float* a, float* b) {
    const int hh = u & 1;
    const uint8_t* blk = p + size_t(u >> 1) * 208;
    uint32_t L[16], Q[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = ld_stream(blk + 64 * hh + 16 * i);
      L[4 * i] = v.x, L[4 * i + 1] = v.y, L[4 * i + 2] = v.z, L[4 * i + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4 v = ld_stream(blk + 128 + 32 * hh + 16 * i);
      Q[4 * i] = v.x, Q[4 * i + 1] = v.y, Q[4 * i + 2] = v.z, Q[4 * i + 3] = v.w;
    }
    const uint4 sv = ld_stream(blk + 192);
    const uint32_t sw[2] = {hh ? sv.z : sv.x, hh ? sv.w : sv.y};
    // (v | 0x80) - 32, then flip bit 7 back: v - 32 per byte for v in [0, 64), without borrows between bytes.
    auto sub32 = [](uint32_t v) { return int(((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u); };
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      q[i] = sub32((L[i] & kLow4) | ((Q[i] & 0x03030303u) << 4));
      q[8 + i] = sub32((L[8 + i] & kLow4) | (((Q[i] >> 2) & 0x03030303u) << 4));
      q[16 + i] = sub32(((L[i] >> 4) & kLow4) | (((Q[i] >> 4) & 0x03030303u) << 4));
      q[24 + i] = sub32(((L[8 + i] >> 4) & kLow4) | (((Q[i] >> 6) & 0x03030303u) << 4));
    }
    const float d = h2f(__ldg(reinterpret_cast<const uint16_t*>(h) + (u >> 1)));
#pragma unroll
    for (int k = 0; k < 8; ++k) a[k] = d * float(int8_t(byte_of(sw, k)));
#pragma unroll
    for (int j = 0; j < 4; ++j) b[j] = 0.f;
  }
};

template <DType QT>
struct QTag {
  static constexpr DType kType = QT;
};
// Calls f(QTag<t>{}) for a GPU quantized type t; false for any other type.
template <typename F>
bool with_qtype(DType t, F&& f) {
  switch (t) {
    case DType::Q8_0:
      return f(QTag<DType::Q8_0>{}), true;
    case DType::Q4_0:
      return f(QTag<DType::Q4_0>{}), true;
    case DType::Q4_1:
      return f(QTag<DType::Q4_1>{}), true;
    case DType::Q4_K:
      return f(QTag<DType::Q4_K>{}), true;
    case DType::Q5_K:
      return f(QTag<DType::Q5_K>{}), true;
    case DType::Q6_K:
      return f(QTag<DType::Q6_K>{}), true;
    default:
      return false;
  }
}

// One warp per 32 values v (one per lane): q = round(v / d), d = max|v| / 127; xs = (d, d * sum q).
__device__ __forceinline__ void quantize32(float v, int8_t* xq, float2* xs) {
  const int lane = threadIdx.x & 31;
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.f;
  const int q = amax > 0.f ? max(-127, min(127, __float2int_rn(v / d))) : 0;
  xq[lane] = int8_t(q);
  const float s = warp_sum(float(q));
  if (lane == 0) *xs = make_float2(d, d * s);
}

struct QFuse {
  int prologue;        // GemvPrologue
  const void* norm_w;  // kRmsNorm: [K]
  float eps;
  bool add;  // y += result
  bool y_f32;
  int ldy;
};

// Row m of x' (the prologue applied to x, rounded to T as the unfused kernels would store it) quantized to
// int8 per 32 values: q [K], s [K / 32] = (d, d * sum q). Every thread of the block takes part (the
// RMSNorm's block sum); its warps take 32-value chunks in turn.
template <typename T>
__device__ void quantize_row(const T* __restrict__ x, int m, int K, const QFuse& f, int8_t* q, float2* s,
                             float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const T* xr = x + size_t(m) * (f.prologue == int(GemvPrologue::kSiluMul) ? 2 * K : K);
  float inv = 1.f;
  if (f.prologue == int(GemvPrologue::kRmsNorm)) {
    float sum = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
      const float v = to_f32(xr[i]);
      sum += v * v;
    }
    inv = rsqrtf(block_sum(sum, red) / float(K) + f.eps);
  }
  for (int c = warp; c < K / 32; c += warps) {
    const int i = c * 32 + lane;
    float v = to_f32(xr[i]);
    if (f.prologue == int(GemvPrologue::kRmsNorm)) {
      v = to_f32(from_f32<T>(v * inv * to_f32(static_cast<const T*>(f.norm_w)[i])));
    } else if (f.prologue == int(GemvPrologue::kSiluMul)) {
      const float sl = v / (1.f + __expf(-v));
      v = to_f32(from_f32<T>(sl * to_f32(xr[K + i])));
    }
    quantize32(v, q + c * 32, s + c);
  }
}

// qquantize_x: block m quantizes row m into the global buffer (q [M][K], then s [M][K / 32]).
template <typename T>
__global__ void __launch_bounds__(1024) qquantize_x_kernel(const T* __restrict__ x, int K, QFuse f,
                                                           int8_t* __restrict__ q, float2* __restrict__ s) {
  __shared__ float red[32];
  const int m = blockIdx.x;
  quantize_row(x, m, K, f, q + size_t(m) * K, s + size_t(m) * (K / 32), red);
}

// y[m * ldy + row] (+)= sum_k x'[m, k] W[row, k] for the M rows of x (MT >= M). The int8 x' comes either
// from qquantize_x (gq / gs: read from global memory, where it stays in L1 / L2) or, when gq is null, each
// block quantizes x itself into shared memory (sq [MT][K], ss [MT][K / 32]) before touching the weights.
// Each warp takes rows row, row + gridDim.x * warps, ...
template <DType QT, int MT, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    qgemv_kernel(const uint8_t* __restrict__ pay, const uint8_t* __restrict__ hdr, int N, int K,
                 const T* __restrict__ x, int M, QFuse f, const int8_t* gq, const float2* gs,
                 void* __restrict__ y) {
  using D = Dec<QT>;
  constexpr int U = D::kUnit;
  extern __shared__ int4 smem_q[];
  __shared__ float red[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int chunks = K / 32;
  const int8_t* sq = gq;
  const float2* ss = gs;
  if (!gq) {
    int8_t* q = reinterpret_cast<int8_t*>(smem_q);
    float2* s = reinterpret_cast<float2*>(q + size_t(MT) * K);
    for (int m = 0; m < M; ++m) quantize_row(x, m, K, f, q + size_t(m) * K, s + size_t(m) * chunks, red);
    sq = q;
    ss = s;
    __syncthreads();
  }
  const int nb = K / D::kBlock;
  const int units = K / U;
  for (int row = blockIdx.x * kWarps + warp; row < N; row += gridDim.x * kWarps) {
    const uint8_t* prow = pay + size_t(row) * nb * D::kPayload;
    const uint8_t* hrow = hdr + size_t(row) * nb * D::kHeader;
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[m] = 0.f;
#pragma unroll(U <= 64 ? 2 : 1)
    for (int u = lane; u < units; u += 32) {
      int q[U / 4];
      float a[U / 16], b[U / 32];
      D::run(prow, hrow, u, q, a, b);
      const int e0 = u * U;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m >= M) break;
        const int8_t* xq = sq + size_t(m) * K + e0;
        const float2* st = ss + size_t(m) * chunks + e0 / 32;
#pragma unroll
        for (int j = 0; j < U / 32; ++j) {
          const int4 x0 = *reinterpret_cast<const int4*>(xq + 32 * j);
          const int4 x1 = *reinterpret_cast<const int4*>(xq + 32 * j + 16);
          int s0 = __dp4a(q[8 * j], x0.x, 0);
          s0 = __dp4a(q[8 * j + 1], x0.y, s0);
          s0 = __dp4a(q[8 * j + 2], x0.z, s0);
          s0 = __dp4a(q[8 * j + 3], x0.w, s0);
          int s1 = __dp4a(q[8 * j + 4], x1.x, 0);
          s1 = __dp4a(q[8 * j + 5], x1.y, s1);
          s1 = __dp4a(q[8 * j + 6], x1.z, s1);
          s1 = __dp4a(q[8 * j + 7], x1.w, s1);
          const float2 sc = st[j];
          acc[m] += sc.x * (a[2 * j] * float(s0) + a[2 * j + 1] * float(s1)) + b[j] * sc.y;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m >= M) break;
      const float v = warp_sum(acc[m]);
      if (lane != 0) continue;
      const size_t o = size_t(m) * f.ldy + row;
      if (f.y_f32) {
        float* yo = static_cast<float*>(y) + o;
        *yo = f.add ? *yo + v : v;
      } else {
        T* yo = static_cast<T*>(y) + o;
        *yo = from_f32<T>(f.add ? to_f32(*yo) + v : v);
      }
    }
  }
}

// One thread per unit: W [N, K] -> dst [N, K] in T.
template <DType QT, typename T>
__global__ void qdequant_kernel(const uint8_t* __restrict__ pay, const uint8_t* __restrict__ hdr, int N,
                                int K, T* __restrict__ dst) {
  using D = Dec<QT>;
  constexpr int U = D::kUnit;
  const int upr = K / U;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= int64_t(N) * upr) return;
  const int row = int(t / upr), u = int(t % upr);
  const int nb = K / D::kBlock;
  int q[U / 4];
  float a[U / 16], b[U / 32];
  D::run(pay + size_t(row) * nb * D::kPayload, hdr + size_t(row) * nb * D::kHeader, u, q, a, b);
  T* out = dst + size_t(row) * K + size_t(u) * U;
#pragma unroll
  for (int e = 0; e < U; e += 8) {
    float f[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int k = e + i;
      const int v = int(int8_t(uint32_t(q[k >> 2]) >> (8 * (k & 3))));
      f[i] = a[k >> 4] * float(v) + b[k >> 5];
    }
    *reinterpret_cast<uint4*>(out + e) = pack8<T>(f);
  }
}

// Launches MT's instantiation for M rows. Staging x in each block (gq null): a grid of at most 4 blocks per
// SM, each staging x once, with shared memory for MT rows of quantized x. With x quantized beforehand: one
// row per warp, as many blocks as that takes.
template <DType QT, int MT>
void launch_qgemv_t(DType act, const QMatrix& w, const void* x, int M, const QFuse& f, const int8_t* gq,
                    const float2* gs, void* y, cudaStream_t stream) {
  static int sm_count = 0;
  if (!sm_count) {
    int dev = 0;
    LLAMARUN_CUDA_CHECK(cudaGetDevice(&dev));
    LLAMARUN_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
  }
  const size_t smem = gq ? 0 : size_t(MT) * w.cols + size_t(MT) * (w.cols / 32) * sizeof(float2);
  const int row_blocks = (w.rows + kWarps - 1) / kWarps;
  const int blocks = gq ? row_blocks : std::min(row_blocks, 4 * sm_count);
  const auto* pay = static_cast<const uint8_t*>(w.data);
  const uint8_t* hdr = pay + w.payload_bytes();
  LLAMARUN_DISPATCH_ACT(act, "qgemv", {
    auto kernel = qgemv_kernel<QT, MT, T>;
    if (smem > 48 * 1024) {
      static size_t opted = 0;  // per instantiation
      if (smem > opted) {
        LLAMARUN_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        opted = smem;
      }
    }
    kernel<<<blocks, kWarps * 32, smem, stream>>>(pay, hdr, w.rows, w.cols, static_cast<const T*>(x), M, f,
                                                  gq, gs, y);
  });
}

template <DType QT>
void launch_qgemv_m(DType act, const QMatrix& w, const void* x, int M, const QFuse& f, const int8_t* gq,
                    const float2* gs, void* y, cudaStream_t stream) {
  if (M == 1) return launch_qgemv_t<QT, 1>(act, w, x, M, f, gq, gs, y, stream);
  if (M == 2) return launch_qgemv_t<QT, 2>(act, w, x, M, f, gq, gs, y, stream);
  if (M <= 4) return launch_qgemv_t<QT, 4>(act, w, x, M, f, gq, gs, y, stream);
  return launch_qgemv_t<QT, 8>(act, w, x, M, f, gq, gs, y, stream);
}

QFuse qfuse_of(const QGemvFusion& fusion, int rows) {
  return QFuse{int(fusion.prologue), fusion.norm_weight, fusion.eps,
               fusion.add_to_y,      fusion.y_f32,       fusion.ldy > 0 ? fusion.ldy : rows};
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
    if (out) *out = {D::kBlock, D::kUnit, D::kPayload, D::kHeader};
  });
}

size_t QMatrix::payload_bytes() const {
  QLayout l{1, 1, 0, 0};
  if (!qlayout(type, &l)) fail("QMatrix: ", dtype_name(type), " is not a GPU quantized type");
  return size_t(rows) * size_t(cols / l.block) * size_t(l.payload);
}

size_t qx_bytes(int M, int K) { return size_t(M) * K + size_t(M) * (K / 32) * sizeof(float2); }

void qquantize_x(DType act, const void* x, int M, int K, const QGemvFusion& fusion, void* xq8,
                 cudaStream_t stream) {
  check_prologue(fusion, M, K, "qquantize_x");
  if (reinterpret_cast<uintptr_t>(xq8) % 16) fail("qquantize_x: the output buffer is not 16-byte aligned");
  const QFuse f = qfuse_of(fusion, 0);
  auto* q = static_cast<int8_t*>(xq8);
  auto* s = reinterpret_cast<float2*>(q + size_t(M) * K);
  const int threads = std::min(1024, (K / 32 + 3) / 4 * 32);  // about 4 chunks of 32 values per warp
  LLAMARUN_DISPATCH_ACT(act, "qquantize_x", {
    qquantize_x_kernel<T><<<M, threads, 0, stream>>>(static_cast<const T*>(x), K, f, q, s);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("qquantize_x");
}

void qgemv(DType act, const QMatrix& w, const void* x, void* y, int M, const QGemvFusion& fusion,
           cudaStream_t stream) {
  check_qmatrix(w, "qgemv");
  check_prologue(fusion, M, w.cols, "qgemv");
  const QFuse f = qfuse_of(fusion, w.rows);
  const int8_t* gq = static_cast<const int8_t*>(fusion.xq8);
  const float2* gs = gq ? reinterpret_cast<const float2*>(gq + size_t(M) * w.cols) : nullptr;
  if (gq && reinterpret_cast<uintptr_t>(gq) % 16) fail("qgemv: the quantized x is not 16-byte aligned");
  with_qtype(w.type,
             [&](auto tag) { launch_qgemv_m<decltype(tag)::kType>(act, w, x, M, f, gq, gs, y, stream); });
  LLAMARUN_CUDA_LAUNCH_CHECK("qgemv");
}

void qdequant(DType act, const QMatrix& w, void* dst, cudaStream_t stream) {
  check_qmatrix(w, "qdequant");
  const auto* pay = static_cast<const uint8_t*>(w.data);
  const uint8_t* hdr = pay + w.payload_bytes();
  LLAMARUN_DISPATCH_ACT(act, "qdequant", {
    with_qtype(w.type, [&](auto tag) {
      constexpr DType QT = decltype(tag)::kType;
      const int64_t n = int64_t(w.rows) * (w.cols / Dec<QT>::kUnit);
      qdequant_kernel<QT, T>
          <<<unsigned((n + 255) / 256), 256, 0, stream>>>(pay, hdr, w.rows, w.cols, static_cast<T*>(dst));
    });
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("qdequant");
}

}  // namespace llamarun::cuda
