// Decode attention over one sequence's K / V in the paged pool (found through its block table), split-K
// ("flash-decoding"): the context 0..pos is cut into
// `splits` contiguous chunks (chunk size computed on the GPU from the position, so a captured graph
// serves every step); one block per (kv head, chunk) computes, for the GQA group of query heads that
// share the kv head, an online-softmax partial result (unnormalised output, running max, running
// sum); a second kernel merges the chunks, or (merge_counters given) the last block of each kv head to
// finish does, counted with an atomic per kv head.
#include <algorithm>

#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/kernels.h"

namespace llamarun::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;  // positions scored per step

__device__ __forceinline__ int chunk_len(int len, int splits) {
  int c = (len + splits - 1) / splits;
  return (c + kTile - 1) / kTile * kTile;
}

// How a block's threads split the work for head dim HD: each lane holds 8 of the HD values of a position,
// LPP lanes one position, PG position groups per block, PER positions per group per tile.
template <int HD>
struct Layout {
  static constexpr int LPP = HD / 8;                               // lanes per position
  static constexpr int PPW = 32 / LPP;                             // positions per warp per step
  static constexpr int PG = kWarps * PPW;                          // position groups per block
  static constexpr int PER = kTile / PG;                           // positions per group per tile
  __device__ static int dl() { return (threadIdx.x & 31) % LPP; }  // which 8 values of the head
  __device__ static int pg() { return (threadIdx.x >> 5) * PPW + (threadIdx.x & 31) / LPP; }
};

// Position p's K / V row sits in block table[p / bs] at offset p % bs: row (block * nkv + kvh) * bs + offset
// of the layer's pool. tile_rows gives, for the PER positions of the tile at `tile` this lane handles,
// block * nkv * bs + offset (the kv head's term is added by the caller). bs_shift >= 0: bs is 1 << bs_shift
// (shifts instead of divisions).
template <int HD>
__device__ __forceinline__ void tile_rows(const int32_t* __restrict__ table, int bs, int bs_shift, int nkv,
                                          int tile, int end, uint32_t (&r)[Layout<HD>::PER]) {
  using Lay = Layout<HD>;
  const int pg = Lay::pg();
  const uint32_t blk_rows = uint32_t(nkv) * uint32_t(bs);
#pragma unroll
  for (int i = 0; i < Lay::PER; ++i) {
    const int p = tile + pg + i * Lay::PG;
    if (p < end) {
      const int b = bs_shift >= 0 ? p >> bs_shift : p / bs;
      r[i] = uint32_t(__ldg(table + b)) * blk_rows + uint32_t(p - b * bs);
    } else {
      r[i] = 0;
    }
  }
}

// One (kv head, chunk) block's work: online-softmax partial result over positions [begin, end). first: the
// first tile's rows (tile_rows(begin)); the next tile's rows are read while this tile's scores are
// computed, so the table lookups stay off the K / V loads' critical path.
template <typename T, int HD, int MAXG>
__device__ __forceinline__ void partial_chunk(const T* __restrict__ q, const T* __restrict__ kc,
                                              const T* __restrict__ vc, const int32_t* __restrict__ table,
                                              int bs, int bs_shift, int nh, int nkv, int G, float scale,
                                              float* __restrict__ part_o, float* __restrict__ part_stats,
                                              int kvh, int split, int begin, int end,
                                              const uint32_t (&first)[Layout<HD>::PER]) {
  using Lay = Layout<HD>;
  constexpr int LPP = Lay::LPP;
  constexpr int PG = Lay::PG;
  constexpr int PER = Lay::PER;
  __shared__ float s_p[MAXG][kTile];
  __shared__ float s_alpha[MAXG], s_m[MAXG], s_l[MAXG];
  __shared__ float red[PG][MAXG][HD];
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int dl = Lay::dl();
  const int pg = Lay::pg();
  const T* kbase = kc + size_t(kvh) * bs * HD + dl * 8;
  const T* vbase = vc + size_t(kvh) * bs * HD + dl * 8;
  uint32_t cur[PER], nxt[PER] = {};
#pragma unroll
  for (int i = 0; i < PER; ++i) cur[i] = first[i];

  float qf[MAXG][8];
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
      unpack8<T>(*reinterpret_cast<const uint4*>(q + size_t(kvh * G + g) * HD + dl * 8), qf[g]);
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[g][j] *= scale;
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[g][j] = 0.f;
    }
  }
  float acc[MAXG][8];
