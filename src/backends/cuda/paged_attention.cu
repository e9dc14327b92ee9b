// Kernels of the paged KV cache for batched serving (see kernels.h, "paged KV cache for serving"):
// RoPE + store into the paged pool, varlen paged decode/prefill attention, row gather and row argmax.
//
// paged_attention: one CTA (4 warps) per (query row, kv head); the CTA serves the whole GQA group of
// query heads of that kv head, so every K / V byte of the row's context is read once per row. The
// context is cut into tiles of 16 positions; warp w takes tiles w, w + 4, ... . Within a tile a lane
// owns 8 dims (one 16-byte chunk) of several keys, laid out so that every load instruction of the warp
// reads 512 contiguous bytes (hd 128: 2 keys x 256 bytes per instruction, 8 instructions per tile;
// hd 64: 4 keys x 128 bytes, 4 instructions). The partial dot products are combined across the lanes of
// a key by a reduce-scatter (hd 128: 8 shuffles per head per tile instead of 32), which leaves each
// (key, head) score in two lanes; the online softmax (fp32, max per warp) runs on those, the
// probabilities go through shared memory to the lanes holding the matching V chunks, and the V loads
// are issued before the softmax so that their latency overlaps it. At the end the 4 warps' (max, sum,
// output) are merged through shared memory. A page size that is a multiple of 16 (the usual 16) makes
// every tile one contiguous run inside one page (one block-table read per tile, prefetched one tile
// ahead); any other page size in [1, 1024] takes a generic path that looks up each key's page.
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

// ---- the pool's element type ----
// S = T (fp16 / bf16) or uint8_t (E4M3, unit scale: kv_fp8). A lane's VPL consecutive values of a head are
// one KvVec<S, T, VPL>::Raw: 16 bytes of fp16 / bf16 (VPL 8), 8 or 16 bytes of E4M3 (VPL 8 or 16).
template <int W>
__device__ __forceinline__ void e4m3_words_to_f32(const uint32_t* w, float* f) {  // 4 W values
#pragma unroll
  for (int i = 0; i < 2 * W; ++i) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>((w[i >> 1] >> (16 * (i & 1))) & 0xffffu), __NV_E4M3);
    const float2 v = __half22float2(__half2(h));
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
template <typename S, typename T, int VPL = 8>
struct KvVec {
  static_assert(VPL == 8, "fp16 / bf16 pools: 8 values a lane");
  using Raw = uint4;
  static __device__ __forceinline__ Raw load(const S* p) { return ld_stream(p); }
  static __device__ __forceinline__ void unpack(const Raw& r, float* f) { unpack8<T>(r, f); }
  static __device__ __forceinline__ S from(float v) { return from_f32<T>(v); }
};
template <typename T>
struct KvVec<uint8_t, T, 8> {
  using Raw = uint2;
  static __device__ __forceinline__ Raw load(const uint8_t* p) {
    Raw r;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
    return r;
  }
  static __device__ __forceinline__ void unpack(const Raw& r, float* f) {
    const uint32_t w[2] = {r.x, r.y};
    e4m3_words_to_f32<2>(w, f);
  }
  static __device__ __forceinline__ uint8_t from(float v) {
    return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  }
};
template <typename T>
struct KvVec<uint8_t, T, 16> {
  using Raw = uint4;
  static __device__ __forceinline__ Raw load(const uint8_t* p) { return ld_stream(p); }
  static __device__ __forceinline__ void unpack(const Raw& r, float* f) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
    e4m3_words_to_f32<4>(w, f);
  }
};

// ---- rope_store_kv_paged ----

