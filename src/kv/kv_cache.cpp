#include "kv/kv_cache.h"

namespace llamarun {

KVCache::KVCache(int n_layers, int n_kv_heads, int head_dim, int max_ctx)
    : n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim), max_ctx_(max_ctx) {
  size_t n = size_t(n_layers) * n_kv_heads * max_ctx * head_dim;
  k_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
}

}  // namespace llamarun
