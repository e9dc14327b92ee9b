// Launchers for the CUDA kernels of the Llama forward pass. Activations and fp weights are fp16 or
// bf16 (`act` is DType::F16 or DType::BF16); every reduction accumulates in fp32. All pointers are
// device pointers unless said otherwise; all launches go on `stream` and are asynchronous; launch
// errors throw llamarun::Error naming the kernel. Needs the CUDA runtime header (for cudaStream_t).
// `pdl`: launch with programmatic dependent launch (Hopper; see cuda_types.cuh): the kernel may start while
// the previous one finishes; the GEMV prefetches its weights meanwhile.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "model/config.h"

namespace llamarun::cuda {

// Throws Error unless act is F16 or BF16.
void check_act_dtype(DType act, const char* where);

// ---- element-wise and row kernels (elementwise.cu) ----

// out[m, :] = table[ids[m], :].  ids [M] int32; table [V, H]; out [M, H].
// An id outside [0, V) yields a row of zeros (callers validate ids on the host).
void embedding(DType act, const int32_t* ids, int M, const void* table, int V, int H, void* out,
               cudaStream_t stream);

// Fused residual add + RMSNorm over rows of H values:
//   if residual: x[m, :] += residual[m, :]   (x is the residual stream, updated in place)
//   out[m, :] = x[m, :] / sqrt(mean(x[m, :]^2) + eps) * w
// x, residual, out [M, H]; w [H]. residual may be nullptr. out may not alias x.
void add_rmsnorm(DType act, void* x, const void* residual, const void* w, void* out, int M, int H, float eps,
                 cudaStream_t stream);

// gu [M, 2*I] holds per row the gate (first I) and up (last I) projections; out [M, I] = silu(gate) * up.
void silu_mul(DType act, const void* gu, void* out, int M, int I, cudaStream_t stream);

// dst[0..n) (act dtype) = src[0..n) converted from src_type (F32, F16 or BF16; the block types with GPU
// decoders are dequantized by qdequant).
void convert_to_act(DType act, DType src_type, const void* src, void* dst, int64_t n, cudaStream_t stream);

// dst[i] = uniform(-scale, scale), a fixed function of (seed, i) (random-weight models).
void fill_random(DType act, void* dst, int64_t n, float scale, uint64_t seed, cudaStream_t stream);
// dst[i] = value.
void fill_const(DType act, void* dst, int64_t n, float value, cudaStream_t stream);

// ---- decode GEMV (gemv.cu) ----

// y[m, n] = sum_k x[m, k] * W[n, k].  W [N, K] row-major (act dtype), x [M, K] (act), y [M, N]:
// fp32 if y_f32 else act. M in 1..8; K a multiple of 8; W, x 16-byte aligned.
void gemv(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
          cudaStream_t stream);

// GEMV with fusions for the decode step (same contract as gemv otherwise):
//   prologue kRmsNorm: x [M, K] is the residual stream; the GEMV multiplies rmsnorm(x) * norm_weight [K]
//                      (rounded to act, as add_rmsnorm's output would be). eps: the norm's epsilon.
//   prologue kSiluMul: x [M, 2K] holds gate | up per row; the GEMV multiplies silu(gate) * up.
//   add_to_y:          y += x W^T (y is the residual stream; one rounding to act).
//   w_fp8_scale:       FP8 weights (below).
// Fused prologues need M * K * 2 bytes <= kGemvStageBytes (Error otherwise).
constexpr int kGemvStageBytes = 44 * 1024;  // shared memory for staged x (static + dynamic stays < 48 KB)
enum class GemvPrologue { kNone = 0, kRmsNorm = 1, kSiluMul = 2 };
struct GemvFusion {
  GemvPrologue prologue = GemvPrologue::kNone;
  const void* norm_weight = nullptr;
  float eps = 0.f;
  bool add_to_y = false;
  bool persistent = false;    // grid of one resident wave, each warp streaming several row groups
  bool wide = false;          // M = 1: 8 (instead of 4) 16-byte loads per row per lane per step
  size_t prefetch_bytes = 0;  // with pdl: about this many bytes of W are prefetched into L2 before the wait
  // FP8 weights when non-null: W is E4M3 [N, K], one byte per value, row-major, 16-byte aligned, K a
  // multiple of 16 (Error otherwise), with an fp32 scale per row: w_fp8_scale [N] (device). Then
  // y[m, n] = w_fp8_scale[n] * sum_k x'[m, k] * W[n, k] (x' the prologue's output, act; fp32 sums; the scale
  // multiplies the fp32 sum before add_to_y / the RoPE epilogue / the rounding to y's type). Every other
  // fusion works as with fp16 weights (prefetch_bytes counts one byte per value). With pdl the scales, like
  // W, are read before the PDL wait (constant data). Codes 0x7F / 0xFF (NaN) give NaN. Full speed needs FP8
  // conversion instructions (compute capability 8.9+); older GPUs decode in software.
  const float* w_fp8_scale = nullptr;
  // M = 1 QKV GEMV of the decode step: instead of writing y, rotate q / k (RoPE) at position *rope_pos,
  // store q into rope_q_out [nh, hd] and k / v into slot *rope_slot of the layer's paged pools
  // ([blocks][nkv][block_size][hd]; slot = block * block_size + offset; slot < 0: not stored). The rows of
  // W are [nh q heads | nkv k heads | nkv v heads] of hd each, N = (nh + 2 nkv) hd. Off when rope_inv_freq
  // is null. With pdl, *rope_pos and *rope_slot are read before the PDL wait: write them before the previous
  // kernel in the stream starts.
  RopeLayout rope_layout = RopeLayout::kHalf;
  const int32_t* rope_pos = nullptr;     // device [1]
  const int32_t* rope_slot = nullptr;    // device [1]
  const float* rope_inv_freq = nullptr;  // [hd / 2]
  int rope_nh = 0, rope_nkv = 0, rope_hd = 0, rope_block_size = 0;
  void* rope_q_out = nullptr;   // [nh, hd]
  void* rope_k_pool = nullptr;  // one layer's K pool
  void* rope_v_pool = nullptr;  // one layer's V pool
};
void gemv_fused(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
                const GemvFusion& fusion, cudaStream_t stream, bool pdl = false);

// ---- quantized weights (qgemv.cu) ----
// GGML block types that stay quantized on the GPU (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; every other type is
// dequantized to the activation dtype at load). On the device a matrix of R rows x C columns keeps the
// file's bytes in qlayout.h's order: every row's payload (the quants, reordered so that a warp's 16-byte
// loads are contiguous), then every row's header (the block scales).
struct QLayout {
  int block;    // values per block (a GPU thread decodes 32 at a time, whatever the type)
  int payload;  // bytes per block in the payload region
  int header;   // bytes per block in the header region
};
// The layout of t, or false for a type without GPU kernels.
bool qlayout(DType t, QLayout* out = nullptr);
size_t qmatrix_bytes(DType t, int64_t rows, int64_t cols);
// Host: GGML blocks of `rows` rows (cols values each) -> the layout's payload and header regions.
void qpack_rows(DType t, const void* src, int64_t rows, int64_t cols, void* payload, void* header);

// A device matrix in that layout (data 16-byte aligned; the header region follows the payload).
struct QMatrix {
  DType type = DType::Q8_0;
  const void* data = nullptr;
  int rows = 0, cols = 0;
  size_t payload_bytes() const;
};

// y = x' W^T for M (1..8) rows of x (act), K = W.cols (a multiple of 32). Each block applies the prologue
// to x (kRmsNorm: x is the residual stream, x' = rmsnorm(x) * norm_weight; kSiluMul: x [M, 2K] holds
// gate | up, x' = silu(gate) * up; each rounded to act as the separate kernels store it), quantizes x' to
// int8 per 32 values (x' ~ d * q, d = max|x'| / 127, as llama.cpp's q8_1 activations) in shared memory, and
// multiplies it with the weights' quants by dp4a, applying the block scales in fp32.
// y[m * ldy + n] for n < W.rows: fp32 if y_f32 else act; add_to_y adds to it (the residual stream).
struct QGemvFusion {
  GemvPrologue prologue = GemvPrologue::kNone;
  const void* norm_weight = nullptr;
  float eps = 0.f;
  bool add_to_y = false;
  bool y_f32 = false;
  int ldy = 0;  // 0: W.rows
  // x already quantized by qquantize_x (M rows of W.cols values, the prologue applied there): qgemv reads
  // it instead of x and ignores prologue / norm_weight / eps.
  const void* xq8 = nullptr;
  // M = 1: the GEMV compiled for 4 resident blocks per SM (at most 64 registers a thread) instead of 3.
  bool occupancy4 = false;
  // With xq8: a grid of one resident wave whose warps stream rows, each loading its next row's first
  // weights before the current row's sums (else one row per warp, as many blocks as that takes); x_smem:
  // each block copies the quantized x into shared memory first.
  bool resident = false;
  bool x_smem = false;
  // M = 1 with occupancy4 and xq8: the kernel before 2026-12-07 (ablation): each unit's quants unpacked as
  // they are loaded, and the staging code compiled in; at 64 registers it spilled (ptxas: 252 bytes of
  // spill stores for Q4_K; ncu: 925k local-memory requests in the gate_up GEMV). The default holds the
  // loaded units packed and is compiled for a pre-quantized x only: no spills.
  bool decode_at_load = false;
  // M = 1 with xq8: 2 or 4 rows per warp sharing each x load (qgemv_rows_kernel); 0 or 1: one row.
  int rows_per_warp = 0;
};
// pdl: launched with programmatic dependent launch (the first weights are loaded before its wait).
void qgemv(DType act, const QMatrix& w, const void* x, void* y, int M, const QGemvFusion& fusion,
           cudaStream_t stream, bool pdl = false);
// qgemv's activation quantization alone: x' (the prologue applied as above) of M (1..8) rows of K values
// quantized into xq8 (qx_bytes(M, K) bytes, 16-byte aligned). Given as QGemvFusion::xq8, one quantization
// serves every matrix that reads x, and the GEMV's blocks stream weights at once instead of each staging
// and quantizing all of x first (which costs as much as the weights for a matrix of few rows).
size_t qx_bytes(int M, int K);
void qquantize_x(DType act, const void* x, int M, int K, const QGemvFusion& fusion, void* xq8,
                 cudaStream_t stream, bool pdl = false);
// dst [W.rows, W.cols] (act, 16-byte aligned) = the dequantized W. staged_stores: the output staged in
// shared memory per block and stored lane-contiguously (false: each thread stores its unit's 64 bytes).
void qdequant(DType act, const QMatrix& w, void* dst, cudaStream_t stream, bool staged_stores = true);

// ---- decode attention, split-K / flash-decoding (attention_decode.cu) ----

// Work partition for decode attention over up to max_ctx positions.
struct DecodeAttnPlan {
  int splits = 1;  // blocks per kv head along the context; each takes a contiguous chunk
};
DecodeAttnPlan make_decode_attn_plan(int nkv, int max_ctx, int sm_count);
// Scratch sizes (floats) for a plan: partial outputs [splits, nh, hd] and (max, sum) [splits, nh, 2].
size_t decode_attn_partial_floats(const DecodeAttnPlan& plan, int nh, int hd);
size_t decode_attn_stats_floats(const DecodeAttnPlan& plan, int nh);

// One query token at position *pos_dev (device int32, read at run time, so a captured graph replays at
// every position) attends to its sequence's positions 0..*pos_dev in the paged pool: k_pool, v_pool are one
// layer's [blocks][nkv][block_size][hd]; position p lives in block block_table[p / block_size] (device
// int32), offset p % block_size. q [nh, hd]; out [nh, hd]. Query head h reads kv head h / (nh / nkv). hd in
// {16, 32, 64, 128}; nh / nkv <= 8. max_ctx: the longest sequence (the plan's); scale multiplies q.k
// (1/sqrt(hd)). part_o, part_stats: scratch sized as above. merge_counters: nullptr (a second kernel merges
// the splits) or device int [nkv], all zero, owned by the caller: then the last block of each kv head to
// finish merges (the counters are left at zero again). With pdl the kernel may start while the previous
// kernel in the stream runs: q is read after the PDL wait, but *pos_dev and block_table before it, so they
// must be written before that previous kernel starts (an upload ahead of it, not the kernel itself).
void decode_attention(DType act, const void* q, const void* k_pool, const void* v_pool,
                      const int32_t* block_table, int block_size, const int32_t* pos_dev, int nh, int nkv,
                      int hd, int max_ctx, float scale, const DecodeAttnPlan& plan, float* part_o,
                      float* part_stats, void* out, cudaStream_t stream, bool pdl = false,
                      int* merge_counters = nullptr);

// ---- prefill attention, causal, tiled with online softmax (attention_prefill.cu) ----

// q [M, nh, hd] for tokens at positions start .. start+M-1; the cache already holds positions
// 0 .. start+M-1. Query row i attends to positions 0 .. start+i. out [M, nh, hd].
// Tensor cores (sm_80+), hd in {16, 32, 64, 128}.
void prefill_attention(DType act, const void* q, const void* k_cache, const void* v_cache, int M, int start,
                       int nh, int nkv, int hd, int max_ctx, float scale, void* out, cudaStream_t stream);

// ---- greedy token on the GPU (sampling.cu): it stays there until the caller copies it ----

// out[0] = argmax(logits[0..V)), lowest index on ties. logits fp32. host_out: also written there, a
// device-accessible pointer to pinned host memory (cudaHostGetDevicePointer), complete once the stream is
// synchronised.
void argmax(const float* logits, int V, int32_t* out, cudaStream_t stream, bool pdl = false,
            int32_t* host_out = nullptr);

// ---- paged KV cache for serving (paged_attention.cu) ----
// The pool holds, per layer and for K and V separately, [num_blocks][nkv][block_size][hd] (the CPU
// PagedKVPool's layout): the keys of one head inside a block are contiguous. A sequence's position p
// lives in block table[p / block_size], slot p % block_size. Its elements are act values, or with kv_fp8
// E4M3 bytes with a unit scale (stored as cuda_fp8.h's __nv_cvt_float_to_fp8(v, __NV_SATFINITE,
// __NV_E4M3): round to nearest even, saturated to +-448), half the bytes for attention to read.

// RoPE fused with the KV append, for a varlen batch over the paged pool. qkv [M, (nh + 2*nkv) * hd]: per
// row the nh query heads, then nkv key heads, then nkv value heads. rope rotates pairs (i, i + hd/2)
// (kHalf) or (2i, 2i + 1) (kInterleaved) by angle pos[m] * inv_freq[i] (inv_freq [hd/2] fp32). Row m (at
// position pos[m]) has its rotated query stored in q_out [M, nh, hd] and its rotated key / value written to
// slot slot[m] of the layer's pools (slot = block * block_size + offset; slot < 0: not stored, e.g. padding
// rows). pdl: launched with programmatic dependent launch.
void rope_store_kv_paged(DType act, RopeLayout layout, const void* qkv, const int32_t* pos,
                         const int32_t* slot, const float* inv_freq, int M, int nh, int nkv, int hd,
                         int block_size, void* q_out, void* k_pool, void* v_pool, cudaStream_t stream,
                         bool pdl = false, bool kv_fp8 = false);

// Varlen paged attention, causal: query row m (q [M, nh, hd]) belongs to sequence seq[m] and sits at
// position pos[m]; it attends to positions 0 .. pos[m] of that sequence, whose K / V are found through
// block_tables[seq[m] * max_blocks + p / block_size] (device int32). Query head h reads kv head
// h / (nh / nkv). out [M, nh, hd] (act). hd in {16, 32, 64, 128}; nh / nkv <= 8. scale multiplies q.k.
// Rows with pos[m] < 0 produce zeros. Serves decode rows and prefill chunks alike.
void paged_attention(DType act, const void* q, const void* k_pool, const void* v_pool,
                     const int32_t* block_tables, int max_blocks, const int32_t* seq, const int32_t* pos,
                     int M, int nh, int nkv, int hd, int block_size, float scale, void* out,
                     cudaStream_t stream, bool kv_fp8 = false);

// Positions 0 .. n-1 of one sequence, one layer, from the paged pool into the contiguous cache layout
// (k_out, v_out [nkv, max_ctx, hd]), so prefill_attention's tensor-core kernel
// can serve a long prefill chunk: k_out[kh, p, :] = K of position p (block table[p / block_size], device
// int32). hd a multiple of 8; n <= max_ctx.
void gather_kv_pages(DType act, const void* k_pool, const void* v_pool, const int32_t* table, int n, int nkv,
                     int hd, int block_size, int max_ctx, void* k_out, void* v_out, cudaStream_t stream,
                     bool kv_fp8 = false);

// out[r, :] = x[rows[r], :] for r in [0, R); x and out rows of H act values; rows device int32.
void gather_rows(DType act, const void* x, const int32_t* rows, int R, int H, void* out, cudaStream_t stream);

// ids[r] = argmax(logits[r * V .. r * V + V)) for r in [0, R) (fp32 logits; lowest index on ties).
void argmax_rows(const float* logits, int R, int V, int32_t* ids, cudaStream_t stream);

}  // namespace llamarun::cuda
