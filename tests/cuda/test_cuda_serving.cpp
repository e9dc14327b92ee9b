// The CUDA backend as the serving engine's StepModel (CudaLlama::forward_paged):
//   - varlen batches over shuffled block tables (chunked prefills, prefill chunks mixed with others,
//     graph-replayed decode batches) equal one sequence prefilled alone in one chunk on a second model
//     (other batch shapes, other GEMM shapes, the tensor-core attention);
//   - the Engine on the GPU reproduces the transformers greedy goldens (drift only at near-ties, as in
//     test_cuda_golden.cpp);
//   - batch invariance on the GPU is measured, not assumed: a greedy request alone vs batched with 63
//     others (GEMM shapes differ with the batch, so last-bit differences can flip near-ties); the counts
//     are printed and must stay high.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <utility>

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_llama.h"
#include "backends/cuda/cuda_step_model.h"
#include "cuda_paged_seq.h"
#include "engine/engine.h"
#include "model/model.h"

namespace llamarun::cuda::test {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_GPU()                                     \
  do {                                                    \
    if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"; \
  } while (0)

// One sequence's state for driving forward_paged by hand.
struct Seq {
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  int computed = 0;
};

TEST(CudaServing, VarlenBatchesMatchOneSequenceAlone) {
  REQUIRE_GPU();
  // tc 16: the 37- and 20-token prefill chunks take the tensor-core attention over gathered K / V, the 3- and
  // 2-token ones the paged kernel; tc 0: the paged kernel for every row.
  for (auto [act, tc] : {std::pair{DType::F16, 16}, std::pair{DType::BF16, 16}, std::pair{DType::F16, 0}}) {
    const LlamaConfig cfg = cuda_preset_config("tiny");
    CudaLlamaOptions co;
    co.dtype = act;
    co.max_context = 256;
    co.paged_max_tokens = 64;
    co.paged_max_seqs = 8;
    CudaLlama ref(cfg, 7, co);  // the reference: default options, one sequence at a time
    ref.init_paged(16, 8, 0);
    PagedSeq ref_seq(ref, shuffled_blocks(8, 9));
    co.paged_tc_prefill_rows = tc;
    CudaLlama paged(cfg, 7, co);
    const int bs = 16, V = cfg.vocab_size;
    const int nb = paged.init_paged(bs, 40, 0);
    ASSERT_EQ(nb, 40);
    std::mt19937 rng(3);
    std::vector<Seq> seqs(3);
    const int lens[3] = {37, 5, 20};
    std::vector<int32_t> free_blocks(nb);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
    for (int s = 0; s < 3; ++s) {
      for (int i = 0; i < lens[s]; ++i) seqs[s].tokens.push_back(int32_t(rng() % V));
      for (int b = 0; b < 6; ++b) {  // 96 positions each, non-contiguous
        seqs[s].blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
    }
    // Reference logits of a position: the sequence up to it prefilled alone, in one chunk.
    const int extra = 4;  // decode steps after the prompts
    std::vector<std::vector<int32_t>> decode_ids(3);
    for (int s = 0; s < 3; ++s)
      for (int j = 0; j < extra; ++j) decode_ids[s].push_back(int32_t(rng() % V));
    auto ref_logits = [&](int s, int upto) {  // logits after tokens[0..upto] of (prompt + decode ids)
      ref_seq.reset();
      std::vector<int32_t> all = seqs[s].tokens;
      all.insert(all.end(), decode_ids[s].begin(), decode_ids[s].end());
      return ref_seq.prefill(all.data(), upto + 1, 64);
    };
    const double atol = act == DType::F16 ? 0.03 : 0.25, rtol = act == DType::F16 ? 0.02 : 0.05;
    double worst = 0;
    auto check = [&](int s, int upto, const float* got, const char* what) {
      std::vector<float> want = ref_logits(s, upto);
      for (int v = 0; v < V; ++v) {
        double e = std::fabs(got[v] - want[v]);
        worst = std::max(worst, e);
        ASSERT_LE(e, atol + rtol * std::fabs(want[v]))
            << dtype_name(act) << " " << what << " seq " << s << " position " << upto << " token " << v;
      }
    };
    // Step 1: the first 3 tokens of seq 1 (no logits at all). Step 2: seq 0 whole. Step 3: seq 1's rest and
    // seq 2.
    struct Chunk {
      int s, start, n;
      bool logits;
    };
    auto run = [&](const std::vector<Chunk>& chunks, const char* what) {
      BatchInput b;
      for (size_t i = 0; i < chunks.size(); ++i) {
        const Chunk& c = chunks[i];
        b.block_tables.emplace_back(seqs[c.s].blocks.data(), seqs[c.s].blocks.size());
        for (int j = 0; j < c.n; ++j) {
          const int p = c.start + j;
          b.tokens.push_back(p < lens[c.s] ? seqs[c.s].tokens[p] : decode_ids[c.s][p - lens[c.s]]);
          b.positions.push_back(p);
          b.seq_index.push_back(int32_t(i));
        }
        if (c.logits) b.logit_rows.push_back(b.size() - 1);
      }
      const size_t R = b.logit_rows.size();
      std::vector<int32_t> ids(R, -1);
      std::vector<float> logits(R * V, NAN);
      paged.forward_paged(b, nullptr, ids.data(), logits.data());
      size_t r = 0;
      for (const Chunk& c : chunks) {
        if (!c.logits) continue;
        const float* row = &logits[r * V];
        check(c.s, c.start + c.n - 1, row, what);
        EXPECT_EQ(ids[r], int32_t(std::max_element(row, row + V) - row)) << "device argmax of row " << r;
        ++r;
      }
    };
    run({{1, 0, 3, false}}, "prefill chunk without logits");  // R = 0: no logit rows in the step
    run({{0, 0, 37, true}}, "prefill");
    run({{1, 3, 2, true}, {2, 0, 20, true}}, "chunked prefill");
    for (int j = 0; j < extra; ++j)  // decode-only batches of 3: the bucket-4 graph (captured, then replayed)
      run({{0, 37 + j, 1, true}, {1, 5 + j, 1, true}, {2, 20 + j, 1, true}}, "decode");
    EXPECT_GE(paged.paged_graph_count(), 1);
    std::cout << "[ serving ] " << dtype_name(act)
              << (tc ? " tensor-core prefill chunks" : " paged kernel only")
              << ", batched vs alone: max |logit diff| " << worst << "\n";
  }
}

// Greedy tokens of each prompt through an Engine over `backend`.
std::vector<std::vector<int32_t>> engine_greedy(Model& m, std::unique_ptr<StepModel> backend,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                int max_tokens, bool together, bool prefix_cache = false,
                                                int num_blocks = 512, uint64_t* preemptions = nullptr) {
  EngineConfig ec;
  ec.block_size = 16;
  ec.num_blocks = num_blocks;
  ec.max_num_seqs = 64;
  ec.max_batch_tokens = 256;
  ec.enable_prefix_caching = prefix_cache;
  ec.max_model_len = 256;  // the CudaLlamaOptions::max_context of the callers
  Engine e(m, ec, std::move(backend));
  std::vector<std::vector<int32_t>> out(prompts.size());
  auto submit = [&](size_t i) {
    GenerationRequest r;
    r.prompt = prompts[i];
    r.params.temperature = 0;
    r.params.ignore_eos = true;
    r.params.max_tokens = max_tokens;
    r.on_output = [&out, i](const RequestOutput& o) {
      for (const TokenOutput& t : o.tokens) out[i].push_back(t.id);
    };
    e.submit(std::move(r));
  };
  if (together) {
    for (size_t i = 0; i < prompts.size(); ++i) submit(i);
    while (e.step()) {
    }
  } else {
    for (size_t i = 0; i < prompts.size(); ++i) {
      submit(i);
      while (e.step()) {
      }
    }
  }
  if (preemptions) *preemptions = e.stats().preemptions_total;
  return out;
}

// CudaLlama options matching engine_greedy's EngineConfig, for the "tiny" preset.
CudaLlamaOptions tiny_engine_options() {
  CudaLlamaOptions co;
  co.max_context = 256;
  co.paged_max_tokens = 256;
  co.paged_max_seqs = 64;
  return co;
}

// `count` prompts of min_len + [0, spread) random ids below vocab, from `seed`.
std::vector<std::vector<int32_t>> random_prompts(int count, int min_len, int spread, int vocab,
                                                 uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> prompts(count);
  for (auto& p : prompts) {
    p.resize(min_len + rng() % spread);
    for (auto& t : p) t = int32_t(rng() % vocab);
  }
  return prompts;
}

TEST(CudaServing, EngineGreedyAloneVsBatchedWith63Others) {
  REQUIRE_GPU();
  Model m;
  m.cfg = cuda_preset_config("tiny");
  const CudaLlamaOptions co = tiny_engine_options();
  const auto prompts = random_prompts(64, 5, 60, m.cfg.vocab_size, 11);
  const int n = 24;
  auto alone = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, false);
  auto batched = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, true);
  int identical = 0, first_equal = 0;
  long agree_tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(alone[i].size(), size_t(n));
    ASSERT_EQ(batched[i].size(), size_t(n));
    identical += alone[i] == batched[i];
    first_equal += alone[i][0] == batched[i][0];
    size_t k = 0;
    while (k < alone[i].size() && alone[i][k] == batched[i][k]) ++k;
    agree_tokens += long(k);
  }
  std::cout << "[ serving ] GPU greedy, alone vs batched with 63 others: " << identical
            << "/64 sequences identical over " << n << " tokens; first token equal in " << first_equal
            << "/64; " << agree_tokens << "/" << 64 * n << " tokens before the first difference\n";
  EXPECT_GE(first_equal, 60);
  EXPECT_GE(identical, 48);
}