#pragma unroll
  for (int g = 0; g < MAXG; ++g)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
  if (tid < MAXG) {
    s_m[tid] = -INFINITY;
    s_l[tid] = 0.f;
  }

  for (int tile = begin; tile < end; tile += kTile) {
    // Scores for kTile positions: load all K vectors first (PER 16-byte loads in flight per lane).
    uint4 kv[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      int p = tile + pg + i * PG;
      kv[i] = p < end ? ld_stream(kbase + size_t(cur[i]) * HD) : make_uint4(0, 0, 0, 0);
    }
    if (tile + kTile < end) tile_rows<HD>(table, bs, bs_shift, nkv, tile + kTile, end, nxt);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      int p = tile + pg + i * PG;
      float kf[8];
      unpack8<T>(kv[i], kf);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
          float d = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) d = fmaf(qf[g][j], kf[j], d);
#pragma unroll
          for (int o = LPP / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
          if (dl == 0) s_p[g][pg + i * PG] = p < end ? d : -INFINITY;
        }
      }
    }
    __syncthreads();
    // Online softmax update, one warp per head.
    for (int g = warp; g < G; g += kWarps) {
      float a = s_p[g][lane], b = s_p[g][lane + 32];
      float tmax = warp_max(fmaxf(a, b));
      // Only lane 0 reads and writes s_m / s_l (the others get m_old by shuffle): no lane reads a word
      // that another lane of the warp writes below.
      float m_old = 0.f;
      if (lane == 0) m_old = s_m[g];
      m_old = __shfl_sync(0xffffffffu, m_old, 0);
      float m_new = fmaxf(m_old, tmax);  // finite: the tile holds at least one valid position
      float pa = __expf(a - m_new), pb = __expf(b - m_new);
      s_p[g][lane] = pa;
      s_p[g][lane + 32] = pb;
      float sum = warp_sum(pa + pb);
      if (lane == 0) {
        float alpha = __expf(m_old - m_new);
        s_alpha[g] = alpha;
        s_l[g] = s_l[g] * alpha + sum;
        s_m[g] = m_new;
      }
    }
    __syncthreads();
    uint4 vv[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      int p = tile + pg + i * PG;
      vv[i] = p < end ? ld_stream(vbase + size_t(cur[i]) * HD) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      if (g < G) {
        float al = s_alpha[g];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] *= al;
      }
    }
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      float vf[8];
      unpack8<T>(vv[i], vf);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
          float pw = s_p[g][pg + i * PG];  // 0 for positions past the end
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(pw, vf[j], acc[g][j]);
        }
      }
    }
    __syncthreads();  // s_p is rewritten by the next tile
#pragma unroll
    for (int i = 0; i < PER; ++i) cur[i] = nxt[i];
  }
  // Merge the position groups' partial outputs.
#pragma unroll
  for (int g = 0; g < MAXG; ++g)
    if (g < G)
#pragma unroll
      for (int j = 0; j < 8; ++j) red[pg][g][dl * 8 + j] = acc[g][j];
  __syncthreads();
  for (int idx = tid; idx < G * HD; idx += kThreads) {
    int g = idx / HD, d = idx % HD;
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < PG; ++k) s += red[k][g][d];
    part_o[(size_t(split) * nh + kvh * G + g) * HD + d] = s;
  }
  if (tid < G) {
    float* st = part_stats + (size_t(split) * nh + kvh * G + tid) * 2;
    st[0] = s_m[tid];
    st[1] = s_l[tid];
  }
}

