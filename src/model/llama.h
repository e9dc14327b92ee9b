// The Llama forward pass on the CPU: RMSNorm, RoPE, GQA attention over a KV cache, SwiGLU MLP.
// A whole prompt chunk goes through each layer as one matrix-matrix product.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/weight_map.h"
#include "kv/kv_cache.h"
#include "model/config.h"

namespace llamarun {

struct LlamaLayerWeights {
  WeightView attn_norm;  // [hidden]
  WeightView wq;         // [n_heads*head_dim, hidden]
  WeightView wk;         // [n_kv_heads*head_dim, hidden]
  WeightView wv;         // [n_kv_heads*head_dim, hidden]
  WeightView wo;         // [hidden, n_heads*head_dim]
  WeightView ffn_norm;   // [hidden]
  WeightView w_gate;     // [intermediate, hidden]
  WeightView w_up;       // [intermediate, hidden]
  WeightView w_down;     // [hidden, intermediate]
};

struct LlamaWeights {
  WeightView tok_embd;  // [vocab, hidden]
  WeightView out_norm;  // [hidden]
  WeightView lm_head;   // [vocab, hidden] (tok_embd when tied)
  std::vector<LlamaLayerWeights> layers;
};

// Binds the tensors of `wm` (HF names, or GGUF names when `gguf_names`) after checking every shape
// against `cfg`. Throws Error naming the tensor and both shapes on a mismatch.
LlamaWeights bind_llama_weights(const LlamaConfig& cfg, const WeightMap& wm, bool gguf_names,
                                const std::string& where);

// Called with each named intermediate (e.g. "attn_norm", layer 3) when set: for finding where a
// divergence from a reference starts. `rows` x `cols` f32 values.
using DumpHook = std::function<void(const char* name, int layer, const float* data, int64_t rows, int64_t cols)>;

struct ForwardOptions {
  // Round activations to bf16 where a bf16 PyTorch model rounds them (set for bf16 checkpoints so
  // results track transformers run in bf16). Off: f32 activations throughout.
  bool emulate_bf16 = false;
  DumpHook dump;
};

class LlamaModel {
 public:
  // max_batch: the most tokens one forward() call processes (longer prompts are chunked by callers).
  LlamaModel(const LlamaConfig& cfg, LlamaWeights weights, int max_batch = 256);

  // Runs `n` tokens at positions pos..pos+n-1, appending their K/V to `kv`.
  // logits: if all_logits, n x vocab values, else vocab values for the last token.
  // Preconditions: 1 <= n <= max_batch, pos + n <= kv.max_ctx().
  void forward(const int32_t* tokens, int n, int pos, KVCache& kv, float* logits, bool all_logits = false);

  KVCache make_cache(int max_ctx) const;
  const LlamaConfig& config() const { return cfg_; }
  const LlamaWeights& weights() const { return w_; }
  ForwardOptions& options() { return opts_; }
  int max_batch() const { return max_batch_; }

 private:
  void attention(int layer, int n, int pos, KVCache& kv);
  void round_act(float* x, size_t n) const;

  LlamaConfig cfg_;
  LlamaWeights w_;
  ForwardOptions opts_;
  int max_batch_;
  std::vector<float> inv_freq_;
  // Per-step scratch, preallocated for max_batch tokens (nothing allocates in the decode loop).
  std::vector<float> x_;      // [max_batch, hidden]   residual stream
  std::vector<float> xn_;     // [max_batch, hidden]   normalised input
  std::vector<float> q_;      // [max_batch, n_heads*head_dim]
  std::vector<float> k_;      // [max_batch, n_kv_heads*head_dim]
  std::vector<float> v_;      // [max_batch, n_kv_heads*head_dim]
  std::vector<float> att_;    // [max_batch, n_heads*head_dim]  attention output
  std::vector<float> o_;      // [max_batch, hidden]
  std::vector<float> gate_;   // [max_batch, intermediate]
  std::vector<float> up_;     // [max_batch, intermediate]
  std::vector<float> scores_; // [threads, max_ctx] attention scores, grown by max_ctx on first use
};

}  // namespace llamarun
