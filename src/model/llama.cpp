#include "model/llama.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/fp16.h"
#include "model/rope.h"
#include "ops/activation.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/vector_ops.h"
#include "parallel/communicator.h"

namespace llamarun {

LlamaModel::LlamaModel(const LlamaConfig& cfg, LlamaWeights weights, int max_batch)
    : cfg_(cfg), w_(std::move(weights)), max_batch_(0) {
  inv_freq_ = rope_inv_freq(cfg_);
  reserve(std::max(max_batch, 1));
}

void LlamaModel::reserve(int max_batch) {
  if (max_batch <= max_batch_) return;
  max_batch_ = max_batch;
  const size_t B = size_t(max_batch);
  x_.resize(B * cfg_.hidden_size);
  xn_.resize(B * cfg_.hidden_size);
  o_.resize(B * cfg_.hidden_size);
  q_.resize(B * cfg_.num_heads * cfg_.head_dim);
  att_.resize(B * cfg_.num_heads * cfg_.head_dim);
  k_.resize(B * cfg_.num_kv_heads * cfg_.head_dim);
  v_.resize(B * cfg_.num_kv_heads * cfg_.head_dim);
  gate_.resize(B * cfg_.intermediate_size);
  up_.resize(B * cfg_.intermediate_size);
}

void LlamaModel::round_act(float* x, size_t n) const {
  if (!opts_.emulate_bf16) return;
  for (size_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

namespace {

// Attention of T consecutive positions tpos0 .. tpos0 + T - 1 of one sequence for the `group` query heads
// that share one KV head: q [R][hd], R = T * group rows (token i's heads in rows i * group ..), over keys /
// values at positions 0 .. tpos0 + T - 1 stored in blocks of bs positions: k_block(i) / v_block(i) point at
// block i's first position (then one row of hd floats per position). Row r attends to positions
// 0 .. tpos0 + r / group. Scaled dot products (rounded as a bf16 model rounds them when bf), softmax (with an
// f64 sum when bf), then the probability-weighted sum of the values into out [R][hd]. sc: R * (tpos0 + T)
// floats of scratch. Without bf, a block's keys / values are taken at once for all R rows (dot_rows_f32 /
// axpy_rows_f32: each key and value loaded once for the run, the outputs held in registers across a block);
// a row's scores past its own position are computed, then given probability 0, so every row's result is the
// same as alone (adding 0 * v leaves its sums unchanged). With bf (T = 1), one head and position at a time.
template <typename KBlock, typename VBlock>
inline void attend_run(const float* q, int group, int T, int hd, int tpos0, int bs, float scale, bool bf,
                       KBlock k_block, VBlock v_block, float* sc, float* out) {
  const int R = group * T, len = tpos0 + T;
  if (!bf) {
    for (int j = 0, blk = 0; j < len; ++blk, j += bs)
      dot_rows_f32(q, R, k_block(blk), hd, std::min(len - j, bs), scale, sc + j, len);
    for (int r = 0; r < R; ++r) {
      const int own = tpos0 + r / group + 1;
      softmax_f32(sc + size_t(r) * len, own);
      std::fill(sc + size_t(r) * len + own, sc + size_t(r + 1) * len, 0.0f);
    }
    std::fill(out, out + size_t(R) * hd, 0.0f);
    for (int j = 0, blk = 0; j < len; ++blk, j += bs)
      axpy_rows_f32(sc + j, len, R, v_block(blk), hd, std::min(len - j, bs), out);
    return;
  }
  LLAMARUN_CHECK(T == 1, "attend_run: bf16 emulation takes one token at a time");
  const int tpos = tpos0;
  for (int r = 0; r < R; ++r) {
    const float* qr = q + size_t(r) * hd;
    float* s = sc;
    float* o = out + size_t(r) * hd;
    float mx = -INFINITY;
    for (int j = 0, blk = 0; j <= tpos; ++blk) {
      const float* k = k_block(blk);
      for (const int end = std::min(tpos + 1, j + bs); j < end; ++j, k += hd) {
        const float d = dot_f32(qr, k, hd);
        s[j] = bf16_to_f32(f32_to_bf16(bf16_to_f32(f32_to_bf16(d)) * scale));
        mx = std::max(mx, s[j]);
      }
    }
    double sum = 0;
    for (int j = 0; j <= tpos; ++j) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    const float inv = float(1.0 / sum);
    std::fill(o, o + hd, 0.0f);
    for (int j = 0, blk = 0; j <= tpos; ++blk) {
      const float* v = v_block(blk);
      for (const int end = std::min(tpos + 1, j + bs); j < end; ++j, v += hd)
        axpy_f32(bf16_to_f32(f32_to_bf16(s[j] * inv)), v, o, hd);
    }
    for (int i = 0; i < hd; ++i) o[i] = bf16_to_f32(f32_to_bf16(o[i]));
  }
}

// Tokens per attention job: a prefill chunk's consecutive positions share each key and value load.
constexpr int kRunTokens = 8;

}  // namespace

void LlamaModel::attention(int layer, const BatchInput& b, const PagedKVPool& kv) {
  const int H = cfg_.num_heads, KVH = cfg_.num_kv_heads, hd = cfg_.head_dim;
  const int group = H / KVH, bs = kv.block_size();
  const float scale = 1.0f / std::sqrt(float(hd));
  const bool bf = opts_.emulate_bf16;
  const int n = b.size();
  // Runs of up to kRunTokens tokens of one sequence at consecutive positions (one token each with bf).
  runs_.clear();
  int max_len = 1;
  for (int i = 0; i < n;) {
    int e = i + 1;
    while (!bf && e < n && e - i < kRunTokens && b.seq_index[e] == b.seq_index[i] &&
           b.positions[e] == b.positions[e - 1] + 1)
      ++e;
    runs_.push_back({i, e - i});
    max_len = std::max(max_len, b.positions[e - 1] + 1);
    i = e;
  }
  const int max_rows = group * (bf ? 1 : kRunTokens);
  const int nthreads = omp_get_max_threads();
  // Per thread: the scores, then a run's queries and outputs gathered into [R][hd].
  const size_t stride = size_t(max_rows) * max_len + 2 * size_t(max_rows) * hd;
  if (scores_.size() < size_t(nthreads) * stride) scores_.resize(size_t(nthreads) * stride);
  // Small batches over short contexts are not worth waking the thread team.
  const bool parallel = int64_t(n) * H * max_len * hd >= (int64_t(1) << 16);
  const int jobs = int(runs_.size()) * KVH;
  // One job per (run, KV head): the run's tokens' query heads of that KV head together.
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int job = 0; job < jobs; ++job) {
    const auto [t0, T] = runs_[job / KVH];
    const int g = job % KVH;
    const std::span<const int32_t> table = b.block_tables[b.seq_index[t0]];
    float* sc = &scores_[size_t(omp_get_thread_num()) * stride];
    float* qg = sc + size_t(max_rows) * max_len;
    float* og = qg + size_t(max_rows) * hd;
    const size_t rows = size_t(group) * hd;  // one token's heads of this KV head
    auto row_of = [&](int i) { return (size_t(t0 + i) * H + size_t(g) * group) * hd; };
    const float* q = &q_[row_of(0)];
    float* out = &att_[row_of(0)];
    if (T > 1) {  // the tokens' rows are H * hd apart: gather them
      for (int i = 0; i < T; ++i) std::copy_n(&q_[row_of(i)], rows, qg + i * rows);
      q = qg;
      out = og;
    }
    auto k_block = [&](int i) { return kv.k(layer, table[i], g, 0); };
    auto v_block = [&](int i) { return kv.v(layer, table[i], g, 0); };
    attend_run(q, group, T, hd, b.positions[t0], bs, scale, bf, k_block, v_block, sc, out);
    if (T > 1)
      for (int i = 0; i < T; ++i) std::copy_n(og + i * rows, rows, &att_[row_of(i)]);
  }
}

void LlamaModel::forward(const BatchInput& b, PagedKVPool& kv, float* logits) {
  const int D = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int H = cfg_.num_heads, KVH = cfg_.num_kv_heads, hd = cfg_.head_dim;
  const int n = b.size();
  LLAMARUN_CHECK(n >= 1, "forward: empty batch");
  LLAMARUN_CHECK(b.positions.size() == size_t(n) && b.seq_index.size() == size_t(n), "forward: ", n,
                 " tokens but ", b.positions.size(), " positions and ", b.seq_index.size(),
                 " sequence indices");
  LLAMARUN_CHECK(kv.n_layers() == cfg_.num_layers && kv.n_kv_heads() == KVH && kv.head_dim() == hd,
                 "forward: the KV pool's shape (", kv.n_layers(), " layers, ", kv.n_kv_heads(),
                 " kv heads, head_dim ", kv.head_dim(), ") does not match the model");
  const int bs = kv.block_size();
  for (int t = 0; t < n; ++t) {
    LLAMARUN_CHECK(b.tokens[t] >= 0 && b.tokens[t] < V, "forward: token id ", b.tokens[t], " at index ", t,
                   " is outside the vocabulary (size ", V, ")");
    const int s = b.seq_index[t], p = b.positions[t];
    LLAMARUN_CHECK(s >= 0 && size_t(s) < b.block_tables.size(), "forward: token ", t, " names sequence ", s,
                   " of ", b.block_tables.size());
    LLAMARUN_CHECK(p >= 0 && p < cfg_.max_position && size_t(p / bs) < b.block_tables[s].size(),
                   "forward: position ", p, " of token ", t, " is outside its block table (",
                   b.block_tables[s].size(), " blocks of ", bs, ") or the model's ", cfg_.max_position,
                   " positions");
    const int32_t blk = b.block_tables[s][p / bs];
    LLAMARUN_CHECK(blk >= 0 && blk < kv.num_blocks(), "forward: block ", blk, " outside the pool of ",
                   kv.num_blocks());
  }
  for (int r : b.logit_rows)
    LLAMARUN_CHECK(r >= 0 && r < n, "forward: logit row ", r, " outside the batch of ", n);
  reserve(n);
  const bool bf = opts_.emulate_bf16;
  MatmulOptions mo;
  mo.batch_invariant = b.batch_invariant;
  mo.int8_activations = opts_.int8_activations;
  auto dump = [&](const char* name, int layer, const float* data, int64_t cols) {
    if (opts_.dump) opts_.dump(name, layer, data, n, cols);
  };

  for (int t = 0; t < n; ++t) weight_row_f32(w_.tok_embd, b.tokens[t], &x_[size_t(t) * D]);
  dump("embd", -1, x_.data(), D);

  // Polled twice a layer: an abort ends a long prefill within half a layer's time.
  auto check_abort = [&] {
    if (b.abort && b.abort->load(std::memory_order_relaxed)) throw ForwardAborted();
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    check_abort();
    const LlamaLayerWeights& L = w_.layers[l];
    rms_norm(x_.data(), L.attn_norm, cfg_.rms_eps, n, D, xn_.data(), bf);
    dump("attn_norm", l, xn_.data(), D);
    matmul(L.wq, xn_.data(), n, q_.data(), mo);
    matmul(L.wk, xn_.data(), n, k_.data(), mo);
    matmul(L.wv, xn_.data(), n, v_.data(), mo);
    round_act(q_.data(), size_t(n) * H * hd);
    round_act(k_.data(), size_t(n) * KVH * hd);
    round_act(v_.data(), size_t(n) * KVH * hd);
    for (int t = 0; t < n; ++t) {
      const int p = b.positions[t];
      rope_apply(&q_[size_t(t) * H * hd], H, hd, p, inv_freq_, cfg_.rope_layout, bf);
      rope_apply(&k_[size_t(t) * KVH * hd], KVH, hd, p, inv_freq_, cfg_.rope_layout, bf);
      const int32_t blk = b.block_tables[b.seq_index[t]][p / bs];
      for (int g = 0; g < KVH; ++g) {
        std::memcpy(kv.k(l, blk, g, p % bs), &k_[(size_t(t) * KVH + g) * hd], hd * sizeof(float));
        std::memcpy(kv.v(l, blk, g, p % bs), &v_[(size_t(t) * KVH + g) * hd], hd * sizeof(float));
      }
    }
    dump("q_rope", l, q_.data(), int64_t(H) * hd);
    dump("k_rope", l, k_.data(), int64_t(KVH) * hd);
    attention(l, b, kv);
    dump("attn_out", l, att_.data(), int64_t(H) * hd);
    matmul(L.wo, att_.data(), n, o_.data(), mo);
    if (opts_.comm) opts_.comm->all_reduce_sum(o_.data(), size_t(n) * D);
    round_act(o_.data(), size_t(n) * D);
    for (size_t i = 0; i < size_t(n) * D; ++i) x_[i] += o_[i];
    round_act(x_.data(), size_t(n) * D);
    dump("attn_residual", l, x_.data(), D);

    check_abort();
    rms_norm(x_.data(), L.ffn_norm, cfg_.rms_eps, n, D, xn_.data(), bf);
    matmul(L.w_gate, xn_.data(), n, gate_.data(), mo);
    matmul(L.w_up, xn_.data(), n, up_.data(), mo);
    round_act(gate_.data(), size_t(n) * F);
    round_act(up_.data(), size_t(n) * F);
    if (bf) {
      for (size_t i = 0; i < size_t(n) * F; ++i) {
        float g = gate_[i];
        float s = bf16_to_f32(f32_to_bf16(g / (1.0f + std::exp(-g))));
        gate_[i] = bf16_to_f32(f32_to_bf16(s * up_[i]));
      }
    } else {
      // Row by row: a vectorised kernel's tail handling must not depend on where a row sits.
      for (int t = 0; t < n; ++t)
        silu_mul(&gate_[size_t(t) * F], &up_[size_t(t) * F], &gate_[size_t(t) * F], F);
    }
    dump("ffn_act", l, gate_.data(), F);
    matmul(L.w_down, gate_.data(), n, o_.data(), mo);
    if (opts_.comm) opts_.comm->all_reduce_sum(o_.data(), size_t(n) * D);
    round_act(o_.data(), size_t(n) * D);
    for (size_t i = 0; i < size_t(n) * D; ++i) x_[i] += o_[i];
    round_act(x_.data(), size_t(n) * D);
    dump("ffn_residual", l, x_.data(), D);
  }

  const int rows = int(b.logit_rows.size());
  if (rows == 0) return;
  if (logit_x_.size() < size_t(rows) * D) logit_x_.resize(size_t(rows) * D);
  for (int i = 0; i < rows; ++i)
    std::memcpy(&logit_x_[size_t(i) * D], &x_[size_t(b.logit_rows[i]) * D], D * sizeof(float));
  rms_norm(logit_x_.data(), w_.out_norm, cfg_.rms_eps, rows, D, xn_.data(), bf);
  matmul(w_.lm_head, xn_.data(), rows, logits, mo);
  round_act(logits, size_t(rows) * V);
}

BatchInput sequence_batch(std::span<const int32_t> ids, std::span<const int32_t> table, bool all_logits) {
  const int n = int(ids.size());
  BatchInput b;
  b.batch_invariant = false;
  b.tokens.assign(ids.begin(), ids.end());
  b.block_tables.push_back(table);
  for (int t = 0; t < n; ++t) {
    b.positions.push_back(t);
    b.seq_index.push_back(0);
    if (all_logits || t == n - 1) b.logit_rows.push_back(t);
  }
  return b;
}

std::vector<float> LlamaModel::prompt_logits(std::span<const int32_t> ids) {
  const int n = int(ids.size());
  LLAMARUN_CHECK(n >= 1 && n <= cfg_.max_position, "prompt_logits: ", n, " tokens; the model takes 1..",
                 cfg_.max_position);
  const int bs = 16, nb = (n + bs - 1) / bs;
  PagedKVPool kv(cfg_.num_layers, cfg_.num_kv_heads, cfg_.head_dim, bs, nb);
  std::vector<int32_t> table(nb);
  for (int i = 0; i < nb; ++i) table[i] = i;
  std::vector<float> out(size_t(n) * cfg_.vocab_size);
  forward(sequence_batch(ids, table, true), kv, out.data());
  return out;
}

}  // namespace llamarun