template <typename T, int HD, int MAXG>
__global__ void __launch_bounds__(kThreads)
    decode_attn_partial(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,
                        const int32_t* __restrict__ table, int bs, int bs_shift,
                        const int32_t* __restrict__ pos_dev, int nh, int nkv, int G, int max_ctx, float scale,
                        float* __restrict__ part_o, float* __restrict__ part_stats, int* counters,
                        T* __restrict__ out) {
  pdl_trigger();
  // The position and the block table are read before the PDL wait, so these two dependent loads overlap
  // the previous kernel's tail instead of delaying the first K loads: the caller writes them before the
  // previous kernel in the stream starts (the batch-1 path uploads them ahead of its first kernel).
  const int kvh = blockIdx.x, split = blockIdx.y, S = gridDim.y;
  int len = __ldg(pos_dev) + 1;
  len = len < 1 ? 1 : (len > max_ctx ? max_ctx : len);
  const int chunk = chunk_len(len, S);
  const int begin = split * chunk;
  const int end = min(len, begin + chunk);
  uint32_t first[Layout<HD>::PER] = {};
  if (begin < end) tile_rows<HD>(table, bs, bs_shift, nkv, begin, end, first);
  pdl_wait();  // before any read of earlier kernels' output and before any write
  const int tid = threadIdx.x;
  if (begin >= end) {  // nothing to do: mark this chunk empty for the merge
    if (tid < G) {
      float* st = part_stats + (size_t(split) * nh + kvh * G + tid) * 2;
      st[0] = -INFINITY;
      st[1] = 0.f;
    }
  } else {
    partial_chunk<T, HD, MAXG>(q, kc, vc, table, bs, bs_shift, nh, nkv, G, scale, part_o, part_stats, kvh,
                               split, begin, end, first);
  }
  if (!counters) return;
  // Fused merge: the last block of this kv head to finish combines the S chunks of its G query heads.
  __shared__ int s_last;
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(&counters[kvh], 1) == S - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int idx = tid; idx < G * HD; idx += kThreads) {
    const int h = kvh * G + idx / HD, d = idx % HD;
    float mx = -INFINITY;
    for (int s = 0; s < S; ++s) {
      const float* st = part_stats + (size_t(s) * nh + h) * 2;
      if (__ldcg(st + 1) > 0.f) mx = fmaxf(mx, __ldcg(st));
    }
    float num = 0.f, den = 0.f;
    for (int s = 0; s < S; ++s) {
      const float* st = part_stats + (size_t(s) * nh + h) * 2;
      const float l = __ldcg(st + 1);
      if (l > 0.f) {
        const float w = __expf(__ldcg(st) - mx);
        den += w * l;
        num += w * __ldcg(part_o + (size_t(s) * nh + h) * HD + d);
      }
    }
    out[size_t(h) * HD + d] = from_f32<T>(den > 0.f ? num / den : 0.f);
  }
  if (tid == 0) counters[kvh] = 0;  // ready for the next launch
}

// One block per query head, one thread per dimension: merges the chunks' partial softmax results.
template <typename T>
__global__ void decode_attn_merge(const float* __restrict__ part_o, const float* __restrict__ part_stats,
                                  int nh, int hd, int S, T* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  int h = blockIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < S; ++s) {
    const float* st = part_stats + (size_t(s) * nh + h) * 2;
    if (st[1] > 0.f) M = fmaxf(M, st[0]);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    for (int s = 0; s < S; ++s) {
      const float* st = part_stats + (size_t(s) * nh + h) * 2;
      if (st[1] > 0.f) {
        float w = __expf(st[0] - M);
        den += w * st[1];
        num += w * part_o[(size_t(s) * nh + h) * hd + d];
      }
    }
    out[size_t(h) * hd + d] = from_f32<T>(den > 0.f ? num / den : 0.f);
  }
}

