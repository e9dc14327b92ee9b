// Tensor-parallel Llama on the CPU: `size` ranks, one thread each, each a LlamaModel over its shard
// (tp_shard: its query heads, KV heads and intermediate features; column-parallel q / k / v / gate / up as
// row ranges of the weights, row-parallel o / down as column ranges copied out), its own paged KV cache of
// its KV heads, and the all-reduce after o_proj and down_proj (ForwardOptions::comm, an InProcessGroup).
// The embedding, the norms and lm_head are replicated. It shows the sharding gives the model's results
// (tests/test_tensor_parallel.cpp: the golden fixtures' greedy tokens at TP = 2 and 4) and is the
// reference the GPU ranks will be held to.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "kv/paged_kv_pool.h"
#include "model/llama.h"
#include "parallel/communicator.h"

namespace llamarun {

class TpCpuLlama {
 public:
  // Throws Error (naming the sizes) where the heads or features do not divide over `size` (tp_shard), and
  // where a row-parallel weight's column range does not fall on its quantization blocks.
  TpCpuLlama(const LlamaConfig& cfg, const LlamaWeights& weights, int size,
             const ForwardOptions& options = {});
  ~TpCpuLlama();

  int size() const { return size_; }
  // Each rank's paged KV pool: num_blocks blocks of block_size positions of its KV heads.
  void init_kv(int block_size, int num_blocks);
  // LlamaModel::forward on every rank at once (same batch); logits from rank 0.
  void forward(const BatchInput& b, float* logits);
  // The logits of every position of `ids` (ids.size() x vocab) from an empty cache, as
  // LlamaModel::prompt_logits; then greedy(n) continues that sequence by n greedy tokens.
  std::vector<float> prompt_logits(std::span<const int32_t> ids);
  std::vector<int32_t> greedy(std::span<const int32_t> prompt, int n);

 private:
  int size_;
  LlamaConfig cfg_;
  InProcessGroup group_;
  std::vector<std::vector<uint8_t>> owned_;  // the copied column ranges of o / down
  std::vector<std::unique_ptr<LlamaModel>> ranks_;
  std::vector<std::unique_ptr<PagedKVPool>> kv_;
  std::vector<std::vector<float>> scratch_logits_;  // ranks > 0
};

}  // namespace llamarun
