// Tensor parallelism's pieces on the CPU: the in-process all-reduce, the shard plan (tp_shard), and one
// Llama layer computed by TP ranks in threads (column-parallel q / k / v and gate / up, row-parallel o and
// down with an all-reduce after each) against the same layer computed whole.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "core/error.h"
#include "error_util.h"
#include "model/model.h"
#include "parallel/communicator.h"
#include "parallel/tp_llama.h"
#include "parallel/tp_shard.h"

namespace llamarun {
namespace {

// Runs f(rank) on `size` threads.
template <typename F>
void on_ranks(int size, F f) {
  std::vector<std::thread> ts;
  for (int r = 0; r < size; ++r) ts.emplace_back([&f, r] { f(r); });
  for (auto& t : ts) t.join();
}

TEST(InProcessGroup, AllReduceSumsInRankOrderOnEveryRank) {
  for (int size : {1, 2, 3, 4}) {
    InProcessGroup g(size);
    std::vector<std::vector<float>> got(static_cast<size_t>(size));
    on_ranks(size, [&](int r) {
      Communicator& c = g.rank(r);
      EXPECT_EQ(c.rank(), r);
      EXPECT_EQ(c.size(), size);
      for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1000)}) {  // consecutive calls, varying n
        std::vector<float> v(n);
        for (size_t i = 0; i < n; ++i) v[i] = float(r + 1) * 0.1f + float(i);
        c.all_reduce_sum(v.data(), n);
        if (n == 1000) got[size_t(r)] = v;
        for (size_t i = 0; i < n; ++i) {
          float want = 0;
          for (int k = 0; k < size; ++k) want += float(k + 1) * 0.1f + float(i);
          EXPECT_NEAR(v[i], want, 1e-3f * std::fabs(want)) << "size " << size << " n " << n << " i " << i;
        }
      }
    });
    for (int r = 1; r < size; ++r) EXPECT_EQ(got[size_t(r)], got[0]) << "rank " << r << " differs in bits";
  }
  EXPECT_THROW(InProcessGroup(0), Error);
  InProcessGroup g(2);
  EXPECT_THROW(g.rank(2), Error);
}

LlamaConfig layer_config(int nh, int nkv, int inter) {
  LlamaConfig c;
  c.hidden_size = 64;
  c.num_heads = nh;
  c.num_kv_heads = nkv;
  c.head_dim = 64 / nh;
  c.intermediate_size = inter;
  c.num_layers = 1;
  c.vocab_size = 32;
  return c;
}

TEST(TpShard, CoversHeadsAndFeaturesOnceAndKeepsGqaGroupsLocal) {
  struct Case {
    int nh, nkv, inter, size;
  };
  for (const Case& k : {Case{32, 32, 11008, 2}, Case{32, 32, 11008, 4}, Case{64, 8, 28672, 4},
                        Case{64, 8, 28672, 8}, Case{8, 2, 96, 4}, Case{8, 1, 96, 8}, Case{4, 4, 96, 1}}) {
    LlamaConfig c = layer_config(k.nh, k.nkv, k.inter);
    std::vector<int> q_seen(size_t(k.nh), 0), f_seen(size_t(k.inter), 0);
    for (int r = 0; r < k.size; ++r) {
      const TpShard s = tp_shard(c, r, k.size);
      for (int h = s.q_head0; h < s.q_head0 + s.q_heads; ++h) {
        ++q_seen[size_t(h)];
        const int kvh = h / (k.nh / k.nkv);  // the KV head query head h reads
        EXPECT_GE(kvh, s.kv_head0) << "rank " << r << " head " << h;
        EXPECT_LT(kvh, s.kv_head0 + s.kv_heads) << "rank " << r << " head " << h;
      }
      for (int i = s.inter0; i < s.inter0 + s.inter; ++i) ++f_seen[size_t(i)];
    }
    for (int v : q_seen) EXPECT_EQ(v, 1);
    for (int v : f_seen) EXPECT_EQ(v, 1);
  }
  auto err = [](const LlamaConfig& c, int size) { return testutil::error_of([&] { tp_shard(c, 0, size); }); };
  EXPECT_NE(err(layer_config(4, 4, 96), 3).find("4 attention heads do not divide over 3"), std::string::npos);
  EXPECT_NE(err(layer_config(8, 8, 90), 4).find("intermediate size 90"), std::string::npos);
  EXPECT_NE(err(layer_config(12, 3, 96), 2).find("3 KV heads"), std::string::npos);
  EXPECT_THROW(tp_shard(layer_config(4, 4, 96), 2, 2), Error);
}

// One pre-norm Llama layer over T positions (causal attention, GQA; no RoPE: it acts per head, so it does not
// interact with the split), in fp32, with weights W [out, in] row-major.
struct Layer {
  LlamaConfig c;
  std::vector<float> wq, wk, wv, wo, wg, wu, wd, n1, n2;
};