// grid (nh + 2*nkv, M); block hd/2 threads: thread i handles rotation pair i of one head.
template <typename T, typename S, bool kInterleaved>
__global__ void rope_store_kv_paged_kernel(const T* __restrict__ qkv, const int32_t* __restrict__ pos,
                                           const int32_t* __restrict__ slot,
                                           const float* __restrict__ inv_freq, int nh, int nkv, int hd,
                                           int block_size, T* __restrict__ q_out, S* __restrict__ k_pool,
                                           S* __restrict__ v_pool) {
  pdl_trigger();
  pdl_wait();  // qkv comes from the previous kernel
  const int head = blockIdx.x;
  const int m = blockIdx.y;
  const int i = threadIdx.x;  // pair index, < hd/2
  const int p = pos[m];
  const T* src = qkv + (size_t(m) * (nh + 2 * nkv) + head) * hd;
  int i0, i1;
  rope_pair_index<kInterleaved>(i, hd, i0, i1);
  float f0, f1;
  if (head < nh) {
    T* dst = q_out + (size_t(m) * nh + head) * hd;
    rope_rotate(to_f32(src[i0]), to_f32(src[i1]), p, inv_freq[i], f0, f1);
    dst[i0] = from_f32<T>(f0);
    dst[i1] = from_f32<T>(f1);
    return;
  }
  const int s = slot[m];
  if (s < 0) return;
  const int kh = head < nh + nkv ? head - nh : head - nh - nkv;
  const size_t off = ((size_t(s / block_size) * nkv + kh) * block_size + s % block_size) * hd;
  S* dst;
  if (head >= nh + nkv) {  // value head: a copy (exact for fp16 / bf16 pools)
    dst = v_pool + off;
    f0 = to_f32(src[i0]);
    f1 = to_f32(src[i1]);
  } else {
    dst = k_pool + off;
    rope_rotate(to_f32(src[i0]), to_f32(src[i1]), p, inv_freq[i], f0, f1);
  }
  dst[i0] = KvVec<S, T>::from(f0);
  dst[i1] = KvVec<S, T>::from(f1);
}

// ---- paged_attention ----

constexpr unsigned kFull = 0xffffffffu;
constexpr int kPaThreads = 128;
constexpr int kPaWarps = kPaThreads / 32;
constexpr int kTileKeys = 16;  // positions per warp per step

// Reduce-scatter of N values per lane across the S*2 lanes that differ in bits S, S/2, ..., 1 (N <= 2S):
// each step halves the values a lane keeps. On return v[0] holds the full sum of value
// j = (lane % (2S)) / (2S / N) (lanes that differ only in the low bits below 2S / N hold the same sum).
template <int N, int S>
struct ReduceScatter {
  static __device__ __forceinline__ void run(float* v, int lane) {
    if constexpr (N > 1) {
      const bool up = (lane & S) != 0;
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        const float send = up ? v[i] : v[i + N / 2];
        const float keep = up ? v[i + N / 2] : v[i];
        v[i] = keep + __shfl_xor_sync(kFull, send, S);
      }
      if constexpr (S > 1) ReduceScatter<N / 2, S / 2>::run(v, lane);
    } else {
      v[0] += __shfl_xor_sync(kFull, v[0], S);
      if constexpr (S > 1) ReduceScatter<1, S / 2>::run(v, lane);
    }
  }
};

