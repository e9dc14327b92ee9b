// CudaLlama: the Llama forward pass on one CUDA GPU (fp16 or bf16 weights, activations and KV cache;
// fp32 accumulation). Single sequence: prefill a prompt, then decode one token per step, the decode
// step replayed from a CUDA graph. Plain C++ header (no CUDA headers), so any code can include it;
// it is only linked in builds with LLAMARUN_CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"
#include "model/llama.h"

namespace llamarun {

struct WeightMap;

struct CudaLlamaOptions {
  std::string device = "cuda:0";  // "cuda" or "cuda:N"
  DType dtype = DType::F16;       // weights, activations and KV cache: F16 or BF16
  int max_context = 4096;         // KV-cache positions (prompt + generated)
  int max_prefill_chunk = 512;    // tokens per prefill forward; longer prompts run in chunks
  bool use_graph = true;          // replay the decode step from a captured CUDA graph
  bool fuse_decode = true;        // decode: RMSNorm / SiLU / residual fused into the GEMVs
  bool pdl = true;                // decode (fused): programmatic dependent launch on Hopper GPUs
  bool persistent_gemv = true;    // decode (fused): GEMV grids of one resident wave (warps loop over rows)
  bool fuse_rope_attn = true;     // decode (fused): RoPE + KV append in the QKV GEMV, attention merge fused
  int gemv_blocks_per_sm = 0;     // decode (fused, persistent): GEMV blocks per SM (0: as many as fit)
  bool gemv_wide = false;         // decode (fused): 8 instead of 4 16-byte loads per row per lane per step
  bool gemv_narrow = false;       // decode (fused): 2 instead of 4 (wide wins over narrow)
  bool gemv_l2_256 = false;       // decode (fused): weight loads with the L2::256B hint
  // Per-GEMV choice of the two variants above (bits: 1 qkv, 2 o, 4 gate_up, 8 down, 16 lm_head), on top of
  // the all-GEMV flags. Defaults: what measured fastest per projection (bench/cuda/NOTES.md).
  unsigned gemv_wide_mask = 4;  // gate_up: +1.1% tg128@512 on an H100 (sweep in bench/cuda/NOTES.md)
  unsigned gemv_l2_mask = 0;
  // decode (fused, pdl): MB of each GEMV's weights prefetched into L2 while the previous kernel drains.
  // For every GEMV, on an H200 8 MB changed nothing and 24 / 48 MB cost 6 / 9%; for gate_up alone (while the
  // small o-projection drains), 8 MB gave +0.5% at depth 512 and +0.9% at 4096 on an H100 (NOTES.md).
  int gemv_prefetch_mb = 8;
  unsigned gemv_prefetch_mask = 4;   // GEMVs that prefetch (bits as gemv_wide_mask); 0: all
  size_t staging_bytes = 64u << 20;  // each of the two pinned host staging buffers used for upload
  // Serving: no contiguous KV cache (prefill / decode_step are unavailable); init_paged() allocates a
  // paged pool and forward_paged() runs varlen batches of up to paged_max_tokens tokens from up to
  // paged_max_seqs sequences (max_context stays the per-sequence limit).
  bool paged = false;
  int paged_max_tokens = 512;
  int paged_max_seqs = 256;
  bool paged_graphs = true;  // decode-only batches replay CUDA graphs captured per batch-size bucket
  // Prefill chunks of at least this many tokens take the tensor-core prefill_attention over their sequence's
  // K / V gathered into a contiguous scratch; shorter ones (and decode rows) the paged kernel. 0: never.
  int paged_tc_prefill_rows = 16;
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

struct CudaSampling {
  float temperature = 0.f;  // <= 0: greedy
  int top_k = 0;            // <= 0: no top-k cut
  float top_p = 1.f;        // >= 1: no top-p cut
  uint64_t seed = 0;
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

  // Appends ids[0..n) at positions position() .. position()+n-1 and returns the logits [vocab] of the last.
  std::vector<float> prefill(const int32_t* ids, int n);
  // Appends `id` at position() and returns the greedy (argmax) next token, chosen on the GPU.
  int32_t decode_step(int32_t id);
  // Greedy decoding with the token fed back on the GPU: appends `id` at position(), then each greedy token in
  // turn, the next steps already queued while the host handles a token (no host round trip between steps).
  // on_token gets every new token in order (at most max_tokens, and no more than the context holds);
  // returning false stops. Returns how many tokens were delivered; position() advances by that many, and
  // the last delivered token is not in the cache yet (as after decode_step). Steps queued beyond the stop
  // leave nothing behind that matters (positions past position() are overwritten later).
  int decode_greedy(int32_t id, int max_tokens, const std::function<bool(int32_t)>& on_token);
  // Same step, returning the logits [vocab] (copied to the host).
  std::vector<float> decode_step_logits(int32_t id);
  // Same step with temperature / top-k / top-p sampling on the GPU.
  int32_t decode_step_sample(int32_t id, const CudaSampling& s);

  void reset();  // empty the KV cache: position() = 0
  // Restarts the GPU sampler's draw counter (decode_step_sample draws sample_uniform(seed, counter++)), so
  // the same seed gives the same tokens again.
  void reset_sample_counter();
  // Forgets positions >= pos (0 <= pos <= position()): the cache keeps the first pos tokens, so a shared
  // prefix is reused without recomputing it.
  void truncate(int pos);
  int position() const;
  int max_context() const;
  const LlamaConfig& config() const;
  DType dtype() const;
  CudaLoadStats load_stats() const;
  CudaMemoryStats memory_stats() const;
  std::string device_name() const;
  // Whether the decode step runs with programmatic dependent launch (opt.pdl, Hopper, and the driver took it;
  // known after the first decode step).
  bool pdl_active() const;
  // ---- serving (opt.paged) ----
  // Allocates the paged KV pool: num_blocks blocks of block_size positions, or (num_blocks == 0) as many
  // as kv_bytes holds, or (kv_bytes == 0 too) as many as fit in free GPU memory less a reserve for CUDA
  // graphs and cuBLASLt. Returns the block count. Throws Error with the sizes when none fits.
  int init_paged(int block_size, int num_blocks, size_t kv_bytes);
  // A varlen batch over the pool (see StepModel::forward): ids[r] = argmax of logit row r; the logits of
  // rows with want_logits[r] (all rows when want_logits is null) are copied to logits[r * vocab ..].
  void forward_paged(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits);
  int paged_blocks() const;
  // CUDA graphs captured for decode batch buckets so far.
  int paged_graph_count() const;
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