Layer random_layer(const LlamaConfig& c, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f), n(0.8f, 1.2f);
  auto fill = [&](size_t count, bool norm = false) {
    std::vector<float> v(count);
    for (auto& x : v) x = norm ? n(g) : u(g);
    return v;
  };
  const size_t H = size_t(c.hidden_size), hd = size_t(c.head_dim), I = size_t(c.intermediate_size);
  Layer l;
  l.c = c;
  l.wq = fill(size_t(c.num_heads) * hd * H);
  l.wk = fill(size_t(c.num_kv_heads) * hd * H);
  l.wv = fill(size_t(c.num_kv_heads) * hd * H);
  l.wo = fill(H * size_t(c.num_heads) * hd);
  l.wg = fill(I * H);
  l.wu = fill(I * H);
  l.wd = fill(H * I);
  l.n1 = fill(H, true);
  l.n2 = fill(H, true);
  return l;
}

// y[t, o] = sum_i x[t, i] W[o0 + o, i0 + i] for o < n_out, i < n_in (W has `ld` columns).
std::vector<float> matmul(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W, int ld,
                          int o0, int n_out, int i0) {
  std::vector<float> y(size_t(T) * n_out, 0.f);
  for (int t = 0; t < T; ++t)
    for (int o = 0; o < n_out; ++o) {
      double s = 0;
      for (int i = 0; i < n_in; ++i) s += double(x[size_t(t) * n_in + i]) * W[size_t(o0 + o) * ld + i0 + i];
      y[size_t(t) * n_out + o] = float(s);
    }
  return y;
}

std::vector<float> rmsnorm(const std::vector<float>& x, int T, int H, const std::vector<float>& w) {
  std::vector<float> y(x.size());
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(x[size_t(t) * H + i]) * x[size_t(t) * H + i];
    const double inv = 1 / std::sqrt(ss / H + 1e-5);
    for (int i = 0; i < H; ++i) y[size_t(t) * H + i] = float(x[size_t(t) * H + i] * inv * w[size_t(i)]);
  }
  return y;
}

