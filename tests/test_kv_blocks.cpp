// Paged KV pool layout, block allocator ref counts, and the prefix cache (hashing, LRU eviction).
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "kv/block_allocator.h"
#include "kv/paged_kv_pool.h"

using namespace llamarun;

TEST(KvPool, LayoutAndDistinctSlots) {
  PagedKVPool p(2, 3, 4, 5, 6);
  EXPECT_EQ(p.bytes(), PagedKVPool::bytes_per_block(2, 3, 4, 5) * 6);
  // Slots of one (layer, block, head) are contiguous head_dim rows.
  EXPECT_EQ(p.k(1, 2, 1, 3) + 4, p.k(1, 2, 1, 4));
  EXPECT_EQ(p.k(0, 0, 0, 4) + 4, p.k(0, 0, 1, 0));
  // Every (layer, block, head, slot) has its own storage.
  float v = 0;
  for (int l = 0; l < 2; ++l)
    for (int b = 0; b < 6; ++b)
      for (int h = 0; h < 3; ++h)
        for (int s = 0; s < 5; ++s) {
          for (int d = 0; d < 4; ++d) p.k(l, b, h, s)[d] = v, p.v(l, b, h, s)[d] = -v;
          v += 1;
        }
  v = 0;
  for (int l = 0; l < 2; ++l)
    for (int b = 0; b < 6; ++b)
      for (int h = 0; h < 3; ++h)
        for (int s = 0; s < 5; ++s) {
          for (int d = 0; d < 4; ++d) {
            ASSERT_EQ(p.k(l, b, h, s)[d], v);
            ASSERT_EQ(p.v(l, b, h, s)[d], -v);
          }
          v += 1;
        }
  EXPECT_THROW(PagedKVPool(2, 3, 4, 0, 6), Error);
}

TEST(KvBlocks, AllocateReleaseRefCounts) {
  BlockAllocator a(4, 2, false);
  EXPECT_EQ(a.num_available(), 4);
  int32_t b0 = a.allocate(), b1 = a.allocate(), b2 = a.allocate(), b3 = a.allocate();
  EXPECT_EQ(a.allocate(), -1);
  EXPECT_EQ(a.num_available(), 0);
  EXPECT_EQ(a.num_in_use(), 4);
  std::vector<int32_t> all = {b0, b1, b2, b3};
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int32_t>{0, 1, 2, 3}));
  a.retain(b1);
  EXPECT_EQ(a.ref_count(b1), 2);
  a.release(b1);
  EXPECT_EQ(a.num_available(), 0);
  a.release(b1);
  EXPECT_EQ(a.num_available(), 1);
  EXPECT_THROW(a.release(b1), Error);  // double free
  EXPECT_THROW(a.retain(b1), Error);
  EXPECT_THROW(a.release(17), Error);
  EXPECT_EQ(a.allocate(), b1);
}

TEST(KvBlocks, HashDependsOnParentAndTokens) {
  std::vector<int32_t> t1 = {1, 2, 3}, t2 = {1, 2, 4};
  EXPECT_NE(hash_block_tokens(0, t1), hash_block_tokens(0, t2));
  EXPECT_NE(hash_block_tokens(0, t1), hash_block_tokens(5, t1));
  EXPECT_EQ(hash_block_tokens(7, t1), hash_block_tokens(7, t1));
  EXPECT_NE(hash_block_tokens(0, t1), 0u);
}

TEST(KvBlocks, PrefixCacheLookupSharesAndEvictsLru) {
  BlockAllocator a(3, 2, true);
  std::vector<int32_t> ta = {1, 2}, tb = {3, 4}, tc = {5, 6};
  const uint64_t ha = hash_block_tokens(0, ta), hb = hash_block_tokens(ha, tb), hc = hash_block_tokens(0, tc);
  int32_t ba = a.allocate(), bb = a.allocate(), bc = a.allocate();
  a.register_full(ba, ha, 0, ta);
  a.register_full(bb, hb, ha, tb);
  a.register_full(bc, hc, 0, tc);
  EXPECT_EQ(a.num_cached(), 3);
  // In use and registered: a lookup shares it.
  EXPECT_EQ(a.lookup(ha, 0, ta), ba);
  EXPECT_EQ(a.ref_count(ba), 2);
  a.release(ba);
  // Wrong parent or tokens (as after a hash collision): no hit.
  EXPECT_EQ(a.lookup(hb, 0, tb), -1);
  EXPECT_EQ(a.lookup(ha, 0, tb), -1);
  // Release all: cached blocks stay findable and count as available.
  a.release(bc);  // released first: least recently used
  a.release(ba);
  a.release(bb);
  EXPECT_EQ(a.num_available(), 3);
  EXPECT_EQ(a.num_in_use(), 0);
  // A hit on a cached block takes it off the LRU list.
  EXPECT_EQ(a.lookup(ha, 0, ta), ba);
  EXPECT_EQ(a.num_available(), 2);
  // Allocation evicts the LRU cached block (bc), then bb.
  EXPECT_EQ(a.allocate(), bc);
  EXPECT_EQ(a.lookup(hc, 0, tc), -1);
  EXPECT_EQ(a.evictions(), 1u);
  EXPECT_EQ(a.allocate(), bb);
  EXPECT_EQ(a.allocate(), -1);
  EXPECT_EQ(a.lookup(hb, ha, tb), -1);
  EXPECT_EQ(a.num_cached(), 1);
  // Releasing the still-registered block makes it cached again, not free.
  a.release(ba);
  EXPECT_EQ(a.lookup(ha, 0, ta), ba);
}

TEST(KvBlocks, DuplicateHashKeepsFirstBlock) {
  BlockAllocator a(2, 2, true);
  std::vector<int32_t> t = {9, 9};
  const uint64_t h = hash_block_tokens(0, t);
  int32_t b0 = a.allocate(), b1 = a.allocate();
  a.register_full(b0, h, 0, t);
  a.register_full(b1, h, 0, t);  // the same content computed twice: the second stays private
  EXPECT_EQ(a.hash_of(b1), 0u);
  a.release(b1);
  EXPECT_EQ(a.num_available(), 1);
  EXPECT_EQ(a.allocate(), b1);  // went to the free list
}

TEST(KvBlocks, CachingDisabledNeverHits) {
  BlockAllocator a(2, 2, false);
  std::vector<int32_t> t = {1, 2};
  const uint64_t h = hash_block_tokens(0, t);
  int32_t b = a.allocate();
  a.register_full(b, h, 0, t);
  a.release(b);
  EXPECT_EQ(a.lookup(h, 0, t), -1);
  EXPECT_EQ(a.num_cached(), 0);
}