TEST(CudaServing, EnginePrefixCachedEqualsUncached) {
  REQUIRE_GPU();
  Model m;
  m.cfg = cuda_preset_config("tiny");
  const CudaLlamaOptions co = tiny_engine_options();
  std::mt19937 rng(12);
  std::vector<int32_t> shared(48);  // three full blocks of 16
  for (auto& t : shared) t = int32_t(rng() % m.cfg.vocab_size);
  std::vector<std::vector<int32_t>> prompts(16, shared);
  for (auto& p : prompts)
    for (int i = 0; i < 8; ++i) p.push_back(int32_t(rng() % m.cfg.vocab_size));
  const int n = 24;
  // One request at a time: with the cache on, every request after the first reuses the shared blocks.
  auto cold = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, false, false);
  auto warm = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, false, true);
  int identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) identical += cold[i] == warm[i];
  std::cout << "[ serving ] GPU greedy, prefix-cached vs uncached: " << identical
            << "/16 sequences identical over " << n << " tokens\n";
  EXPECT_GE(identical, 12);
}

TEST(CudaServing, EnginePreemptedEqualsUninterrupted) {
  REQUIRE_GPU();
  Model m;
  m.cfg = cuda_preset_config("tiny");
  const CudaLlamaOptions co = tiny_engine_options();
  const auto prompts = random_prompts(24, 30, 30, m.cfg.vocab_size, 13);
  const int n = 40;
  uint64_t pre_full = 0, pre_tight = 0;
  // All together: with 512 blocks nothing is preempted; with 24 (6 sequences' worth) most are, and resume.
  auto full = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, true, false, 512, &pre_full);
  auto tight = engine_greedy(m, make_cuda_step_model(m.cfg, 5, co), prompts, n, true, false, 24, &pre_tight);
  EXPECT_EQ(pre_full, 0u);
  EXPECT_GT(pre_tight, 0u);
  int identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(tight[i].size(), size_t(n));
    identical += full[i] == tight[i];
  }
  std::cout << "[ serving ] GPU greedy, with " << pre_tight << " preemptions vs none: " << identical
            << "/24 sequences identical over " << n << " tokens\n";
  EXPECT_GE(identical, 18);
}

