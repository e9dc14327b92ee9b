#include "parallel/tp_llama.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.h"
#include "parallel/tp_shard.h"

namespace llamarun {
namespace {

// Rows [r0, r0 + n) of w: a view into the same storage.
WeightView row_range(const WeightView& w, int64_t r0, int64_t n) {
  WeightView v = w;
  v.rows = n;
  v.data = w.row(r0);
  return v;
}

// Columns [c0, c0 + n) of every row of w, copied into `out` (the storage of the returned view).
WeightView col_range(const WeightView& w, int64_t c0, int64_t n, const char* what, int layer,
                     std::vector<uint8_t>& out) {
  const int64_t blk = dtype_block_size(w.dtype);
  if (c0 % blk || n % blk)
    fail("tensor parallelism: layer ", layer, " ", what, " (", dtype_name(w.dtype), ", blocks of ", blk,
         " values) cannot be split at column ", c0, " into ranges of ", n, " columns");
  const size_t off = dtype_row_bytes(w.dtype, c0), len = dtype_row_bytes(w.dtype, n);
  out.resize(size_t(w.rows) * len);
  for (int64_t r = 0; r < w.rows; ++r)
    std::memcpy(out.data() + size_t(r) * len, static_cast<const uint8_t*>(w.row(r)) + off, len);
  WeightView v = w;
  v.cols = n;
  v.data = out.data();
  return v;
}

int argmax(const float* v, int n) { return int(std::max_element(v, v + n) - v); }

}  // namespace

TpCpuLlama::TpCpuLlama(const LlamaConfig& cfg, const LlamaWeights& weights, int size,
                       const ForwardOptions& options)
    : size_(size), cfg_(cfg), group_(size) {
  const int64_t hd = cfg.head_dim;
  owned_.reserve(size_t(size) * cfg.num_layers * 2);
  for (int r = 0; r < size; ++r) {
    const TpShard s = tp_shard(cfg, r, size);
    LlamaConfig c = cfg;
    c.num_heads = s.q_heads;
    c.num_kv_heads = s.kv_heads;
    c.intermediate_size = s.inter;
    LlamaWeights w = weights;
    for (int l = 0; l < cfg.num_layers; ++l) {
      const LlamaLayerWeights& src = weights.layers[size_t(l)];
      LlamaLayerWeights& L = w.layers[size_t(l)];
      L.wq = row_range(src.wq, s.q_head0 * hd, s.q_heads * hd);
      L.wk = row_range(src.wk, s.kv_head0 * hd, s.kv_heads * hd);
      L.wv = row_range(src.wv, s.kv_head0 * hd, s.kv_heads * hd);
      L.w_gate = row_range(src.w_gate, s.inter0, s.inter);
      L.w_up = row_range(src.w_up, s.inter0, s.inter);
      owned_.emplace_back();
      L.wo = col_range(src.wo, s.q_head0 * hd, s.q_heads * hd, "o_proj", l, owned_.back());
      owned_.emplace_back();
      L.w_down = col_range(src.w_down, s.inter0, s.inter, "down_proj", l, owned_.back());
    }
    ranks_.push_back(std::make_unique<LlamaModel>(c, std::move(w)));
    ranks_.back()->options() = options;
    ranks_.back()->options().comm = &group_.rank(r);
  }
  scratch_logits_.resize(size_t(size));
}

TpCpuLlama::~TpCpuLlama() = default;

void TpCpuLlama::init_kv(int block_size, int num_blocks) {
  kv_.clear();
  for (const auto& m : ranks_) {
    const LlamaConfig& c = m->config();
    kv_.push_back(
        std::make_unique<PagedKVPool>(c.num_layers, c.num_kv_heads, c.head_dim, block_size, num_blocks));
  }
}

void TpCpuLlama::forward(const BatchInput& b, float* logits) {
  LLAMARUN_CHECK(kv_.size() == size_t(size_), "TpCpuLlama::forward before init_kv");
  const size_t out = b.logit_rows.size() * size_t(cfg_.vocab_size);
  std::vector<std::exception_ptr> err(static_cast<size_t>(size_));
  std::vector<std::thread> ts;
  for (int r = 0; r < size_; ++r) {
    ts.emplace_back([&, r] {
      try {
        float* dst = logits;
        if (r > 0) {
          scratch_logits_[size_t(r)].resize(out);
          dst = scratch_logits_[size_t(r)].data();
        }
        ranks_[size_t(r)]->forward(b, *kv_[size_t(r)], dst);
      } catch (...) {  // every rank checks the same batch first, so all ranks throw before any all-reduce
        err[size_t(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : ts) t.join();
  for (auto& e : err)
    if (e) std::rethrow_exception(e);
}

std::vector<float> TpCpuLlama::prompt_logits(std::span<const int32_t> ids) {
  const int n = int(ids.size());
  const int bs = 16, nb = (n + bs - 1) / bs;
  init_kv(bs, nb);
  std::vector<int32_t> table(static_cast<size_t>(nb));
  for (int i = 0; i < nb; ++i) table[size_t(i)] = i;
  std::vector<float> out(size_t(n) * cfg_.vocab_size);
  forward(sequence_batch(ids, table, true), out.data());
  return out;
}

std::vector<int32_t> TpCpuLlama::greedy(std::span<const int32_t> prompt, int n) {
  const int total = int(prompt.size()) + n;
  const int bs = 16, nb = (total + bs - 1) / bs;
  init_kv(bs, nb);
  std::vector<int32_t> table(static_cast<size_t>(nb));
  for (int i = 0; i < nb; ++i) table[size_t(i)] = i;
  BatchInput b = sequence_batch(prompt, table, false);
  std::vector<float> logits(size_t(cfg_.vocab_size));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    forward(b, logits.data());
    out.push_back(argmax(logits.data(), cfg_.vocab_size));
    const int32_t pos = b.positions.back() + 1;
    b.tokens.assign(1, out.back());
    b.positions.assign(1, pos);
    b.seq_index.assign(1, 0);
    b.logit_rows.assign(1, 0);
  }
  return out;
}

}  // namespace llamarun