// The layer as rank s of a TP group computes it (s = the whole layer when size is 1); reduce sums the
// row-parallel partial outputs over the group.
template <typename Reduce>
std::vector<float> layer_forward(const Layer& l, std::vector<float> x, int T, const TpShard& s,
                                 Reduce reduce) {
  const LlamaConfig& c = l.c;
  const int H = c.hidden_size, hd = c.head_dim, group = c.num_heads / c.num_kv_heads, I = c.intermediate_size;
  const std::vector<float> h = rmsnorm(x, T, H, l.n1);
  // Column-parallel: this rank's query heads and KV heads.
  const std::vector<float> q = matmul(h, T, H, l.wq, H, s.q_head0 * hd, s.q_heads * hd, 0);
  const std::vector<float> k = matmul(h, T, H, l.wk, H, s.kv_head0 * hd, s.kv_heads * hd, 0);
  const std::vector<float> v = matmul(h, T, H, l.wv, H, s.kv_head0 * hd, s.kv_heads * hd, 0);
  std::vector<float> att(size_t(T) * s.q_heads * hd, 0.f);
  for (int qh = 0; qh < s.q_heads; ++qh) {
    const int kv = (s.q_head0 + qh) / group - s.kv_head0;  // local KV head
    for (int t = 0; t < T; ++t) {
      std::vector<double> p(size_t(t) + 1);
      double mx = -1e300, den = 0;
      for (int u = 0; u <= t; ++u) {
        double d = 0;
        for (int e = 0; e < hd; ++e)
          d += double(q[(size_t(t) * s.q_heads + qh) * hd + e]) * k[(size_t(u) * s.kv_heads + kv) * hd + e];
        p[size_t(u)] = d / std::sqrt(double(hd));
        mx = std::max(mx, p[size_t(u)]);
      }
      for (auto& e : p) den += (e = std::exp(e - mx));
      for (int e = 0; e < hd; ++e) {
        double o = 0;
        for (int u = 0; u <= t; ++u) o += p[size_t(u)] * v[(size_t(u) * s.kv_heads + kv) * hd + e];
        att[(size_t(t) * s.q_heads + qh) * hd + e] = float(o / den);
      }
    }
  }
  // Row-parallel: this rank's slice of o_proj's inputs, summed over the group.
  std::vector<float> o = matmul(att, T, s.q_heads * hd, l.wo, c.num_heads * hd, 0, H, s.q_head0 * hd);
  reduce(o);
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  const std::vector<float> h2 = rmsnorm(x, T, H, l.n2);
  const std::vector<float> gt = matmul(h2, T, H, l.wg, H, s.inter0, s.inter, 0);
  const std::vector<float> up = matmul(h2, T, H, l.wu, H, s.inter0, s.inter, 0);
  std::vector<float> m(gt.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = gt[i] / (1.f + std::exp(-gt[i])) * up[i];
  std::vector<float> d = matmul(m, T, s.inter, l.wd, I, 0, H, s.inter0);
  reduce(d);
  for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
  return x;
}

TEST(TensorParallelLayer, RanksWithAllReduceEqualTheWholeLayer) {
  struct Case {
    int nh, nkv, size;
  };
  // MHA, GQA split, GQA with KV heads replicated (2 KV heads over 4 ranks, 1 over 4).
  for (const Case& k : {Case{4, 4, 2}, Case{4, 4, 4}, Case{8, 4, 2}, Case{8, 2, 4}, Case{8, 1, 4}}) {
    const LlamaConfig c = layer_config(k.nh, k.nkv, 96);
    const Layer l = random_layer(c, 7 + uint32_t(k.nh * 10 + k.nkv + k.size));
    const int T = 5;
    std::mt19937 g(3);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> x(size_t(T) * c.hidden_size);
    for (auto& e : x) e = u(g);
    const std::vector<float> ref = layer_forward(l, x, T, tp_shard(c, 0, 1), [](std::vector<float>&) {});
    InProcessGroup grp(k.size);
    std::vector<std::vector<float>> out(static_cast<size_t>(k.size));
    on_ranks(k.size, [&](int r) {
      Communicator& comm = grp.rank(r);
      out[size_t(r)] = layer_forward(l, x, T, tp_shard(c, r, k.size),
                                     [&](std::vector<float>& p) { comm.all_reduce_sum(p.data(), p.size()); });
    });
    for (int r = 0; r < k.size; ++r) {
      ASSERT_EQ(out[size_t(r)].size(), ref.size());
      for (size_t i = 0; i < ref.size(); ++i)
        EXPECT_NEAR(out[size_t(r)][i], ref[i], 1e-4f * (1 + std::fabs(ref[i])))
            << "heads " << k.nh << "/" << k.nkv << " TP " << k.size << " rank " << r << " value " << i;
      EXPECT_EQ(out[size_t(r)], out[0]) << "ranks disagree";
    }
  }
}

// The whole model at TP = 2 and 4 (ranks as threads, TpCpuLlama) on the golden fixtures (tiny random
// Llama models with transformers' logits and greedy continuations, tests/fixtures/golden/, made by
// tools/make_golden.py): MHA, GQA with KV heads split and replicated (2 and 1 KV heads over 4 ranks), tied
// and untied heads, Llama 3 / linear RoPE scaling, bf16 checkpoints. The greedy tokens equal transformers'
// (and so TP = 1's, which test_golden checks), the logits stay within the golden tolerance of TP = 1's.
TEST(TpCpuLlama, GoldenFixturesGiveTransformersGreedyTokensAtTp2And4) {
  namespace fs = std::filesystem;
  const std::string root = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden";
  int checked = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    const fs::path gj = e.path() / "golden.json";
    if (!e.is_directory() || !fs::exists(gj)) continue;
    std::ifstream f(gj);
    const nlohmann::json g = nlohmann::json::parse(f);
    const bool bf16 = g["dtype"] == "bfloat16";
    LoadOptions lo;
    lo.load_tokenizer = false;
    lo.activations = bf16 ? "bf16" : "f32";
    auto m = load_model(e.path().string(), lo);
    const int V = m->cfg.vocab_size;
    const double atol = bf16 ? 6e-2 : 2e-4, rtol = bf16 ? 3e-2 : 2e-4;  // test_golden's
    for (int size : {2, 4}) {
      TpCpuLlama tp(m->cfg, m->llama->weights(), size, m->llama->options());
      for (size_t p = 0; p < g["prompts"].size(); ++p) {
        const std::vector<int32_t> prompt = g["prompts"][p].get<std::vector<int32_t>>();
        const std::vector<int32_t> want = g["greedy"][p].get<std::vector<int32_t>>();
        const std::vector<float> whole = m->llama->prompt_logits(prompt), split = tp.prompt_logits(prompt);
        ASSERT_EQ(split.size(), whole.size());
        for (size_t i = 0; i < whole.size(); ++i)
          ASSERT_LE(std::fabs(split[i] - whole[i]), atol + rtol * std::fabs(whole[i]))
              << e.path().filename() << " TP " << size << " prompt " << p << " position " << i / size_t(V)
              << " token " << i % size_t(V);
        EXPECT_EQ(tp.greedy(prompt, int(want.size())), want)
            << e.path().filename() << " TP " << size << " prompt " << p;
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 16) << "golden fixtures under " << root;
}

TEST(TpCpuLlama, RefusesSplitsThatDoNotDivide) {
  const std::string dir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden/mha_tied";
  LoadOptions lo;
  lo.load_tokenizer = false;
  auto m = load_model(dir, lo);
  const std::string msg = testutil::error_of([&] { TpCpuLlama tp(m->cfg, m->llama->weights(), 3); });
  EXPECT_NE(msg.find("do not divide over 3"), std::string::npos) << "message: " << msg;
}

}  // namespace
}  // namespace llamarun
