// The serving engine on the tiny golden model (tests/fixtures/golden/mha_tied: 2 layers, hidden 64,
// vocab 257, 128 positions): batch invariance, prefix caching, preemption, cancellation, load.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "backends/cpu/simd_level.h"
#include "core/error.h"
#include "engine/engine.h"
#include "model/model.h"
#include "ops/matmul.h"

using namespace llamarun;

namespace {

const std::string kDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden/mha_tied";

Model& tiny_model() {
  static std::unique_ptr<Model> m = [] {
    LoadOptions lo;
    lo.load_tokenizer = false;
    lo.activations = "f32";
    return load_model(kDir, lo);
  }();
  return *m;
}

struct Collected {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  bool finished = false;
  std::string reason;
  int outputs_after_finish = 0;
  int cached = 0;
  int prompt_tokens = 0, completion_tokens = 0;
};

// Collects outputs per (request id, choice); thread-safe.
struct Sink {
  std::mutex mu;
  std::map<std::pair<uint64_t, int>, Collected> got;
  Collected& at(uint64_t id, int choice) {
    std::lock_guard<std::mutex> lk(mu);
    return got[{id, choice}];
  }
  OutputCallback cb() {
    return [this](const RequestOutput& o) {
      std::lock_guard<std::mutex> lk(mu);
      Collected& c = got[{o.request_id, o.choice}];
      if (c.finished) ++c.outputs_after_finish;
      for (const auto& t : o.tokens) {
        c.ids.push_back(t.id);
        c.logprobs.push_back(t.logprob.logprob);
      }
      if (o.finished) {
        c.finished = true;
        c.reason = o.finish_reason;
        c.cached = o.cached_prompt_tokens;
        c.prompt_tokens = o.prompt_tokens;
        c.completion_tokens = o.completion_tokens;
      }
    };
  }
};

// Greedy, with the chosen token's logprob: comparing logprobs bit for bit checks the logits exactly.
GenerationRequest greedy_req(std::vector<int32_t> prompt, int max_tokens, Sink& sink) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.logprobs = true;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.on_output = sink.cb();
  return r;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int len) {
  std::vector<int32_t> p(len);
  for (auto& t : p) t = int32_t(rng() % 257);
  return p;
}

void run_to_completion(Engine& e) {
  int guard = 0;
  while (e.step()) ASSERT_LT(++guard, 100000);
}

EngineConfig small_cfg() {
  EngineConfig c;
  c.block_size = 4;
  c.num_blocks = 512;
  c.max_batch_tokens = 64;
  return c;
}

// Ids and logprobs of a greedy request run alone.
struct Greedy {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  bool operator==(const Greedy&) const = default;
};
Greedy result(Sink& sink, uint64_t id) { return {sink.at(id, 0).ids, sink.at(id, 0).logprobs}; }
std::ostream& operator<<(std::ostream& os, const Greedy& g) {
  for (size_t i = 0; i < g.ids.size(); ++i) os << g.ids[i] << ":" << g.logprobs[i] << " ";
  return os;
}

Greedy alone(const std::vector<int32_t>& prompt, int max_tokens, EngineConfig cfg) {
  Engine e(tiny_model(), cfg);
  Sink sink;
  uint64_t id = e.submit(greedy_req(prompt, max_tokens, sink));
  run_to_completion(e);
  return result(sink, id);
}

}  // namespace

