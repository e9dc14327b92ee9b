// KV block bookkeeping: reference counts, a free list and the automatic prefix cache.
//
// A block is either
//   - free       (ref 0, no hash): on the free list;
//   - in use     (ref > 0): held by the block tables of one or more sequences;
//   - cached     (ref 0, hashed): its K/V are still valid for the token prefix it was hashed with;
//                on an LRU list and reused by a later sequence with the same prefix, or evicted
//                (least recently released first) when a fresh block is needed and none is free.
// A FULL block can be registered under the hash of (parent block's hash, its block_size tokens); the
// tokens and parent hash are stored beside it and compared on lookup, so a 64-bit hash collision can
// never hand out the wrong K/V. Not thread-safe: the engine thread owns it.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace llamarun {

// Hash of a full block: (parent block's hash, or 0 for the first block; its tokens). Never 0.
uint64_t hash_block_tokens(uint64_t parent, std::span<const int32_t> tokens);

class BlockAllocator {
 public:
  BlockAllocator() = default;
  // num_blocks >= 1, block_size >= 1. enable_prefix_cache false: register() and lookup() do nothing.
  BlockAllocator(int num_blocks, int block_size, bool enable_prefix_cache);

  // Blocks that allocate() can hand out now: free ones plus evictable cached ones.
  int num_available() const { return int(free_.size()) + lru_size_; }
  int num_blocks() const { return int(ref_.size()); }
  int num_in_use() const { return num_blocks() - num_available(); }
  int num_cached() const { return int(by_hash_.size()); }
  int block_size() const { return block_size_; }
  bool prefix_cache_enabled() const { return enable_cache_; }

  // A fresh block with ref 1 (a free one, else the least recently used cached one, whose hash is
  // dropped). Returns -1 when none is available.
  int32_t allocate();
  // Takes one more reference (the block must be in use).
  void retain(int32_t block);
  // Drops a reference. At 0 a hashed block becomes cached (most recently used), others become free.
  void release(int32_t block);

  // Registers a full, in-use block under hash (computed from parent and tokens, block_size of them).
  // No-op when caching is off, the block is already hashed, or another block holds this hash already.
  void register_full(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // The cached or in-use block registered under (hash, parent, tokens), with one more reference taken
  // (a cached block leaves the LRU list); -1 when there is none.
  int32_t lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);

  int ref_count(int32_t block) const { return ref_[block]; }
  uint64_t hash_of(int32_t block) const { return hash_[block]; }
  // Blocks evicted from the prefix cache so far.
  uint64_t evictions() const { return evictions_; }

 private:
  void lru_push_back(int32_t b);
  void lru_unlink(int32_t b);
  void check(int32_t block, const char* op) const;

  int block_size_ = 0;
  bool enable_cache_ = false;
  std::vector<int32_t> ref_;         // [num_blocks]
  std::vector<uint64_t> hash_;       // [num_blocks] 0 when not registered
  std::vector<uint64_t> parent_;     // [num_blocks] parent hash of a registered block
  std::vector<int32_t> tokens_;      // [num_blocks][block_size] tokens of a registered block
  std::vector<int32_t> free_;        // stack of free block ids
  std::vector<int32_t> prev_, next_; // [num_blocks] LRU links (-1 = none); head = oldest
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int lru_size_ = 0;
  std::unordered_map<uint64_t, int32_t> by_hash_;
  uint64_t evictions_ = 0;
};

}  // namespace llamarun