template <typename T, int HD>
void launch_hd(const T* q, const T* k, const T* v, const int32_t* table, int bs, const int32_t* pos, int nh,
               int nkv, int max_ctx, float scale, int S, float* po, float* ps, int* counters, T* out,
               cudaStream_t stream, bool pdl) {
  int G = nh / nkv;
  dim3 grid(nkv, S);
  int bs_shift = -1;
  for (int sh = 0; sh < 31; ++sh)
    if ((1 << sh) == bs) bs_shift = sh;
  auto go = [&](auto kernel) {
    launch_kernel(pdl, kernel, grid, dim3(kThreads), 0, stream, q, k, v, table, bs, bs_shift, pos, nh, nkv, G,
                  max_ctx, scale, po, ps, counters, out);
  };
  if (G == 1)
    go(decode_attn_partial<T, HD, 1>);
  else if (G == 2)
    go(decode_attn_partial<T, HD, 2>);
  else if (G <= 4)
    go(decode_attn_partial<T, HD, 4>);
  else
    go(decode_attn_partial<T, HD, 8>);
}

}  // namespace

DecodeAttnPlan make_decode_attn_plan(int nkv, int max_ctx, int sm_count) {
  DecodeAttnPlan p;
  int target = (4 * sm_count + nkv - 1) / nkv;  // about four blocks per multiprocessor at long contexts
  int most = (max_ctx + kTile - 1) / kTile;
  p.splits = std::max(1, std::min({target, most, 128}));
  return p;
}

size_t decode_attn_partial_floats(const DecodeAttnPlan& plan, int nh, int hd) {
  return size_t(plan.splits) * nh * hd;
}
size_t decode_attn_stats_floats(const DecodeAttnPlan& plan, int nh) { return size_t(plan.splits) * nh * 2; }

void decode_attention(DType act, const void* q, const void* k_pool, const void* v_pool,
                      const int32_t* block_table, int block_size, const int32_t* pos_dev, int nh, int nkv,
                      int hd, int max_ctx, float scale, const DecodeAttnPlan& plan, float* part_o,
                      float* part_stats, void* out, cudaStream_t stream, bool pdl, int* merge_counters) {
  if (nkv <= 0 || nh % nkv != 0)
    fail("decode_attention: ", nh, " query heads not a multiple of ", nkv, " kv heads");
  if (nh / nkv > 8) fail("decode_attention: GQA group of ", nh / nkv, " query heads per kv head (max 8)");
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128)
    fail("decode_attention: head_dim ", hd, " not supported (16, 32, 64 or 128)");
  if (block_size < 1) fail("decode_attention: block_size ", block_size, " must be >= 1");
  if (!block_table) fail("decode_attention: no block table");
  int S = plan.splits;
  LLAMARUN_DISPATCH_ACT(act, "decode_attention", {
    auto* qq = static_cast<const T*>(q);
    auto* kk = static_cast<const T*>(k_pool);
    auto* vv = static_cast<const T*>(v_pool);
    auto* oo = static_cast<T*>(out);
    if (hd == 16)
      launch_hd<T, 16>(qq, kk, vv, block_table, block_size, pos_dev, nh, nkv, max_ctx, scale, S, part_o,
                       part_stats, merge_counters, oo, stream, pdl);
    else if (hd == 32)
      launch_hd<T, 32>(qq, kk, vv, block_table, block_size, pos_dev, nh, nkv, max_ctx, scale, S, part_o,
                       part_stats, merge_counters, oo, stream, pdl);
    else if (hd == 64)
      launch_hd<T, 64>(qq, kk, vv, block_table, block_size, pos_dev, nh, nkv, max_ctx, scale, S, part_o,
                       part_stats, merge_counters, oo, stream, pdl);
    else
      launch_hd<T, 128>(qq, kk, vv, block_table, block_size, pos_dev, nh, nkv, max_ctx, scale, S, part_o,
                        part_stats, merge_counters, oo, stream, pdl);
    LLAMARUN_CUDA_LAUNCH_CHECK("decode_attn_partial");
    if (!merge_counters)
      launch_kernel(pdl, decode_attn_merge<T>, dim3(nh), dim3(hd), 0, stream, (const float*)part_o,
                    (const float*)part_stats, nh, hd, S, oo);
  });
  LLAMARUN_CUDA_LAUNCH_CHECK("decode_attn_merge");
}

}  // namespace llamarun::cuda