TEST(BatchInvariance, MatmulRowsDoNotDependOnBatch) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t N = 101;
  for (int level = 0; level <= int(cpu::detected_simd_level()); ++level) {
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
      for (int64_t K : {96, 100}) {
        if (K % dtype_block_size(t)) continue;
        const size_t rb = dtype_row_bytes(t, K);
        std::vector<uint8_t> wb(rb * N);
        std::vector<float> row(K);
        for (int64_t n = 0; n < N; ++n) {
          for (auto& v : row) v = nd(rng);
          quantize_row(t, row.data(), wb.data() + rb * n, K);
        }
        WeightView w{t, N, K, wb.data()};
        MatmulOptions mo;
        mo.batch_invariant = true;
        std::vector<float> x1(K);
        for (auto& v : x1) v = nd(rng);
        std::vector<float> y1(N);
        matmul_at_level(cpu::SimdLevel(level), w, x1.data(), 1, y1.data(), mo);
        for (int M : {2, 3, 5, 7, 8, 9, 11, 15, 16, 17, 33, 64}) {
          for (int at : {0, M / 2, M - 1}) {
            std::vector<float> x(size_t(M) * K), y(size_t(M) * N);
            for (auto& v : x) v = nd(rng);
            std::copy(x1.begin(), x1.end(), x.begin() + size_t(at) * K);
            matmul_at_level(cpu::SimdLevel(level), w, x.data(), M, y.data(), mo);
            for (int64_t n = 0; n < N; ++n)
              ASSERT_EQ(y[size_t(at) * N + n], y1[n])
                  << cpu::simd_level_str(cpu::SimdLevel(level)) << " " << dtype_name(t) << " K=" << K
                  << " M=" << M << " row " << at << " col " << n;
          }
        }
        // And close to the reference (the invariant path is still a correct matmul).
        std::vector<float> yr(N);
        matmul_ref(w, x1.data(), 1, yr.data());
        for (int64_t n = 0; n < N; ++n) ASSERT_NEAR(y1[n], yr[n], 1e-3 * (1 + std::fabs(yr[n])));
      }
    }
  }
}

// Attention takes a prefill chunk's consecutive tokens together (runs of up to 8 positions sharing each key
// and value load; a row's scores past its own position get probability 0): every row's logits are the bits
// that the same token alone gives, with the batch-invariant matmul. A GQA model (2 query heads per KV head)
// and an MHA one, a prompt of 37 tokens (runs of 8 and a shorter last one) over blocks of 16 positions, plus
// a second sequence in the same batch.
TEST(BatchInvariance, PrefillRunsEqualTokenByToken) {
  for (const char* name : {"gqa_untied", "mha_tied"}) {
    LoadOptions lo;
    lo.load_tokenizer = false;
    lo.activations = "f32";
    auto m = load_model(std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden/" + name, lo);
    const int V = m->cfg.vocab_size, n = 37, bs = 16;
    std::vector<int32_t> ids(n), other = {5, 9, 2, 77, 31};
    for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 11) % V;
    std::vector<int32_t> ta = {0, 1, 2}, tb = {3};
    PagedKVPool kv(m->cfg.num_layers, m->cfg.num_kv_heads, m->cfg.head_dim, bs, 4);
    // One batch: the prompt, then the other sequence's 5 tokens; every row's logits.
    BatchInput b = sequence_batch(ids, ta, /*all_logits=*/true);
    b.block_tables.push_back(tb);
    for (int i = 0; i < int(other.size()); ++i) {
      b.tokens.push_back(other[i]);
      b.positions.push_back(i);
      b.seq_index.push_back(1);
      b.logit_rows.push_back(n + i);
    }
    b.batch_invariant = true;
    std::vector<float> batched(size_t(b.size()) * V);
    m->llama->forward(b, kv, batched.data());
    // The same tokens one forward each, in a fresh pool.
    PagedKVPool kv1(m->cfg.num_layers, m->cfg.num_kv_heads, m->cfg.head_dim, bs, 4);
    std::vector<float> one(V);
    auto check = [&](int32_t id, int pos, std::span<const int32_t> table, int row) {
      BatchInput s;
      s.tokens = {id};
      s.positions = {pos};
      s.seq_index = {0};
      s.block_tables = {table};
      s.logit_rows = {0};
      s.batch_invariant = true;
      m->llama->forward(s, kv1, one.data());
      ASSERT_EQ(0, std::memcmp(one.data(), &batched[size_t(row) * V], size_t(V) * 4))
          << name << ": batch row " << row << " (position " << pos << ")";
    };
    for (int i = 0; i < n; ++i) check(ids[i], i, ta, i);
    for (int i = 0; i < int(other.size()); ++i) check(other[i], i, tb, n + i);
  }
}