// kContig: block_size % kTileKeys == 0, so a tile lies in one page, contiguously. S: the pool's element
// type; VPL: values of a key per lane (KvVec): 8, or 16 for E4M3 pools with small groups, so that each
// load instruction of the warp still reads 512 contiguous bytes and each lane's per-key work (the score
// reduction, the softmax, the probability exchange) serves twice the values.
template <typename T, typename S, int HD, int MAXG, bool kContig, int VPL = 8>
__global__ void __launch_bounds__(kPaThreads)
    paged_attn_kernel(const T* __restrict__ q, const S* __restrict__ k_pool, const S* __restrict__ v_pool,
                      const int32_t* __restrict__ block_tables, int max_blocks,
                      const int32_t* __restrict__ seq, const int32_t* __restrict__ pos, int nh, int nkv,
                      int G, int bs, float scale, T* __restrict__ out) {
  constexpr int LPK = HD / VPL;         // lanes per key: each holds VPL of its HD values
  constexpr int KPL = 32 / LPK;         // keys per load instruction of the warp
  constexpr int NLD = kTileKeys / KPL;  // loads per lane per tile (K, and as many for V)
  constexpr int DUP = LPK / NLD;        // lanes left holding each reduced score
  static_assert(NLD >= 1 && NLD <= LPK && DUP >= 1, "tile shape");
  using KV = KvVec<S, T, VPL>;
  using Raw = typename KV::Raw;
  __shared__ float s_p[kPaWarps][MAXG][kTileKeys];
  __shared__ float s_m[kPaWarps][MAXG], s_l[kPaWarps][MAXG];
  __shared__ float s_o[kPaWarps][MAXG][HD];

  const int m = blockIdx.x, kvh = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = pos[m];
  T* orow = out + (size_t(m) * nh + size_t(kvh) * G) * HD;
  if (P < 0) {  // padding row
    for (int idx = tid; idx < G * HD; idx += kPaThreads) orow[idx] = from_f32<T>(0.f);
    return;
  }
  const int len = P + 1;
  const int32_t* table = block_tables + size_t(seq[m]) * max_blocks;
  const int dl = lane % LPK;  // which VPL values of the head
  const int ks = lane / LPK;  // key slot within a load instruction
  const size_t head_stride = size_t(bs) * HD;
  const size_t blk_stride = size_t(nkv) * head_stride;
  const size_t kv_off = size_t(kvh) * head_stride;

  float qf[MAXG][VPL];
  const T* qrow = q + (size_t(m) * nh + size_t(kvh) * G) * HD + dl * VPL;
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
#pragma unroll
      for (int c = 0; c < VPL / 8; ++c)
        unpack8<T>(*reinterpret_cast<const uint4*>(qrow + size_t(g) * HD + 8 * c), qf[g] + 8 * c);
#pragma unroll
      for (int j = 0; j < VPL; ++j) qf[g][j] *= scale;
    } else {
#pragma unroll
      for (int j = 0; j < VPL; ++j) qf[g][j] = 0.f;
    }
  }
  float acc[MAXG][VPL], m_run[MAXG], l_run[MAXG];
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    m_run[g] = -INFINITY;
    l_run[g] = 0.f;
#pragma unroll
    for (int j = 0; j < VPL; ++j) acc[g][j] = 0.f;
  }

  // The score this lane ends up holding after the reduce-scatter: key jm * KPL + ks of the tile.
  const int jm = dl / DUP;
  const bool owner = (lane % DUP) == 0;
  const int ntiles = (len + kTileKeys - 1) / kTileKeys;
  int blk_next = 0;
  if (kContig && warp < ntiles) blk_next = table[warp * kTileKeys / bs];
  for (int tile = warp; tile < ntiles; tile += kPaWarps) {
    const int t0 = tile * kTileKeys;
    size_t off[NLD];  // element offset of this lane's chunk of key j * KPL + ks (K and V pools alike)
    if constexpr (kContig) {
      const int blk = blk_next;
      if (tile + kPaWarps < ntiles) blk_next = table[(t0 + kPaWarps * kTileKeys) / bs];
      const size_t base = size_t(blk) * blk_stride + kv_off + size_t(t0 % bs) * HD + size_t(lane) * VPL;
#pragma unroll
      for (int j = 0; j < NLD; ++j) off[j] = base + size_t(j) * KPL * HD;
    } else {
#pragma unroll
      for (int j = 0; j < NLD; ++j) {
        const int p = t0 + j * KPL + ks;
        off[j] = 0;
        if (p < len) off[j] = size_t(table[p / bs]) * blk_stride + kv_off + size_t(p % bs) * HD + dl * VPL;
      }
    }
    Raw raw[NLD];
#pragma unroll
    for (int j = 0; j < NLD; ++j) raw[j] = t0 + j * KPL + ks < len ? KV::load(k_pool + off[j]) : Raw{};
    // Partial dot products over this lane's VPL dims, combined across the key's lanes: sc[g] is the score
    // of key jm * KPL + ks for head g.
    float sc[MAXG];
    if constexpr (MAXG >= 4) {
      // Large groups: one head at a time (K unpacked again per head) to stay within the register file.
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        sc[g] = 0.f;
        if (g < G) {
          float d[NLD];
#pragma unroll
          for (int j = 0; j < NLD; ++j) {
            float kf[VPL];
            KV::unpack(raw[j], kf);
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < VPL; ++i) s = fmaf(qf[g][i], kf[i], s);
            d[j] = s;
          }
          ReduceScatter<NLD, LPK / 2>::run(d, lane);
          sc[g] = d[0];
        }
      }
    } else {
      float d[MAXG][NLD];
#pragma unroll
      for (int j = 0; j < NLD; ++j) {
        float kf[VPL];
        KV::unpack(raw[j], kf);
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          float s = 0.f;
          if (g < G) {
#pragma unroll
            for (int i = 0; i < VPL; ++i) s = fmaf(qf[g][i], kf[i], s);
          }
          d[g][j] = s;
        }
      }
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        sc[g] = 0.f;
        if (g < G) {
          ReduceScatter<NLD, LPK / 2>::run(d[g], lane);
          sc[g] = d[g][0];
        }
      }
    }
    // V loads now: their latency overlaps the softmax below.
