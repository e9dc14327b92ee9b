// The Llama forward pass on the CPU: RMSNorm, RoPE, GQA attention over the paged KV cache, SwiGLU MLP.
// One forward() runs any mix of prefill chunks and decode tokens of many sequences; one sequence is a
// batch of one. The tokens of a step go through each linear layer as one matrix-matrix product.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "formats/weight_map.h"
#include "kv/paged_kv_pool.h"
#include "model/config.h"
#include "model/llama_tensors.h"

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

class Communicator;

// Bound by bind_llama_weights (model/llama_tensors.h), the one validator every backend loads through.

// Called with each named intermediate (e.g. "attn_norm", layer 3) when set: for finding where a
// divergence from a reference starts. `rows` x `cols` f32 values.
using DumpHook =
    std::function<void(const char* name, int layer, const float* data, int64_t rows, int64_t cols)>;

struct ForwardOptions {
  // Round activations to bf16 where a bf16 PyTorch model rounds them (set for bf16 checkpoints so
  // results track transformers run in bf16). Off: f32 activations throughout.
  bool emulate_bf16 = false;
  // MatmulOptions::int8_activations for every projection (Q8_0 / Q4_0 / Q4_1 weights on llama.cpp's int8
  // dot; load_model sets it unless the activations are "f32").
  bool int8_activations = false;
  DumpHook dump;
  // Tensor parallelism (parallel/tp_llama.h): this model is one rank's shard, and the partial outputs of
  // its row-parallel o_proj and down_proj are summed over the group before the residual add.
  Communicator* comm = nullptr;
};

// The tokens of one serving step, from any number of sequences (prefill chunks and decodes mixed).
// The engine keeps one and refills it each step (clear() keeps the capacity).
struct BatchInput {
  std::vector<int32_t> tokens;     // [n] token ids
  std::vector<int32_t> positions;  // [n] position of each token inside its sequence
  std::vector<int32_t> seq_index;  // [n] index into block_tables
  // [n_seqs] each sequence's block table; it must cover every position of its tokens in this step.
  std::vector<std::span<const int32_t>> block_tables;
  std::vector<int32_t> logit_rows;  // token indices whose logits are wanted (any order)
  // Polled between layers when set: once true, forward() stops and throws ForwardAborted (the KV of
  // the step's tokens is then incomplete; the caller ends or recomputes their sequences).
  const std::atomic<bool>* abort = nullptr;
  // true: MatmulOptions::batch_invariant (each row's results independent of the batch). false: the
  // default matmul (blocked GEMM above 8 rows: faster prefill, last-bit differences between batches).
  bool batch_invariant = true;
  void clear() {
    tokens.clear();
    positions.clear();
    seq_index.clear();
    block_tables.clear();
    logit_rows.clear();
  }
  int size() const { return int(tokens.size()); }
};

// One sequence `ids` at positions 0.. as a batch over the block table `table` (which must outlive it), with
// the logits of every position (all_logits) or of the last; batch_invariant off (one sequence: the faster
// GEMM).
BatchInput sequence_batch(std::span<const int32_t> ids, std::span<const int32_t> table, bool all_logits);

// Thrown by LlamaModel::forward when BatchInput::abort was raised during the step.
class ForwardAborted : public Error {
 public:
  ForwardAborted() : Error("the forward pass was aborted (deadline)") {}
};

class LlamaModel {
 public:
  // max_batch: the scratch buffers' initial size in tokens (they grow for larger batches).
  LlamaModel(const LlamaConfig& cfg, LlamaWeights weights, int max_batch = 256);

  // Runs a varlen batch over the paged pool: for each layer, the K/V of every token are written to
  // its sequence's blocks first, then each token attends to positions 0..its own position of its own
  // sequence (so chunked prefill and decodes mix in one call). The linear layers run as one matmul
  // over all tokens with MatmulOptions::batch_invariant (unless b.batch_invariant is false), and
  // everything else is per row, so each token's results are bit-identical whatever else is in the batch.
  // logits: [logit_rows.size(), vocab], row i for token logit_rows[i].
  // Grows the scratch buffers when the batch is larger than max_batch (amortised).
  // Throws Error on a malformed batch, ForwardAborted when b.abort was raised.
  void forward(const BatchInput& b, PagedKVPool& kv, float* logits);

  // The logits of every position of one sequence `ids` (ids.size() x vocab) from an empty cache: one
  // forward() over a pool of its own (for golden tests and tools).
  std::vector<float> prompt_logits(std::span<const int32_t> ids);

  const LlamaConfig& config() const { return cfg_; }
  const LlamaWeights& weights() const { return w_; }
  ForwardOptions& options() { return opts_; }
  int max_batch() const { return max_batch_; }

 private:
  void attention(int layer, const BatchInput& b, const PagedKVPool& kv);
  void reserve(int n);
  void round_act(float* x, size_t n) const;

  LlamaConfig cfg_;
  LlamaWeights w_;
  ForwardOptions opts_;
  int max_batch_;
  std::vector<float> inv_freq_;
  // Per-step scratch, preallocated for max_batch tokens (nothing allocates in the decode loop).
  std::vector<float> x_;       // [max_batch, hidden]   residual stream
  std::vector<float> xn_;      // [max_batch, hidden]   normalised input
  std::vector<float> q_;       // [max_batch, n_heads*head_dim]
  std::vector<float> k_;       // [max_batch, n_kv_heads*head_dim]
  std::vector<float> v_;       // [max_batch, n_kv_heads*head_dim]
  std::vector<float> att_;     // [max_batch, n_heads*head_dim]  attention output
  std::vector<float> o_;       // [max_batch, hidden]
  std::vector<float> gate_;    // [max_batch, intermediate]
  std::vector<float> up_;      // [max_batch, intermediate]
  std::vector<float> scores_;  // per thread: attention scores and a run's gathered queries / outputs
  std::vector<std::pair<int, int>> runs_;  // attention's runs of tokens: (first token, count)
  std::vector<float> logit_x_;             // [rows, hidden] the rows whose logits forward computes
};

}  // namespace llamarun