TEST(Engine, GreedyMatchesTransformersGolden) {
  std::ifstream f(kDir + "/golden.json");
  nlohmann::json g = nlohmann::json::parse(f);
  for (bool invariant : {true, false}) {
    EngineConfig cfg = small_cfg();
    cfg.batch_invariant = invariant;
    Engine e(tiny_model(), cfg);
    Sink sink;
    std::vector<uint64_t> ids;
    for (size_t p = 0; p < g["prompts"].size(); ++p)
      ids.push_back(e.submit(
          greedy_req(g["prompts"][p].get<std::vector<int32_t>>(), int(g["greedy"][p].size()), sink)));
    run_to_completion(e);
    for (size_t p = 0; p < ids.size(); ++p) {
      const Collected& c = sink.at(ids[p], 0);
      EXPECT_TRUE(c.finished);
      EXPECT_EQ(c.reason, "length");
      EXPECT_EQ(c.ids, g["greedy"][p].get<std::vector<int32_t>>())
          << "prompt " << p << " invariant " << invariant;
    }
  }
}

TEST(Engine, GreedyAloneEqualsBatchedWith63Others) {
  std::mt19937 rng(7);
  const std::vector<int32_t> target = random_prompt(rng, 37);
  EngineConfig cfg = small_cfg();
  cfg.enable_prefix_caching = false;
  const Greedy ref = alone(target, 40, cfg);
  ASSERT_EQ(ref.ids.size(), 40u);
  // Alone again with a tiny budget (prefill in 5-token chunks): the same tokens.
  EngineConfig chunked = cfg;
  chunked.max_batch_tokens = 5;
  EXPECT_EQ(alone(target, 40, chunked), ref);

  for (int budget : {64, 512}) {
    cfg.max_batch_tokens = budget;
    Engine e(tiny_model(), cfg);
    Sink sink;
    std::vector<uint64_t> others;
    for (int i = 0; i < 31; ++i) {
      GenerationRequest r = greedy_req(random_prompt(rng, 1 + int(rng() % 60)), 1 + int(rng() % 50), sink);
      if (i % 3 == 0) {  // some sampled, with logprobs
        r.params.temperature = 0.8f;
        r.params.seed = i;
        r.params.top_logprobs = 3;
      }
      others.push_back(e.submit(std::move(r)));
    }
    e.step();  // the target arrives while others are mid-prefill / decoding
    uint64_t id = e.submit(greedy_req(target, 40, sink));
    for (int i = 0; i < 32; ++i)
      others.push_back(
          e.submit(greedy_req(random_prompt(rng, 1 + int(rng() % 60)), 1 + int(rng() % 50), sink)));
    run_to_completion(e);
    EXPECT_EQ(result(sink, id), ref) << "budget " << budget;
    for (uint64_t o : others) EXPECT_TRUE(sink.at(o, 0).finished);
    EXPECT_EQ(e.stats().kv_usage, 0.0);
    EXPECT_EQ(e.stats().requests_finished_total, 64u);
  }
}

TEST(Engine, PrefixCachedEqualsUncached) {
  std::mt19937 rng(11);
  const std::vector<int32_t> shared = random_prompt(rng, 30);
  std::vector<int32_t> p1 = shared, p2 = shared;
  for (int i = 0; i < 5; ++i) p1.push_back(int32_t(rng() % 257)), p2.push_back(int32_t(rng() % 257));
  EngineConfig off = small_cfg();
  off.enable_prefix_caching = false;
  const Greedy r1 = alone(p1, 30, off), r2 = alone(p2, 30, off), r_shared = alone(shared, 30, off);

  EngineConfig on = small_cfg();
  Engine e(tiny_model(), on);
  Sink sink;
  uint64_t a = e.submit(greedy_req(p1, 30, sink));
  run_to_completion(e);
  uint64_t b = e.submit(greedy_req(p2, 30, sink));
  uint64_t c = e.submit(greedy_req(shared, 30, sink));
  run_to_completion(e);
  uint64_t d = e.submit(greedy_req(p1, 30, sink));  // the whole prompt cached but its last token
  run_to_completion(e);
  EXPECT_EQ(result(sink, a), r1);
  EXPECT_EQ(sink.at(a, 0).cached, 0);
  EXPECT_EQ(result(sink, b), r2);
  EXPECT_EQ(sink.at(b, 0).cached, 28);  // 7 full blocks of 4 of the 30 shared tokens
  EXPECT_EQ(result(sink, c), r_shared);
  EXPECT_EQ(sink.at(c, 0).cached, 28);
  EXPECT_EQ(result(sink, d), r1);
  EXPECT_EQ(sink.at(d, 0).cached, 32);  // (35 - 1) / 4 full blocks
  EngineStats st = e.stats();
  EXPECT_EQ(st.prefix_cache_queries, 35u + 35u + 30u + 35u);
  EXPECT_EQ(st.prefix_cache_hits, 28u + 28u + 32u);
}

