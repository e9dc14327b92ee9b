#include "kv/paged_kv_pool.h"

#include <limits>

#include "core/error.h"

namespace llamarun {

size_t PagedKVPool::bytes_per_block(int n_layers, int n_kv_heads, int head_dim, int block_size) {
  return 2 * size_t(n_layers) * n_kv_heads * head_dim * block_size * sizeof(float);
}

PagedKVPool::PagedKVPool(int n_layers, int n_kv_heads, int head_dim, int block_size, int num_blocks)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      block_size_(block_size),
      num_blocks_(num_blocks) {
  LLAMARUN_CHECK(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && block_size > 0 && num_blocks > 0,
                 "paged KV pool: every dimension must be positive (layers ", n_layers, ", kv heads ", n_kv_heads,
                 ", head_dim ", head_dim, ", block_size ", block_size, ", blocks ", num_blocks, ")");
  const double n = double(n_layers) * num_blocks * n_kv_heads * block_size * head_dim;
  LLAMARUN_CHECK(n * sizeof(float) < double(std::numeric_limits<size_t>::max() / 4),
                 "paged KV pool: ", num_blocks, " blocks are too large for this machine");
  k_.assign(size_t(n), 0.0f);
  v_.assign(size_t(n), 0.0f);
}

}  // namespace llamarun
