// Paged KV storage: a pool of fixed-size blocks of f32 keys and values shared by all sequences.
// A sequence's positions map to blocks through its block table: position p lives in block
// table[p / block_size], slot p % block_size.
// Layout, per layer and for K and V separately: [block][kv_head][block_size][head_dim], so the keys
// of one head inside a block are contiguous (the attention loop walks them as a small matrix).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llamarun {

class PagedKVPool {
 public:
  PagedKVPool() = default;
  // Throws Error when a dimension is not positive or the pool would not fit in size_t.
  PagedKVPool(int n_layers, int n_kv_heads, int head_dim, int block_size, int num_blocks);

  // Bytes of K and V one block takes over all layers.
  static size_t bytes_per_block(int n_layers, int n_kv_heads, int head_dim, int block_size);

  // The head_dim floats of (layer, block, kv_head, slot); slot < block_size.
  float* k(int layer, int block, int kv_head, int slot) { return &k_[index(layer, block, kv_head, slot)]; }
  float* v(int layer, int block, int kv_head, int slot) { return &v_[index(layer, block, kv_head, slot)]; }
  const float* k(int layer, int block, int kv_head, int slot) const {
    return &k_[index(layer, block, kv_head, slot)];
  }
  const float* v(int layer, int block, int kv_head, int slot) const {
    return &v_[index(layer, block, kv_head, slot)];
  }

  int n_layers() const { return n_layers_; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  size_t index(int layer, int block, int kv_head, int slot) const {
    return (((size_t(layer) * num_blocks_ + block) * n_kv_heads_ + kv_head) * block_size_ + slot) * head_dim_;
  }
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, block_size_ = 0, num_blocks_ = 0;
  std::vector<float> k_, v_;  // [layer][block][kv_head][block_size][head_dim]
};

}  // namespace llamarun