TEST(Engine, PreemptedAndResumedEqualsUninterrupted) {
  std::mt19937 rng(5);
  EngineConfig cfg = small_cfg();
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Greedy> refs;
  EngineConfig ref_cfg = cfg;
  ref_cfg.enable_prefix_caching = false;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(random_prompt(rng, 10 + 5 * i));
    refs.push_back(alone(prompts.back(), 60, ref_cfg));
  }
  for (bool cache : {false, true}) {
    cfg.num_blocks = 30;  // 120 tokens: one sequence of up to 85 fits, six do not
    cfg.enable_prefix_caching = cache;
    Engine e(tiny_model(), cfg);
    Sink sink;
    std::vector<uint64_t> ids;
    for (auto& p : prompts) ids.push_back(e.submit(greedy_req(p, 60, sink)));
    run_to_completion(e);
    EngineStats st = e.stats();
    EXPECT_GT(st.preemptions_total, 0u) << "the pool was meant to force preemption";
    for (size_t i = 0; i < ids.size(); ++i) {
      const Collected& c = sink.at(ids[i], 0);
      EXPECT_EQ(result(sink, ids[i]), refs[i]) << "request " << i << " cache " << cache;
      EXPECT_EQ(c.reason, "length");
      EXPECT_EQ(c.completion_tokens, 60);
      EXPECT_EQ(c.outputs_after_finish, 0);
    }
    EXPECT_EQ(st.kv_usage, 0.0);
  }
}

TEST(Engine, CancelFreesBlocksWithinOneStep) {
  std::mt19937 rng(9);
  EngineConfig cfg = small_cfg();
  cfg.max_batch_tokens = 8;  // a 60-token prompt takes 8 steps of prefill
  cfg.enable_prefix_caching = false;
  Engine e(tiny_model(), cfg);
  Sink sink;
  uint64_t in_prefill = e.submit(greedy_req(random_prompt(rng, 60), 20, sink));
  uint64_t decoding = e.submit(greedy_req(random_prompt(rng, 3), 100, sink));
  for (int i = 0; i < 3; ++i) e.step();
  EXPECT_GT(e.stats().kv_usage, 0.0);
  e.cancel(in_prefill);
  e.step();
  const double usage_one = e.stats().kv_usage;
  EXPECT_TRUE(sink.at(in_prefill, 0).finished);
  EXPECT_EQ(sink.at(in_prefill, 0).reason, "cancelled");
  for (int i = 0; i < 10; ++i) e.step();
  e.cancel(decoding);
  e.cancel(12345);  // unknown: ignored
  e.step();
  EXPECT_EQ(sink.at(decoding, 0).reason, "cancelled");
  EXPECT_EQ(e.stats().kv_usage, 0.0);
  EXPECT_LT(usage_one, 0.1);
  EXPECT_FALSE(e.step());
  // A request cancelled before it was ever scheduled.
  uint64_t early = e.submit(greedy_req(random_prompt(rng, 5), 5, sink));
  e.cancel(early);
  e.step();
  EXPECT_EQ(sink.at(early, 0).reason, "cancelled");
  EXPECT_EQ(sink.at(early, 0).outputs_after_finish, 0);
}

