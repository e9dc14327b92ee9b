// A contiguous per-sequence KV cache for the CPU forward pass.
// Layout: k[layer][kv_head][pos][head_dim], v likewise; f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llamarun {

class KVCache {
 public:
  KVCache() = default;
  KVCache(int n_layers, int n_kv_heads, int head_dim, int max_ctx);

  float* k(int layer, int kv_head, int pos) { return &k_[index(layer, kv_head, pos)]; }
  float* v(int layer, int kv_head, int pos) { return &v_[index(layer, kv_head, pos)]; }
  const float* k(int layer, int kv_head, int pos) const { return &k_[index(layer, kv_head, pos)]; }
  const float* v(int layer, int kv_head, int pos) const { return &v_[index(layer, kv_head, pos)]; }

  int max_ctx() const { return max_ctx_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  size_t index(int layer, int kv_head, int pos) const {
    return ((size_t(layer) * n_kv_heads_ + kv_head) * max_ctx_ + pos) * head_dim_;
  }
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, max_ctx_ = 0;
  std::vector<float> k_, v_;
};

}  // namespace llamarun
