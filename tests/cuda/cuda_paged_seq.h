// One sequence driven through CudaLlama::forward_paged, the model's only forward: prompts in chunks, then one
// decode row per step, over a block table of shuffled (non-contiguous) blocks of the model's paged pool.
#pragma once

#include <algorithm>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "backends/cuda/cuda_llama.h"
#include "core/error.h"

namespace llamarun::cuda::test {

// Block ids 0..num_blocks-1 in a shuffled order (split between sequences so their blocks interleave).
inline std::vector<int32_t> shuffled_blocks(int num_blocks, uint32_t seed) {
  std::vector<int32_t> b(num_blocks);
  std::iota(b.begin(), b.end(), 0);
  std::mt19937 g(seed);
  std::shuffle(b.begin(), b.end(), g);
  return b;
}

class PagedSeq {
 public:
  // table: the sequence's blocks (enough for every position it will reach).
  PagedSeq(CudaLlama& m, std::vector<int32_t> table) : m_(m), table_(std::move(table)) {}

  // Appends ids[0..n) in chunks of at most `chunk` tokens; returns the logits of the last token.
  std::vector<float> prefill(const int32_t* ids, int n, int chunk) {
    std::vector<float> logits(m_.config().vocab_size);
    for (int done = 0; done < n;) {
      const int c = std::min(chunk, n - done);
      BatchInput b;
      for (int i = 0; i < c; ++i) {
        b.tokens.push_back(ids[done + i]);
        b.positions.push_back(pos_ + i);
        b.seq_index.push_back(0);
      }
      b.block_tables.push_back(std::span<const int32_t>(table_));
      if (done + c == n) b.logit_rows.push_back(c - 1);  // only the last chunk samples
      int32_t id = -1;
      m_.forward_paged(b, nullptr, &id, logits.data());
      pos_ += c;
      done += c;
      last_ = id;
    }
    return logits;
  }
  std::vector<float> prefill(const std::vector<int32_t>& ids, int chunk) {
    return prefill(ids.data(), int(ids.size()), chunk);
  }
  // One decode row: appends `id` and returns the logits of the next token (last() = their argmax on the GPU).
  std::vector<float> step_logits(int32_t id) {
    std::vector<float> logits(m_.config().vocab_size);
    decode(id, true, logits.data());
    return logits;
  }
  // One decode row without logits: returns the greedy next token.
  int32_t step(int32_t id) {
    decode(id, false, nullptr);
    return last_;
  }
  // The batch of this decode row (for callers that batch several sequences themselves).
  void add_decode_row(BatchInput& b, int32_t id) const {
    b.tokens.push_back(id);
    b.positions.push_back(pos_);
    b.seq_index.push_back(int32_t(b.block_tables.size()));
    b.logit_rows.push_back(int32_t(b.tokens.size()) - 1);
    b.block_tables.push_back(std::span<const int32_t>(table_));
  }
  void advance(int32_t next) {
    ++pos_;
    last_ = next;
  }
  int position() const { return pos_; }
  int32_t last() const { return last_; }
  void reset() { pos_ = 0; }

 private:
  void decode(int32_t id, bool want, float* logits) {
    BatchInput b;
    add_decode_row(b, id);
    const uint8_t w = want ? 1 : 0;
    int32_t next = -1;
    m_.forward_paged(b, &w, &next, logits);
    advance(next);
  }

  CudaLlama& m_;
  std::vector<int32_t> table_;
  int pos_ = 0;
  int32_t last_ = -1;
};

}  // namespace llamarun::cuda::test
