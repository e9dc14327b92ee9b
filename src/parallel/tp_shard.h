// How tensor parallelism splits one Llama layer over `size` ranks (the Megatron split vLLM and TensorRT-LLM
// use): q / k / v and gate / up are column-parallel (each rank computes its heads and its slice of the
// intermediate features), o_proj and down_proj row-parallel (each rank multiplies its slice of the inputs
// and the partial outputs are summed: Communicator::all_reduce_sum). With fewer KV heads than ranks each
// KV head is replicated on the size / nkv ranks whose query heads read it.
#pragma once

#include "model/config.h"

namespace llamarun {

struct TpShard {
  int rank = 0, size = 1;
  int q_head0 = 0, q_heads = 0;    // query heads [q_head0, q_head0 + q_heads)
  int kv_head0 = 0, kv_heads = 0;  // KV heads held (replicated when nkv < size)
  int inter0 = 0, inter = 0;       // intermediate features [inter0, inter0 + inter)
};

// Rank `rank`'s shard. Throws Error (naming the sizes) unless num_heads and intermediate_size divide by
// size and num_kv_heads divides by size or size by num_kv_heads.
TpShard tp_shard(const LlamaConfig& cfg, int rank, int size);

}  // namespace llamarun