#pragma unroll
    for (int j = 0; j < NLD; ++j) raw[j] = t0 + j * KPL + ks < len ? KV::load(v_pool + off[j]) : Raw{};
    const bool valid = t0 + jm * KPL + ks < len;
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      if (g < G) {
        const float s = valid ? sc[g] : -INFINITY;
        float tmax = s;
#pragma unroll
        for (int o = 16; o >= DUP; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, o));
        const float m_new = fmaxf(m_run[g], tmax);  // finite: position t0 is valid
        const float alpha = __expf(m_run[g] - m_new);
        m_run[g] = m_new;
        const float p = valid ? __expf(s - m_new) : 0.f;
        l_run[g] = l_run[g] * alpha + (owner ? p : 0.f);
#pragma unroll
        for (int i = 0; i < VPL; ++i) acc[g][i] *= alpha;
        if (owner) s_p[warp][g][jm * KPL + ks] = p;
      }
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < NLD; ++j) {
      float vf[VPL];
      KV::unpack(raw[j], vf);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
          const float p = s_p[warp][g][j * KPL + ks];  // 0 past the end
#pragma unroll
          for (int i = 0; i < VPL; ++i) acc[g][i] = fmaf(p, vf[i], acc[g][i]);
        }
      }
    }
    __syncwarp();  // s_p is rewritten by the next tile
  }

  // Merge the key slots of the warp (same max), then the warps through shared memory.
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
#pragma unroll
      for (int o = LPK; o < 32; o <<= 1)
#pragma unroll
        for (int i = 0; i < VPL; ++i) acc[g][i] += __shfl_xor_sync(kFull, acc[g][i], o);
      const float l = warp_sum(l_run[g]);
      if (ks == 0)
#pragma unroll
        for (int i = 0; i < VPL; ++i) s_o[warp][g][dl * VPL + i] = acc[g][i];
      if (lane == 0) {
        s_m[warp][g] = m_run[g];
        s_l[warp][g] = l;
      }
    }
  }
  __syncthreads();
  for (int idx = tid; idx < G * HD; idx += kPaThreads) {
    const int g = idx / HD, dd = idx % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kPaWarps; ++w)
      if (s_l[w][g] > 0.f) mx = fmaxf(mx, s_m[w][g]);
    float num = 0.f, den = 0.f;
#pragma unroll
    for (int w = 0; w < kPaWarps; ++w) {
      if (s_l[w][g] > 0.f) {
        const float e = __expf(s_m[w][g] - mx);
        num = fmaf(e, s_o[w][g][dd], num);
        den = fmaf(e, s_l[w][g], den);
      }
    }
    orow[idx] = from_f32<T>(den > 0.f ? num / den : 0.f);
  }
}

