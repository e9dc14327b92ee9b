// CudaLlama: the Llama forward pass on one CUDA GPU (fp16 or bf16 weights, activations and KV cache;
// fp32 accumulation). One forward: a varlen batch (prefill chunks and decode rows of many sequences) over a
// paged KV pool, as the serving engine drives it through CudaStepModel. A batch of one decode row takes a
// fused fast path (replayed from a CUDA graph); decode-only batches replay graphs per batch-size bucket.
// Plain C++ header (no CUDA headers), so any code can include it; it is only linked in builds with
// LLAMARUN_CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/fp8_scale.h"
#include "core/dtype.h"
#include "model/config.h"
#include "model/llama.h"

namespace llamarun {

struct WeightMap;

// Options of the CUDA forward. Each field that tunes speed says what it measured (bench/cuda/NOTES.md); the
// measured winners of the decode kernels (persistent GEMV grids, 8 loads in flight for gate_up, 8 MB of
// gate_up's weights prefetched into L2 under programmatic dependent launch, RoPE / KV append fused into the
// QKV GEMV, the attention merge fused) are fixed in cuda_llama.cpp.
struct CudaLlamaOptions {
  std::string device = "cuda:0";  // "cuda" or "cuda:N"
  DType dtype = DType::F16;       // weights, activations and KV cache: F16 or BF16
  int max_context = 4096;         // the longest sequence (positions): block tables, decode attention's split
  // One forward's batch: up to paged_max_tokens tokens from up to paged_max_seqs sequences (the engine's
  // max_batch_tokens / max_num_seqs).
  int paged_max_tokens = 512;
  int paged_max_seqs = 256;
  // Decode-only batches replay CUDA graphs (one per batch-size bucket; the batch-1 fast path its own).
  // Without (H100, Llama-2-7B shape fp16, NOTES.md "One forward"): tg128@d0 -1.3%, decode batches of 2 / 8
  // -4.6% / -4%.
  bool paged_graphs = true;
  // init_paged warms the serving paths up (warm_up_paged) before it returns (the CLI's serve --warmup; off
  // until a GPU has measured it).
  bool paged_warmup = false;
  // A batch of one decode row takes the fused batch-1 path (5 kernels per layer with PDL, split-K attention
  // through the block table); off, it takes the general varlen path (cuBLASLt / GEMV, paged_attention):
  // tg128@d0 -7.2% (same run). Tests turn it off to compare the two paths.
  bool fast_decode = true;
  // The fast path's argmax kernel writes the token straight into pinned host memory (mapped into the
  // device's address space) instead of a copy node after it; off (or where the driver cannot map it): the
  // copy. Ablation in NOTES.md "One forward".
  bool fast_token_direct = true;
  // Prefill chunks of at least this many tokens take the tensor-core prefill_attention over their sequence's
  // K / V gathered into a contiguous scratch; shorter ones (and decode rows) the paged kernel. 0: never.
  // (pp512's attention: 1.1 ms on tensor cores against 6-7 ms for the CUDA-core kernel, NOTES.md "Floors".)
  int paged_tc_prefill_rows = 16;
  // GGUF weights of a type with GPU kernels (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) stay quantized on the GPU
  // (the embedding table excepted: it is dequantized, one row is read per token); batches take the
  // quantized GEMV up to quant_gemv_max_rows rows (in steps of 8 rows, reading the weights once per step)
  // and above that dequantize each weight into a scratch for the tensor-core GEMM. Off: every weight is
  // dequantized to `dtype` at load (the fp16 paths, the fused batch-1 path included). Other types (Q2_K,
  // Q3_K, Q5_0, Q5_1, IQ4_NL, IQ4_XS) are always dequantized at load.
  // Off in this struct (tests state it); the CLI turns it on unless --gpu-dequant: H100 Llama-2-7B shape
  // Q4_K_M decodes at 1.46x the dequantized path in 0.36x the memory, but prefills at 0.6x (NOTES.md), and
  // batches of 9-64 rows (serving) re-read the weights once per 8 rows.
  bool keep_quantized = false;
  // The quantized GEMV's input quantized to int8 once per projection by its own small kernel (qquantize_x,
  // spread over K / 4,096 blocks), the GEMV then streaming weights at once, one row per warp; off: every
  // GEMV block (a resident wave of them) stages and quantizes all of x before reading its weights. Q8_0
  // projections of the batch-1 path with K <= 8,192 stage anyway while quant_stage_q8 is on. H200, Llama-2-7B
  // shape, tg128 (NOTES.md "Quantized weights on the GPU", third run): Q4_K_M 328.9 tok/s once (with
  // quant_occupancy4) against 284.9 staged; Q8_0 354.2 staged against 346.4 once.
  bool quantize_input_once = true;
  bool quant_stage_q8 = true;
  // The quantized batch-1 path's kernels launched with programmatic dependent launch (Hopper), each
  // quantized GEMV loading its first weights before it waits for its predecessor. Same run: 290.1 tok/s
  // on, 266.6 off.
  bool quant_pdl = true;
  // The batch-1 quantized GEMV reading a pre-quantized input compiled for 4 resident blocks per SM (at most
  // 64 registers a thread) instead of the compiler's 94 (2 blocks: 25% occupancy, ncu). Same run: Q4_K_M
  // 328.9 tok/s on, 269.7 off.
  bool quant_occupancy4 = true;
  // The GEMVs reading a pre-quantized input as one resident wave whose warps stream rows (QGemvFusion::
  // resident), with the input copied into each block's shared memory (quant_x_smem). Ablations, off: H100,
  // Llama-2-7B shape, no change within 1-3% per GEMV and end to end (Q4_K_M tg128 300.8 resident against
  // 305.9; NOTES.md "Quantized weights on the GPU", fourth run). The CLI's --gpu-quant-resident /
  // --gpu-quant-x-smem turn them on.
  bool quant_resident = false;
  bool quant_x_smem = false;
  bool quant_decode_at_load = false;  // QGemvFusion::decode_at_load (ablation)
  // Rows per warp of the batch-1 GEMV reading a pre-quantized input (QGemvFusion::rows_per_warp): 1, 2, 4,
  // or 0: by each part's shape (cuda_llama.cpp's auto_rows_per_warp). H100, Llama-2-7B shape Q4_K_M tg128,
  // four same-run rounds: 406.6-409.1 tok/s with 0 against 388.6-391.0 with 1 (bench/cuda/runs/
  // 2026-12-07f-h100-rows-auto/); 2 or 4 for every projection: 368.9 / 307.8.
  int quant_rows_per_warp = 0;
  bool quant_dequant_staged = true;  // qdequant's staged_stores (prefill; ablation: off)
  // Prefill (batches over quant_gemv_max_rows) dequantizes the layers' next quantized weight into a second
  // scratch on a side stream while the GEMM of the current one runs (one more scratch of the largest
  // projection); off: each weight dequantized on the main stream right before its GEMM. Experimental.
  bool quant_dequant_ahead = false;
  int quant_gemv_max_rows = 64;
  // FP8 weights (the CLI's --quantize fp8 with --device cuda): every linear weight but a tied lm_head stored
  // as E4M3 with one fp32 scale per output channel (chosen per row as fp8_weight_scale says), quantized on
  // the GPU at load from the
  // fp16 / bf16 (or dequantized) weights. Batches of up to 8 rows take the decode GEMV reading FP8 (the
  // fused batch-1 path included); larger ones quantize the activations per token to E4M3 and run cuBLASLt's
  // FP8 GEMM. Needs compute capability 8.9+ (Error otherwise); excludes keep_quantized.
  bool fp8_weights = false;
  // How each FP8 weight row's scale is chosen (fp8.h): kMax, max / 448 (the default), or kSearch, the least
  // squared error among 16 scales from max / 448 to 2 max / 448 (the CLI's --fp8-weight-scale search;
  // emulated on the CPU it cut FP8's perplexity cost on the default model from +2.74% to +1.04%; to become
  // the default once a GPU has measured it).
  cuda::Fp8Scale fp8_weight_scale = cuda::Fp8Scale::kMax;
  // With FP8 weights, batches over 8 rows quantize the GEMM inputs inside the RMSNorm and SiLU-mul kernels
  // (add_rmsnorm_fp8 / silu_mul_fp8, fp8.h: the same bits, three kernels fewer per layer) instead of a
  // separate fp8_quantize_rows each (the CLI's --gpu-fp8-fused). Off until a GPU has measured it.
  bool fp8_fused_act_quant = false;
  // The paged KV cache in E4M3 with a unit scale (the CLI's --kv-cache-dtype fp8): half the bytes per
  // position, so twice the positions in the same memory and half the bytes for attention to read (what
  // bounds decode batches over long contexts). Rounds every key and value to E4M3 (3 mantissa bits); the
  // batch-1 fused path is off with it (a single stream takes the varlen path).
  bool kv_fp8 = false;
  // Each of the two pinned host buffers the weight upload streams through (host memory held while loading;
  // other sizes not benchmarked; tests use 1 MB to put several chunks through both buffers).
  size_t staging_bytes = 64u << 20;
};

struct CudaLoadStats {
  double seconds = 0;     // wall time of the weight upload / initialisation
  size_t host_bytes = 0;  // bytes read from the host weights (0 for random weights)
  double gb_per_s = 0;    // host_bytes / seconds
  size_t device_weight_bytes = 0;
};

struct CudaMemoryStats {
  size_t weights = 0, kv_cache = 0, activations = 0, workspace = 0;
  size_t allocated = 0;  // all device memory this model holds now
  size_t peak = 0;       // the most it ever held
};

// Named model shapes for random-weight runs: "tiny" (a small GQA model with head_dim 64, for tests), else the
// shared presets of random_model_preset ("llama2-7b", "llama-1b", "smollm2-135m"). Throws Error for other
// names.
LlamaConfig cuda_preset_config(const std::string& name);

class CudaLlama {
 public:
  // From host weights (mmap'ed) bound by bind_llama_weights (model/llama_tensors.h), the validator the CPU
  // model loads through too: the lm_head is tied exactly where the binding tied it. Any stored dtype of the
  // table (f32, f16, bf16, q8_0, q4_0, q4_1) is converted to opt.dtype on the GPU while uploading through
  // pinned staging buffers. config.rope_layout must match the weights (GGUF llama files: kInterleaved).
  // Throws Error when the weights were bound for another config, when the device is absent, or when the
  // model does not fit in GPU memory.
  CudaLlama(const LlamaConfig& config, const LlamaWeights& weights, const CudaLlamaOptions& opt = {});
  // Binds `weights` (naming detected from the token embedding's name: Hugging Face, GGUF or Meta) through
  // bind_llama_weights, then as above: a missing or misshapen tensor throws the validator's Error.
  CudaLlama(const LlamaConfig& config, const WeightMap& weights, const CudaLlamaOptions& opt = {});
  // Random weights (uniform, scaled by 1/sqrt(fan-in)), generated on the GPU from `seed`.
  CudaLlama(const LlamaConfig& config, uint64_t seed, const CudaLlamaOptions& opt = {});
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  int max_context() const;
  const LlamaConfig& config() const;
  DType dtype() const;
  CudaLoadStats load_stats() const;
  CudaMemoryStats memory_stats() const;
  std::string device_name() const;
  // Whether the batch-1 decode path runs with programmatic dependent launch (Hopper, and the driver took it;
  // known after the first such step).
  bool pdl_active() const;
  // Allocates the paged KV pool: num_blocks blocks of block_size positions, or (num_blocks == 0) as many
  // as kv_bytes holds, or (kv_bytes == 0 too) as many as fit in free GPU memory less a reserve for CUDA
  // graphs and cuBLASLt. Returns the block count. Throws Error with the sizes when none fits.
  int init_paged(int block_size, int num_blocks, size_t kv_bytes);
  // What a fresh server otherwise does inside its first requests' steps (the 256-client benchmark's first
  // burst): captures the decode graph of every batch bucket up to min(paged_max_tokens, paged_max_seqs) and
  // the batch-1 fast path's (capture only: nothing runs), and runs every projection's GEMM once for each
  // batch of qmax + 1 .. paged_max_tokens rows (the lm_head's up to paged_max_seqs), so that cuBLASLt has
  // chosen, and the driver loaded, every kernel a mixed step takes. Leaves the KV pool as it was (padding
  // rows store nothing). Returns the seconds it took. init_paged calls it with opt.paged_warmup.
  double warm_up_paged();
  // Seconds the last warm_up_paged took (0 before any).
  double warmup_seconds() const;
  // A varlen batch over the pool (see StepModel::forward): ids[r] = argmax of logit row r; the logits of
  // rows with want_logits[r] (all rows when want_logits is null) are copied to logits[r * vocab ..].
  void forward_paged(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits);
  int paged_blocks() const;
  // CUDA graphs captured for decode batch buckets so far (the batch-1 fast path's included).
  int paged_graph_count() const;
  // Forwards that took the batch-1 fast path so far.
  int64_t fast_decode_steps() const;
  // Host time forward_paged spent validating and packing its batches (before the launches), in total.
  double paged_host_seconds() const;

  // Bytes of weights read per decoded token (all layer weights + final norm + lm_head).
  size_t weight_bytes_per_token() const;
  // Bytes of KV cache read by one decode step at `pos` (positions 0..pos, all layers, K and V).
  size_t kv_bytes_per_token(int pos) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llamarun