TEST(Engine, MoreRequestsThanTheCacheHoldsAllCompleteOnTheEngineThread) {
  std::mt19937 rng(13);
  EngineConfig cfg = small_cfg();
  cfg.num_blocks = 40;  // 160 tokens; 300 requests of up to ~70 tokens
  cfg.max_num_seqs = 32;
  Engine e(tiny_model(), cfg);
  e.start();
  Sink sink;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 300; ++i) {
    GenerationRequest r = greedy_req(random_prompt(rng, 1 + int(rng() % 40)), 1 + int(rng() % 30), sink);
    if (i % 2) {
      r.params.temperature = 1.0f;
      r.params.top_p = 0.9f;
    }
    ids.push_back(e.submit(std::move(r)));
  }
  e.stop(/*drain=*/true, 120);
  for (uint64_t id : ids) {
    const Collected& c = sink.at(id, 0);
    EXPECT_TRUE(c.finished) << id;
    EXPECT_EQ(c.reason, "length") << id;
    EXPECT_EQ(int(c.ids.size()), c.completion_tokens);
  }
  EngineStats st = e.stats();
  EXPECT_EQ(st.requests_finished_total, 300u);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.kv_usage, 0.0);
}

TEST(Engine, ChoicesAreSeededIndependently) {
  std::mt19937 rng(17);
  const std::vector<int32_t> prompt = random_prompt(rng, 12);
  EngineConfig cfg = small_cfg();
  Engine e(tiny_model(), cfg);
  Sink sink;
  GenerationRequest r = greedy_req(prompt, 20, sink);
  r.params.temperature = 1.0f;
  r.params.seed = 100;
  r.params.logprobs = true;
  r.n = 3;
  uint64_t multi = e.submit(r);
  std::vector<uint64_t> singles;
  for (int i = 0; i < 3; ++i) {
    GenerationRequest s = r;
    s.n = 1;
    s.params.seed = 100 + i;
    singles.push_back(e.submit(s));
  }
  run_to_completion(e);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sink.at(multi, i).ids, sink.at(singles[i], 0).ids) << i;
    EXPECT_EQ(sink.at(multi, i).logprobs, sink.at(singles[i], 0).logprobs) << i;
    for (float lp : sink.at(multi, i).logprobs) EXPECT_LE(lp, 0.0f);
  }
  EXPECT_NE(sink.at(multi, 0).ids, sink.at(multi, 1).ids);
}

TEST(Engine, SubmitRejectsBadRequestsAndFullQueue) {
  EngineConfig cfg = small_cfg();
  cfg.max_queue = 2;
  Sink sink;  // outlives the engine: ~Engine cancels what is left and calls back
  Engine e(tiny_model(), cfg);
  EXPECT_EQ(e.max_model_len(), 128);
  EXPECT_THROW(e.submit(greedy_req({}, 5, sink)), Error);
  EXPECT_THROW(e.submit(greedy_req({1, 2, 300}, 5, sink)), Error);
  try {
    e.submit(greedy_req(std::vector<int32_t>(100, 1), 40, sink));
    FAIL() << "expected the context check";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("128"), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("140"), std::string::npos) << err.what();
  }
  GenerationRequest bad = greedy_req({1, 2}, 5, sink);
  bad.params.top_p = 2;
  EXPECT_THROW(e.submit(bad), Error);
  GenerationRequest nocb = greedy_req({1, 2}, 5, sink);
  nocb.on_output = nullptr;
  EXPECT_THROW(e.submit(nocb), Error);
  e.submit(greedy_req({1, 2}, 5, sink));
  e.submit(greedy_req({1, 2}, 5, sink));
  EXPECT_THROW(e.submit(greedy_req({1, 2}, 5, sink)), QueueFull);
  run_to_completion(e);
  e.submit(greedy_req({1, 2}, 5, sink));  // room again
  // A request larger than the whole KV pool is refused, not left to wait forever.
  EngineConfig tiny_pool = small_cfg();
  tiny_pool.num_blocks = 4;
  Engine e2(tiny_model(), tiny_pool);
  EXPECT_THROW(e2.submit(greedy_req(std::vector<int32_t>(10, 1), 10, sink)), Error);
}

