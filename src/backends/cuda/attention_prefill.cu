// Prefill attention: causal, tiled over the keys with an online softmax (flash-attention style).
//
// Default: tensor cores (mma.sync m16n8k16, fp16/bf16 operands, fp32 accumulation; sm_80+). A block of 4
// warps takes 64 query rows of one head, each warp 16 rows; K/V tiles of 64 positions are staged in shared
// memory (rows padded by 16 bytes: conflict-free fragment loads); S = Q K^T stays in registers, the online
// softmax runs on the accumulator fragments, which are repacked as the A operand of P V (V fragments via
// ldmatrix.trans). head_dim 16, 32, 64 or 128. (The CUDA-core kernel it replaced, 6-7 ms against 1.1 ms at
// pp512 on an H200 (bench/cuda/NOTES.md), is gone.)
#include <type_traits>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

// ---- tensor-core kernel ----

constexpr int kTcWarps = 4;
constexpr int kTcBQ = kTcWarps * 16;  // query rows per block
constexpr int kTcBK = 64;             // key positions per tile

template <typename T>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4_trans(const void* smem, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3) {
  uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(a));
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return bits16<T>(lo) | (bits16<T>(hi) << 16);
}

// Fragment layouts (PTX ISA, mma.m16n8k16): g = lane / 4, t = lane % 4.
//   A (16x16, row): reg0 (row g, cols 2t..2t+1), reg1 (row g+8, same), reg2 (row g, cols 2t+8..), reg3 (g+8,
//   2t+8..) B (16x8, col):  reg0 (rows k = 2t..2t+1, col g), reg1 (rows 2t+8.., col g) C (16x8):       c0, c1
//   (row g, cols 2t, 2t+1), c2, c3 (row g+8, same cols)
template <typename T, int HD>
__global__ void __launch_bounds__(kTcWarps * 32)
    prefill_attn_tc_kernel(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc, int M,
                           int start, int nh, int nkv, int max_ctx, float scale_log2, T* __restrict__ out) {
  constexpr int KS = HD + 8;   // padded smem row (elements): 16 extra bytes
  constexpr int NT = HD / 8;   // output n-tiles (8 dims each)
  constexpr int KT = HD / 16;  // k-steps of Q K^T
  static_assert(HD % 16 == 0, "head_dim must be a multiple of 16");
  __shared__ __align__(16) T ks[kTcBK * KS];
  __shared__ __align__(16) T vs[kTcBK * KS];

  const int bx = gridDim.x - 1 - blockIdx.x;  // longest (latest) query blocks first
  const int h = blockIdx.y, kvh = h / (nh / nkv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int q0 = bx * kTcBQ + warp * 16;  // this warp's first query row
  const int r_lo = q0 + g, r_hi = r_lo + 8;
  const int qp_lo = start + r_lo, qp_hi = start + r_hi;
  const int last = start + min(M, (bx + 1) * kTcBQ) - 1;  // last key position the block needs
  const int warp_last = start + q0 + 15;                  // last key position this warp needs

  uint32_t qa[KT][4];
  {
    auto ldq = [&](int r, int d) -> uint32_t {
      return r < M ? *reinterpret_cast<const uint32_t*>(q + (size_t(r) * nh + h) * HD + d) : 0u;
    };
#pragma unroll
    for (int k = 0; k < KT; ++k) {
      int d = k * 16 + 2 * t;
      qa[k][0] = ldq(r_lo, d);
      qa[k][1] = ldq(r_hi, d);
      qa[k][2] = ldq(r_lo, d + 8);
      qa[k][3] = ldq(r_hi, d + 8);
    }
  }
  float o[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;  // l: this thread's partial row sums

  const T* kbase = kc + size_t(kvh) * max_ctx * HD;
  const T* vbase = vc + size_t(kvh) * max_ctx * HD;
  for (int kt0 = 0; kt0 <= last; kt0 += kTcBK) {
    __syncthreads();  // previous tile consumed
    for (int idx = threadIdx.x; idx < kTcBK * HD / 8; idx += kTcWarps * 32) {
      int r = idx / (HD / 8), c = (idx % (HD / 8)) * 8;
      int p = kt0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (p <= last) {
        kv = *reinterpret_cast<const uint4*>(kbase + size_t(p) * HD + c);
        vv = *reinterpret_cast<const uint4*>(vbase + size_t(p) * HD + c);
      }
      *reinterpret_cast<uint4*>(&ks[r * KS + c]) = kv;
      *reinterpret_cast<uint4*>(&vs[r * KS + c]) = vv;
    }
    __syncthreads();
    if (kt0 > warp_last) continue;  // every key of the tile is in this warp's future

    float s[kTcBK / 8][4];
#pragma unroll
    for (int n = 0; n < kTcBK / 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const T* krow = &ks[(n * 8 + g) * KS + 2 * t];
#pragma unroll
      for (int k = 0; k < KT; ++k) {
        uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + k * 16);
        uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + k * 16 + 8);
        mma16816<T>(s[n], qa[k], b0, b1);
      }
    }
    // Scale (log2 domain), causal mask, row maxima.
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int n = 0; n < kTcBK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int key = kt0 + n * 8 + 2 * t + (e & 1);
        int qp = e < 2 ? qp_lo : qp_hi;
        float v = s[n][e] * scale_log2;
        s[n][e] = (key > qp || key > last) ? -INFINITY : v;
      }
      mx_lo = fmaxf(mx_lo, fmaxf(s[n][0], s[n][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    // A row with nothing valid yet keeps m = -inf: use 0 as the reference so no NaN appears.
    const float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo, ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
    const float al_lo = exp2f(m_lo - ref_lo), al_hi = exp2f(m_hi - ref_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int n = 0; n < kTcBK / 8; ++n) {
      s[n][0] = exp2f(s[n][0] - ref_lo);
      s[n][1] = exp2f(s[n][1] - ref_lo);
      s[n][2] = exp2f(s[n][2] - ref_hi);
      s[n][3] = exp2f(s[n][3] - ref_hi);
      sum_lo += s[n][0] + s[n][1];
      sum_hi += s[n][2] + s[n][3];
    }
    l_lo = l_lo * al_lo + sum_lo;
    l_hi = l_hi * al_hi + sum_hi;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      o[n][0] *= al_lo;
      o[n][1] *= al_lo;
      o[n][2] *= al_hi;
      o[n][3] *= al_hi;
    }
    // O += P V, 16 keys per step.
#pragma unroll
    for (int j = 0; j < kTcBK / 16; ++j) {
      uint32_t pa[4];
      pa[0] = pack2<T>(s[2 * j][0], s[2 * j][1]);
      pa[1] = pack2<T>(s[2 * j][2], s[2 * j][3]);
      pa[2] = pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]);
      pa[3] = pack2<T>(s[2 * j + 1][2], s[2 * j + 1][3]);
      const int mat = lane >> 3, rr = lane & 7;
      const T* vrow = &vs[(j * 16 + rr + (mat & 1) * 8) * KS + (mat >> 1) * 8];
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(vrow + n * 8, b0, b1, b2, b3);
        mma16816<T>(o[n], pa, b0, b1);
        mma16816<T>(o[n + 1], pa, b2, b3);
      }
    }
  }
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f, inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    int d = n * 8 + 2 * t;
    if (r_lo < M)
      *reinterpret_cast<uint32_t*>(out + (size_t(r_lo) * nh + h) * HD + d) =
          pack2<T>(o[n][0] * inv_lo, o[n][1] * inv_lo);
    if (r_hi < M)
      *reinterpret_cast<uint32_t*>(out + (size_t(r_hi) * nh + h) * HD + d) =
          pack2<T>(o[n][2] * inv_hi, o[n][3] * inv_hi);
  }
}

}  // namespace

