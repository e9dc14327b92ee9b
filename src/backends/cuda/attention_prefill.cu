// Prefill attention: causal, tiled over the keys with an online softmax (flash-attention style).
// One warp per query row; a block holds kRows consecutive rows of one query head and walks the key
// positions in tiles of 32 staged in shared memory (K rows padded so that lane j reading row j is
// free of bank conflicts). Lane j scores key j of the tile (8-byte K loads, 16-byte broadcast q loads);
// each lane accumulates HD/32 consecutive output dimensions. CUDA cores, not tensor cores.
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

constexpr int kRows = 8;  // warps (query rows) per block
constexpr int kBK = 32;   // keys per tile

// Loads 4 (or 2) consecutive T from shared memory as one 8-byte (4-byte) access, as floats.
template <typename T, int N>
__device__ __forceinline__ void lds_vec(const T* p, float* f) {
  static_assert(N == 2 || N == 4, "2 or 4 values");
  if constexpr (N == 4) {
    uint2 u = *reinterpret_cast<const uint2*>(p);
    unpack2<T>(u.x, f[0], f[1]);
    unpack2<T>(u.y, f[2], f[3]);
  } else {
    unpack2<T>(*reinterpret_cast<const uint32_t*>(p), f[0], f[1]);
  }
}

template <typename T, int HD>
__global__ void __launch_bounds__(kRows * 32)
    prefill_attn_kernel(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc, int M,
                        int start, int nh, int nkv, int max_ctx, float scale, T* __restrict__ out) {
  // K rows padded by 4 values (8 bytes): a row is 2 mod 32 words long, so the 8-byte loads of lane j
  // (row j) hit banks 2j, 2j+1 within each half-warp phase: conflict-free.
  constexpr int KP = HD + 4;
  constexpr int DPL = HD / 32;  // output dimensions per lane (consecutive): 4 or 2
  __shared__ __align__(16) T ks[kBK][KP];
  __shared__ __align__(16) T vs[kBK][HD];
  __shared__ __align__(16) float qs[kRows][HD];

  const int h = blockIdx.y, kvh = h / (nh / nkv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRows + warp;
  const bool valid = row < M;
  const int qpos = start + row;
  const int last = start + min(M, int(blockIdx.x + 1) * kRows) - 1;  // last key position any row needs

  for (int d = lane; d < HD; d += 32)
    qs[warp][d] = valid ? to_f32(q[(size_t(row) * nh + h) * HD + d]) * scale : 0.f;

  const T* kbase = kc + size_t(kvh) * max_ctx * HD;
  const T* vbase = vc + size_t(kvh) * max_ctx * HD;
  float m = -INFINITY, l = 0.f;
  float acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.f;

  for (int kt = 0; kt <= last; kt += kBK) {
    __syncthreads();  // the previous tile is consumed (and qs is written, first time round)
    for (int idx = threadIdx.x; idx < kBK * HD / 8; idx += blockDim.x) {
      int r = idx / (HD / 8), c = (idx % (HD / 8)) * 8;
      int p = kt + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (p <= last) {
        kv = *reinterpret_cast<const uint4*>(kbase + size_t(p) * HD + c);
        vv = *reinterpret_cast<const uint4*>(vbase + size_t(p) * HD + c);
      }
      uint2* kd = reinterpret_cast<uint2*>(&ks[r][c]);  // 8-byte aligned (padded rows)
      kd[0] = make_uint2(kv.x, kv.y);
      kd[1] = make_uint2(kv.z, kv.w);
      *reinterpret_cast<uint4*>(&vs[r][c]) = vv;
    }
    __syncthreads();
    if (!valid || kt > qpos) continue;
    const int kp = kt + lane;
    float s = 0.f;
#pragma unroll 8
    for (int d = 0; d < HD; d += 4) {
      float4 qv = *reinterpret_cast<const float4*>(&qs[warp][d]);  // broadcast
      float kf[4];
      lds_vec<T, 4>(&ks[lane][d], kf);
      s = fmaf(qv.x, kf[0], s);
      s = fmaf(qv.y, kf[1], s);
      s = fmaf(qv.z, kf[2], s);
      s = fmaf(qv.w, kf[3], s);
    }
    s = kp <= qpos ? s : -INFINITY;
    float m_new = fmaxf(m, warp_max(s));  // finite: key kt <= qpos is in the tile
    float p = __expf(s - m_new);
    float alpha = __expf(m - m_new);
    l = l * alpha + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] *= alpha;
#pragma unroll 8
    for (int j = 0; j < kBK; ++j) {
      float pj = __shfl_sync(0xffffffffu, p, j);
      float vf[DPL];
      lds_vec<T, DPL>(&vs[j][lane * DPL], vf);
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[i] = fmaf(pj, vf[i], acc[i]);
    }
  }
  if (valid) {
    T* o = out + (size_t(row) * nh + h) * HD + lane * DPL;
#pragma unroll
    for (int i = 0; i < DPL; ++i) o[i] = from_f32<T>(acc[i] / l);
  }
}

}  // namespace

void prefill_attention(DType act, const void* q, const void* k_cache, const void* v_cache, int M, int start,
                       int nh, int nkv, int hd, int max_ctx, float scale, void* out, cudaStream_t stream) {
  if (M <= 0) return;
  if (nkv <= 0 || nh % nkv != 0)
    fail("prefill_attention: ", nh, " query heads not a multiple of ", nkv, " kv heads");
  if (hd != 64 && hd != 128) fail("prefill_attention: head_dim ", hd, " not supported (64 or 128)");
  if (start < 0 || start + M > max_ctx)
    fail("prefill_attention: positions ", start, "..", start + M - 1, " exceed the cache of ", max_ctx);
  dim3 grid((M + kRows - 1) / kRows, nh);
  LLAMARUN_DISPATCH_ACT(act, "prefill_attention", {
    auto* qq = static_cast<const T*>(q);
    auto* kk = static_cast<const T*>(k_cache);
    auto* vv = static_cast<const T*>(v_cache);
    auto* oo = static_cast<T*>(out);
    if (hd == 64)
      prefill_attn_kernel<T, 64>
          <<<grid, kRows * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, scale, oo);
    else
      prefill_attn_kernel<T, 128>
          <<<grid, kRows * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, scale, oo);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("prefill_attention");
}

}  // namespace llamarun::cuda