template <typename T, typename S, int HD>
void launch_paged_hd(const T* q, const S* k, const S* v, const int32_t* tables, int max_blocks,
                     const int32_t* seq, const int32_t* pos, int M, int nh, int nkv, int bs, float scale,
                     T* out, cudaStream_t stream) {
  const int G = nh / nkv;
  const dim3 grid(M, nkv);
  const bool contig = bs % kTileKeys == 0;
  auto go = [&](auto kernel) {
    launch_kernel(false, kernel, grid, dim3(kPaThreads), 0, stream, q, k, v, tables, max_blocks, seq, pos, nh,
                  nkv, G, bs, scale, out);
  };
  // E4M3 pools with groups of 1-2 heads: 16 values a lane (the registers of larger groups would not fit).
  constexpr int kWide = !std::is_same_v<S, T> && HD >= 32 ? 16 : 8;
  auto by_g = [&](auto c) {
    constexpr bool C = decltype(c)::value;
    if (G == 1)
      go(paged_attn_kernel<T, S, HD, 1, C, kWide>);
    else if (G == 2)
      go(paged_attn_kernel<T, S, HD, 2, C, kWide>);
    else if (G <= 4)
      go(paged_attn_kernel<T, S, HD, 4, C>);
    else
      go(paged_attn_kernel<T, S, HD, 8, C>);
  };
  if (contig)
    by_g(std::true_type{});
  else
    by_g(std::false_type{});
}

// ---- gather_rows ----

template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ x, const int32_t* __restrict__ rows, int H,
                                   T* __restrict__ out) {
  const int r = blockIdx.x;
  const int src = rows[r];
  T* dst = out + size_t(r) * H;
  if (src < 0) {  // not part of the contract (callers pass valid rows); zeros rather than a wild read
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = from_f32<T>(0.f);
    return;
  }
  const T* s = x + size_t(src) * H;
  if (H % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(out) & 15) == 0) {
    const uint4* s4 = reinterpret_cast<const uint4*>(s);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < H / 8; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = s[i];
  }
}

// ---- gather_kv_pages ----

// One vector of 8 values of K and of V per thread; vector e = ((kh * n) + p) * (hd / 8) + j. An E4M3 pool's
// values are widened to T.
template <typename T, typename S>
__global__ void gather_kv_pages_kernel(const S* __restrict__ k_pool, const S* __restrict__ v_pool,
                                       const int32_t* __restrict__ table, int n, int nkv, int hd, int bs,
                                       int max_ctx, T* __restrict__ k_out, T* __restrict__ v_out) {
  const int vpr = hd / 8;  // vectors per row
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(nkv) * n * vpr) return;
  const int j = int(e % vpr);
  const size_t row = e / vpr;
  const int p = int(row % n), kh = int(row / n);
  const size_t src = ((size_t(table[p / bs]) * nkv + kh) * bs + p % bs) * hd + size_t(j) * 8;
  const size_t dst = (size_t(kh) * max_ctx + p) * hd + size_t(j) * 8;
  if constexpr (std::is_same_v<S, T>) {
    *reinterpret_cast<uint4*>(k_out + dst) = *reinterpret_cast<const uint4*>(k_pool + src);
    *reinterpret_cast<uint4*>(v_out + dst) = *reinterpret_cast<const uint4*>(v_pool + src);
  } else {
    float f[8];
    KvVec<S, T>::unpack(*reinterpret_cast<const uint2*>(k_pool + src), f);
    *reinterpret_cast<uint4*>(k_out + dst) = pack8<T>(f);
    KvVec<S, T>::unpack(*reinterpret_cast<const uint2*>(v_pool + src), f);
    *reinterpret_cast<uint4*>(v_out + dst) = pack8<T>(f);
  }
}

// ---- argmax_rows ----

constexpr int kArgmaxThreads = 512;