TEST(Engine, StopIdsEndTheSequenceUnlessIgnoreEos) {
  // Find the greedy continuation, then make its third token a stop id through eos_ids.
  std::mt19937 rng(21);
  const std::vector<int32_t> prompt = random_prompt(rng, 8);
  EngineConfig cfg = small_cfg();
  const std::vector<int32_t> ref = alone(prompt, 10, cfg).ids;
  Model& m = tiny_model();
  const std::vector<int> saved = m.cfg.eos_ids;
  m.cfg.eos_ids = {ref[2]};
  size_t first = std::find(ref.begin(), ref.end(), ref[2]) - ref.begin();
  {
    Engine e(m, cfg);
    Sink sink;
    GenerationRequest r = greedy_req(prompt, 10, sink);
    r.params.ignore_eos = false;
    uint64_t id = e.submit(r);
    uint64_t id2 = e.submit(greedy_req(prompt, 10, sink));
    run_to_completion(e);
    EXPECT_EQ(sink.at(id, 0).reason, "stop");
    EXPECT_EQ(sink.at(id, 0).ids, std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
    EXPECT_EQ(sink.at(id2, 0).ids, ref);
  }
  m.cfg.eos_ids = saved;
}

TEST(Engine, StopWithoutDrainCancelsAndCallbacksMayCancelOrThrow) {
  std::mt19937 rng(23);
  EngineConfig cfg = small_cfg();
  Engine e(tiny_model(), cfg);
  Sink sink;
  // A callback that cancels its own request after 3 tokens (a client going away mid-stream).
  std::atomic<uint64_t> self_id{0};
  std::atomic<int> seen{0};
  GenerationRequest r = greedy_req(random_prompt(rng, 5), 50, sink);
  OutputCallback inner = r.on_output;
  r.on_output = [&, inner](const RequestOutput& o) {
    inner(o);
    if (++seen == 3) e.cancel(self_id);
  };
  // A callback that throws: its request ends (as if cancelled), the engine goes on.
  GenerationRequest t = greedy_req(random_prompt(rng, 5), 50, sink);
  OutputCallback inner_t = t.on_output;
  t.on_output = [inner_t](const RequestOutput& o) {
    inner_t(o);
    if (!o.finished) throw std::runtime_error("connection reset");
  };
  self_id = e.submit(std::move(r));
  uint64_t thrower = e.submit(std::move(t));
  uint64_t ok = e.submit(greedy_req(random_prompt(rng, 5), 20, sink));
  run_to_completion(e);
  EXPECT_EQ(sink.at(self_id, 0).reason, "cancelled");
  EXPECT_EQ(sink.at(self_id, 0).ids.size(), 3u);
  EXPECT_EQ(sink.at(thrower, 0).reason, "cancelled");
  EXPECT_EQ(sink.at(thrower, 0).ids.size(), 1u);
  EXPECT_EQ(sink.at(ok, 0).reason, "length");
  EXPECT_EQ(e.stats().kv_usage, 0.0);

  // stop(drain=false) on a running engine thread cancels what is left.
  e.start();
  std::vector<uint64_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(e.submit(greedy_req(random_prompt(rng, 20), 100, sink)));
  e.stop(/*drain=*/false);
  for (uint64_t id : ids) {
    EXPECT_TRUE(sink.at(id, 0).finished);
    EXPECT_TRUE(sink.at(id, 0).reason == "cancelled" || sink.at(id, 0).reason == "length");
    EXPECT_EQ(sink.at(id, 0).outputs_after_finish, 0);
  }
  EXPECT_EQ(e.stats().kv_usage, 0.0);
  EXPECT_EQ(e.stats().running + e.stats().waiting, 0);
  // And it can start again.
  e.start();
  uint64_t again = e.submit(greedy_req(random_prompt(rng, 4), 3, sink));
  e.stop(/*drain=*/true);
  EXPECT_EQ(sink.at(again, 0).reason, "length");
}

TEST(Engine, Concurrency256AllComplete) {
  std::mt19937 rng(29);
  EngineConfig cfg = small_cfg();
  cfg.num_blocks = 1536;  // 6144 tokens for 256 requests of ~40 tokens: most run at once, some wait
  cfg.max_num_seqs = 256;
  cfg.max_batch_tokens = 512;
  Engine e(tiny_model(), cfg);
  Sink sink;
  std::vector<uint64_t> ids;
  int expected_tokens = 0;
  for (int i = 0; i < 256; ++i) {
    const int n = 1 + int(rng() % 30);
    expected_tokens += n;
    ids.push_back(e.submit(greedy_req(random_prompt(rng, 1 + int(rng() % 40)), n, sink)));
  }
  run_to_completion(e);
  int got_tokens = 0;
  for (uint64_t id : ids) {
    EXPECT_EQ(sink.at(id, 0).reason, "length");
    got_tokens += int(sink.at(id, 0).ids.size());
  }
  EXPECT_EQ(got_tokens, expected_tokens);
  EngineStats st = e.stats();
  EXPECT_EQ(st.generation_tokens_total, uint64_t(expected_tokens));
  EXPECT_EQ(st.requests_finished_total, 256u);
  EXPECT_EQ(st.kv_usage, 0.0);
}

namespace {

// A StepModel that chooses greedy tokens "on the device" (device_argmax) and records which logit rows the
// engine asked for. Its logits depend only on (position, token): row logits[v] = -|v - (7 * pos + tok) % V|,
// so the argmax is (7 * pos + tok) % V and a sampler at temperature 0 agrees with the device id.
class RecordingStepModel final : public StepModel {
 public:
  explicit RecordingStepModel(int vocab) : V_(vocab) {}
  int init_kv(int, int num_blocks, size_t) override { return num_blocks > 0 ? num_blocks : 64; }
  void forward(const BatchInput& b, const uint8_t* want, int32_t* ids, float* logits) override {
    for (size_t r = 0; r < b.logit_rows.size(); ++r) {
      const int t = b.logit_rows[r];
      const int best = (7 * b.positions[t] + b.tokens[t]) % V_;
      ids[r] = best;
      if (want[r]) {
        ++rows_with_logits;
        for (int v = 0; v < V_; ++v) logits[r * size_t(V_) + v] = -float(std::abs(v - best));
      } else {
        ++rows_without_logits;
        for (int v = 0; v < V_; ++v) logits[r * size_t(V_) + v] = NAN;  // must not be read
      }
    }
  }
  bool device_argmax() const override { return true; }
  std::string name() const override { return "recording"; }
  int rows_with_logits = 0, rows_without_logits = 0;

 private:
  int V_;
};

}  // namespace

TEST(Engine, DeviceArgmaxServesPlainGreedyAndLogitsTheRest) {
  Model m;
  m.cfg = tiny_model().cfg;
  const int V = m.cfg.vocab_size;
  auto rec = std::make_unique<RecordingStepModel>(V);
  RecordingStepModel* r = rec.get();
  EngineConfig cfg = small_cfg();
  Engine e(m, cfg, std::move(rec));
  EXPECT_EQ(e.backend_name(), "recording");
  Sink sink;
  auto submit = [&](float temp, bool logprobs) {
    GenerationRequest q;
    q.prompt = {1, 5, 9};
    q.params.temperature = temp;
    q.params.logprobs = logprobs;
    q.params.seed = 3;
    q.params.max_tokens = 6;
    q.params.ignore_eos = true;
    q.on_output = sink.cb();
    return e.submit(std::move(q));
  };
  const uint64_t greedy = submit(0.f, false);
  while (e.step()) {
  }
  EXPECT_EQ(r->rows_with_logits, 0) << "plain greedy must not ask for logits";
  EXPECT_EQ(r->rows_without_logits, 6);
  // The device's ids: (7 * pos + previous token) % V from position 2 on.
  std::vector<int32_t> want;
  int32_t tok = 9;
  for (int pos = 2; pos < 8; ++pos) want.push_back(tok = (7 * pos + tok) % V);
  EXPECT_EQ(sink.at(greedy, 0).ids, want);
  // Greedy with logprobs, and sampling, need the logits on the host; greedy with logprobs still gives the
  // same tokens (the host argmax of the row).
  const uint64_t lp = submit(0.f, true);
  const uint64_t sampled = submit(0.8f, false);
  while (e.step()) {
  }
  EXPECT_EQ(r->rows_with_logits, 12);
  EXPECT_EQ(sink.at(lp, 0).ids, want);
  EXPECT_EQ(sink.at(lp, 0).logprobs.size(), 6u);
  EXPECT_EQ(sink.at(sampled, 0).ids.size(), 6u);
  EXPECT_TRUE(sink.at(sampled, 0).finished);
}
