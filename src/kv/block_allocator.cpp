#include "kv/block_allocator.h"

#include <algorithm>

#include "core/error.h"

namespace llamarun {

namespace {
inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
}  // namespace

uint64_t hash_block_tokens(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ull) + tokens.size();
  for (int32_t t : tokens) h = mix64(h ^ (uint64_t(uint32_t(t)) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)));
  return h ? h : 1;
}

BlockAllocator::BlockAllocator(int num_blocks, int block_size, bool enable_prefix_cache)
    : block_size_(block_size), enable_cache_(enable_prefix_cache) {
  LLAMARUN_CHECK(num_blocks >= 1 && block_size >= 1, "block allocator: need at least one block of at least one token (got ",
                 num_blocks, " blocks of ", block_size, ")");
  ref_.assign(num_blocks, 0);
  hash_.assign(num_blocks, 0);
  parent_.assign(num_blocks, 0);
  if (enable_cache_) tokens_.assign(size_t(num_blocks) * block_size, 0);
  prev_.assign(num_blocks, -1);
  next_.assign(num_blocks, -1);
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // hand out 0, 1, 2, ... first
}

void BlockAllocator::check(int32_t block, const char* op) const {
  LLAMARUN_CHECK(block >= 0 && block < num_blocks(), "block allocator: ", op, " of block ", block, " outside [0, ",
                 num_blocks(), ")");
}

void BlockAllocator::lru_push_back(int32_t b) {
  prev_[b] = lru_tail_;
  next_[b] = -1;
  if (lru_tail_ >= 0) next_[lru_tail_] = b;
  else lru_head_ = b;
  lru_tail_ = b;
  ++lru_size_;
}

void BlockAllocator::lru_unlink(int32_t b) {
  if (prev_[b] >= 0) next_[prev_[b]] = next_[b];
  else lru_head_ = next_[b];
  if (next_[b] >= 0) prev_[next_[b]] = prev_[b];
  else lru_tail_ = prev_[b];
  prev_[b] = next_[b] = -1;
  --lru_size_;
}

int32_t BlockAllocator::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (lru_head_ >= 0) {
    b = lru_head_;
    lru_unlink(b);
    by_hash_.erase(hash_[b]);
    hash_[b] = 0;
    ++evictions_;
  } else {
    return -1;
  }
  ref_[b] = 1;
  return b;
}

void BlockAllocator::retain(int32_t block) {
  check(block, "retain");
  LLAMARUN_CHECK(ref_[block] > 0, "block allocator: retain of block ", block, " which is not in use");
  ++ref_[block];
}

void BlockAllocator::release(int32_t block) {
  check(block, "release");
  LLAMARUN_CHECK(ref_[block] > 0, "block allocator: release of block ", block, " which is not in use");
  if (--ref_[block] > 0) return;
  if (hash_[block] != 0) lru_push_back(block);
  else free_.push_back(block);
}

void BlockAllocator::register_full(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (!enable_cache_) return;
  check(block, "register");
  LLAMARUN_CHECK(int(tokens.size()) == block_size_, "block allocator: register of block ", block, " with ",
                 tokens.size(), " tokens; a full block has ", block_size_);
  LLAMARUN_CHECK(ref_[block] > 0, "block allocator: register of block ", block, " which is not in use");
  if (hash_[block] != 0 || hash == 0) return;
  if (!by_hash_.emplace(hash, block).second) return;
  hash_[block] = hash;
  parent_[block] = parent;
  std::copy(tokens.begin(), tokens.end(), tokens_.begin() + size_t(block) * block_size_);
}

int32_t BlockAllocator::lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (!enable_cache_ || int(tokens.size()) != block_size_) return -1;
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const int32_t b = it->second;
  if (parent_[b] != parent || !std::equal(tokens.begin(), tokens.end(), tokens_.begin() + size_t(b) * block_size_))
    return -1;  // a hash collision: not the same prefix
  if (ref_[b] == 0) lru_unlink(b);
  ++ref_[b];
  return b;
}

}  // namespace llamarun