TEST(CudaServing, EngineMatchesTransformersGoldens) {
  REQUIRE_GPU();
  const std::string dir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden";
  int ran = 0;
  for (auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory() || !fs::exists(e.path() / "golden.json")) continue;
    std::ifstream in(e.path() / "golden.json");
    auto g = nlohmann::json::parse(in);
    LoadOptions lo;
    lo.load_tokenizer = false;
    auto m = load_model(e.path().string(), lo);
    const int hd = m->cfg.head_dim ? m->cfg.head_dim : m->cfg.hidden_size / m->cfg.num_heads;
    if (hd != 16 && hd != 32 && hd != 64 && hd != 128) continue;  // paged_attention's head sizes
    const bool bf16 = g["dtype"] == "bfloat16";
    CudaLlamaOptions co;
    co.dtype = DType::F16;
    co.max_context = std::min(256, m->cfg.max_position);
    co.paged_max_tokens = 128;
    co.paged_max_seqs = 16;
    std::vector<std::vector<int32_t>> prompts;
    for (auto& p : g["prompts"]) prompts.push_back(p.get<std::vector<int32_t>>());
    const int n = int(g["greedy"][0].size());
    auto got = engine_greedy(*m, make_cuda_step_model(*m, co), prompts, n, true);
    ++ran;
    for (size_t p = 0; p < prompts.size(); ++p) {
      const auto want = g["greedy"][p].get<std::vector<int32_t>>();
      ASSERT_EQ(got[p].size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        if (got[p][i] == want[i]) continue;
        const double margin = g["greedy_margin"][p][i].get<double>();
        std::cout << "[ serving ] " << e.path().filename().string() << " prompt " << p
                  << ": greedy drifts at step " << i << " (reference top-2 margin " << margin << ")\n";
        EXPECT_LE(margin, bf16 ? 0.22 : 0.1)
            << e.path().filename().string() << " prompt " << p << " step " << i;
        break;
      }
    }
  }
  EXPECT_GE(ran, 7) << "too few golden fixtures with a supported head_dim";
}

}  // namespace
}  // namespace llamarun::cuda::test