// Larger key wins (NaN below -inf), then the lower index.
__device__ __forceinline__ uint32_t argmax_key(float f) {
  if (f != f) return 0u;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // -inf maps to 0x007fffff > 0
}
__device__ __forceinline__ void argmax_better(uint32_t& k, int& i, uint32_t k2, int i2) {
  if (k2 > k || (k2 == k && i2 < i)) {
    k = k2;
    i = i2;
  }
}

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_rows_kernel(const float* __restrict__ logits, int V, int32_t* __restrict__ ids) {
  __shared__ uint32_t sk[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  const float* row = logits + size_t(blockIdx.x) * V;
  uint32_t k = 0;
  int idx = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += kArgmaxThreads) argmax_better(k, idx, argmax_key(row[i]), i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    argmax_better(k, idx, __shfl_xor_sync(kFull, k, o), __shfl_xor_sync(kFull, idx, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sk[warp] = k;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    k = 0;
    idx = 0x7fffffff;
    if (lane < kArgmaxThreads / 32) {
      k = sk[lane];
      idx = si[lane];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      argmax_better(k, idx, __shfl_xor_sync(kFull, k, o), __shfl_xor_sync(kFull, idx, o));
    if (lane == 0) ids[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
  }
}

}  // namespace

void rope_store_kv_paged(DType act, RopeLayout layout, const void* qkv, const int32_t* pos,
                         const int32_t* slot, const float* inv_freq, int M, int nh, int nkv, int hd,
                         int block_size, void* q_out, void* k_pool, void* v_pool, cudaStream_t stream,
                         bool pdl, bool kv_fp8) {
  if (M <= 0) return;
  if (hd % 2 != 0 || hd > 2048) fail("rope_store_kv_paged: head_dim ", hd, " must be even and <= 2048");
  if (block_size < 1) fail("rope_store_kv_paged: block_size ", block_size, " must be >= 1");
  if (M > 65535) fail("rope_store_kv_paged: ", M, " rows (max 65535)");
  const dim3 grid(nh + 2 * nkv, M);
  LLAMARUN_DISPATCH_ACT(act, "rope_store_kv_paged", {
    auto* qo = static_cast<T*>(q_out);
    auto* in = static_cast<const T*>(qkv);
    auto go = [&](auto* kp, auto* vp) {
      using S = std::remove_pointer_t<decltype(kp)>;
      if (layout == RopeLayout::kInterleaved)
        launch_kernel(pdl, rope_store_kv_paged_kernel<T, S, true>, grid, dim3(hd / 2), 0, stream, in, pos,
                      slot, inv_freq, nh, nkv, hd, block_size, qo, kp, vp);
      else
        launch_kernel(pdl, rope_store_kv_paged_kernel<T, S, false>, grid, dim3(hd / 2), 0, stream, in, pos,
                      slot, inv_freq, nh, nkv, hd, block_size, qo, kp, vp);
    };
    if (kv_fp8)
      go(static_cast<uint8_t*>(k_pool), static_cast<uint8_t*>(v_pool));
    else
      go(static_cast<T*>(k_pool), static_cast<T*>(v_pool));
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("rope_store_kv_paged");
}

void paged_attention(DType act, const void* q, const void* k_pool, const void* v_pool,
                     const int32_t* block_tables, int max_blocks, const int32_t* seq, const int32_t* pos,
                     int M, int nh, int nkv, int hd, int block_size, float scale, void* out,
                     cudaStream_t stream, bool kv_fp8) {
  if (M <= 0) return;
  if (nkv <= 0 || nh % nkv != 0)
    fail("paged_attention: ", nh, " query heads not a multiple of ", nkv, " kv heads");
  if (nh / nkv > 8) fail("paged_attention: GQA group of ", nh / nkv, " query heads per kv head (max 8)");
  if (nkv > 65535) fail("paged_attention: ", nkv, " kv heads (max 65535)");
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128)
    fail("paged_attention: head_dim ", hd, " not supported (16, 32, 64 or 128)");
  if (block_size < 1 || block_size > 1024)
    fail("paged_attention: block_size ", block_size, " not in [1, 1024]");
  LLAMARUN_DISPATCH_ACT(act, "paged_attention", {
    auto* qq = static_cast<const T*>(q);
    auto* oo = static_cast<T*>(out);
    auto go = [&](auto* kk, auto* vv) {
      using S = std::remove_const_t<std::remove_pointer_t<decltype(kk)>>;
      if (hd == 16)
        launch_paged_hd<T, S, 16>(qq, kk, vv, block_tables, max_blocks, seq, pos, M, nh, nkv, block_size,
                                  scale, oo, stream);
      else if (hd == 32)
        launch_paged_hd<T, S, 32>(qq, kk, vv, block_tables, max_blocks, seq, pos, M, nh, nkv, block_size,
                                  scale, oo, stream);
      else if (hd == 64)
        launch_paged_hd<T, S, 64>(qq, kk, vv, block_tables, max_blocks, seq, pos, M, nh, nkv, block_size,
                                  scale, oo, stream);
      else
        launch_paged_hd<T, S, 128>(qq, kk, vv, block_tables, max_blocks, seq, pos, M, nh, nkv, block_size,
                                   scale, oo, stream);
    };
    if (kv_fp8)
      go(static_cast<const uint8_t*>(k_pool), static_cast<const uint8_t*>(v_pool));
    else
      go(static_cast<const T*>(k_pool), static_cast<const T*>(v_pool));
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("paged_attention");
}

void gather_rows(DType act, const void* x, const int32_t* rows, int R, int H, void* out,
                 cudaStream_t stream) {
  if (R <= 0 || H <= 0) return;
  const int threads = std::min(256, std::max(32, (H % 8 == 0 ? H / 8 : H) / 32 * 32));
  LLAMARUN_DISPATCH_ACT(act, "gather_rows", {
    launch_kernel(false, gather_rows_kernel<T>, dim3(R), dim3(threads), 0, stream, static_cast<const T*>(x),
                  rows, H, static_cast<T*>(out));
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("gather_rows");
}

void gather_kv_pages(DType act, const void* k_pool, const void* v_pool, const int32_t* table, int n, int nkv,
                     int hd, int block_size, int max_ctx, void* k_out, void* v_out, cudaStream_t stream,
                     bool kv_fp8) {
  if (n <= 0) return;
  if (hd % 8 != 0) fail("gather_kv_pages: head_dim ", hd, " not a multiple of 8");
  if (n > max_ctx) fail("gather_kv_pages: ", n, " positions exceed the cache of ", max_ctx);
  const size_t vecs = size_t(nkv) * n * (hd / 8);
  const int threads = 256;
  const dim3 grid(unsigned((vecs + threads - 1) / threads));
  LLAMARUN_DISPATCH_ACT(act, "gather_kv_pages", {
    if (kv_fp8)
      launch_kernel(false, gather_kv_pages_kernel<T, uint8_t>, grid, dim3(threads), 0, stream,
                    static_cast<const uint8_t*>(k_pool), static_cast<const uint8_t*>(v_pool), table, n, nkv,
                    hd, block_size, max_ctx, static_cast<T*>(k_out), static_cast<T*>(v_out));
    else
      launch_kernel(false, gather_kv_pages_kernel<T, T>, grid, dim3(threads), 0, stream,
                    static_cast<const T*>(k_pool), static_cast<const T*>(v_pool), table, n, nkv, hd,
                    block_size, max_ctx, static_cast<T*>(k_out), static_cast<T*>(v_out));
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("gather_kv_pages");
}

void argmax_rows(const float* logits, int R, int V, int32_t* ids, cudaStream_t stream) {
  if (R <= 0) return;
  if (V <= 0) fail("argmax_rows: vocabulary size ", V);
  launch_kernel(false, argmax_rows_kernel, dim3(R), dim3(kArgmaxThreads), 0, stream, logits, V, ids);
  LLAMARUN_CUDA_LAUNCH_CHECK("argmax_rows");
}

}  // namespace llamarun::cuda