void prefill_attention(DType act, const void* q, const void* k_cache, const void* v_cache, int M, int start,
                       int nh, int nkv, int hd, int max_ctx, float scale, void* out, cudaStream_t stream) {
  if (M <= 0) return;
  if (nkv <= 0 || nh % nkv != 0)
    fail("prefill_attention: ", nh, " query heads not a multiple of ", nkv, " kv heads");
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128)
    fail("prefill_attention: head_dim ", hd, " not supported (16, 32, 64 or 128)");
  if (start < 0 || start + M > max_ctx)
    fail("prefill_attention: positions ", start, "..", start + M - 1, " exceed the cache of ", max_ctx);
  dim3 grid((M + kTcBQ - 1) / kTcBQ, nh);
  const float sl2 = scale * 1.4426950408889634f;
  LLAMARUN_DISPATCH_ACT(act, "prefill_attention", {
    auto* qq = static_cast<const T*>(q);
    auto* kk = static_cast<const T*>(k_cache);
    auto* vv = static_cast<const T*>(v_cache);
    auto* oo = static_cast<T*>(out);
    switch (hd) {
      case 16:
        prefill_attn_tc_kernel<T, 16>
            <<<grid, kTcWarps * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, sl2, oo);
        break;
      case 32:
        prefill_attn_tc_kernel<T, 32>
            <<<grid, kTcWarps * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, sl2, oo);
        break;
      case 64:
        prefill_attn_tc_kernel<T, 64>
            <<<grid, kTcWarps * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, sl2, oo);
        break;
      default:
        prefill_attn_tc_kernel<T, 128>
            <<<grid, kTcWarps * 32, 0, stream>>>(qq, kk, vv, M, start, nh, nkv, max_ctx, sl2, oo);
        break;
    }
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("prefill_attention");
}

}  // namespace llamarun::cuda
