// Serving-engine benchmark on the CPU.
//   1. Per-token decode cost of LlamaModel::forward with the default matmul (GEMV for M <= 8, what
//      generate / bench use) against the batch-invariant one (what the server uses), at M = 1 and M = 16
//      decode tokens.
//   2. Engine throughput at several concurrencies (random prompts, greedy, ignore_eos), with the
//      engine-thread time split into scheduling, model and postprocessing.
// Usage: llamarun_bench_engine [model path (default model)] [prompt tokens = 64] [generated = 32]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/clock.h"
#include "engine/engine.h"
#include "model/model.h"
#include "ops/matmul.h"

using namespace llamarun;

int main(int argc, char** argv) {
  try {
    const std::string path = argc > 1 ? argv[1] : default_model_path();
    const int prompt_len = argc > 2 ? std::atoi(argv[2]) : 64;
    const int gen = argc > 3 ? std::atoi(argv[3]) : 32;
    LoadOptions lo;
    lo.load_tokenizer = false;
    auto m = load_model(path, lo);
    const LlamaConfig& c = m->cfg;
    std::printf("model %s, %d threads, SIMD %s\n", path.c_str(), omp_get_max_threads(), simd_level_name());
    std::mt19937 rng(1);
    auto rand_ids = [&](int n) {
      std::vector<int32_t> v(n);
      for (auto& t : v) t = int32_t(rng() % uint32_t(c.vocab_size));
      return v;
    };

    // 0. The batch-invariant matmul against the default one, on this model's w_gate of layer 0.
    {
      for (const WeightView& w : {m->llama->weights().layers[0].w_gate, m->llama->weights().lm_head})
        for (int M : {1, 4, 16, 64, 256}) {
          std::vector<float> x(size_t(M) * w.cols, 0.5f), y(size_t(M) * w.rows);
          MatmulOptions inv;
          inv.batch_invariant = true;
          double best[2] = {1e9, 1e9};
          for (int r = 0; r < 5; ++r) {
            for (int k = 0; k < 2; ++k) {
              const double t0 = now_seconds();
              matmul(w, x.data(), M, y.data(), k ? inv : MatmulOptions{});
              best[k] = std::min(best[k], now_seconds() - t0);
            }
          }
          std::printf("matmul %s %lldx%lld, M=%3d: default %.3f ms, batch-invariant %.3f ms (x%.2f)\n",
                      dtype_name(w.dtype), (long long)w.rows, (long long)w.cols, M, best[0] * 1e3,
                      best[1] * 1e3, best[1] / best[0]);
        }
    }

    // 1. Decode cost per step.
    const int ctx = 256, reps = 32;
    std::vector<float> logits(size_t(16) * c.vocab_size);
    for (int M : {1, 16}) {
      std::vector<int32_t> ids = rand_ids(ctx);
      PagedKVPool pool(c.num_layers, c.num_kv_heads, c.head_dim, 16, M * (ctx / 16));
      std::vector<std::vector<int32_t>> tables(M);
      BatchInput b;
      for (int s = 0; s < M; ++s) {
        for (int j = 0; j < ctx / 16; ++j) tables[s].push_back(s * (ctx / 16) + j);
        b.block_tables.emplace_back(tables[s].data(), tables[s].size());
      }
      // Prefill 64 tokens per sequence, then time one decode token per sequence.
      for (int s = 0; s < M; ++s) {
        b.tokens.assign(ids.begin(), ids.begin() + 64);
        b.positions.clear();
        b.seq_index.assign(64, s);
        for (int p = 0; p < 64; ++p) b.positions.push_back(p);
        b.logit_rows = {63};
        m->llama->forward(b, pool, logits.data());
      }
      b.tokens.assign(M, ids[64]);
      b.positions.assign(M, 64);
      b.seq_index.clear();
      b.logit_rows.clear();
      for (int s = 0; s < M; ++s) b.seq_index.push_back(s), b.logit_rows.push_back(s);
      double t_step[2];
      for (int inv = 0; inv < 2; ++inv) {
        b.batch_invariant = inv == 1;
        const double t0 = now_seconds();
        for (int r = 0; r < reps; ++r) m->llama->forward(b, pool, logits.data());
        t_step[inv] = (now_seconds() - t0) / reps;
      }
      std::printf("decode M=%2d: forward %.2f ms/step, batch-invariant %.2f ms/step (x%.2f)\n", M,
                  t_step[0] * 1e3, t_step[1] * 1e3, t_step[1] / t_step[0]);
    }

    // 2. Engine throughput.
    for (int conc : {1, 8, 32}) {
      EngineConfig ec;
      ec.kv_cache_bytes = size_t(256) << 20;
      Engine e(*m, ec);
      int done = 0;
      const double t0 = now_seconds();
      for (int i = 0; i < conc; ++i) {
        GenerationRequest r;
        r.prompt = rand_ids(prompt_len);
        r.params.temperature = 0;
        r.params.max_tokens = gen;
        r.params.ignore_eos = true;
        r.on_output = [&](const RequestOutput& o) { done += o.finished; };
        e.submit(std::move(r));
      }
      while (e.step()) {
      }
      const double wall = now_seconds() - t0;
      EngineStats st = e.stats();
      std::printf(
          "engine concurrency %3d: %d/%d done, %.2f s, %.1f generated tok/s, %llu steps; schedule %.2f ms "
          "(%.2f%%), model %.2f s, postprocess %.2f ms; per step: schedule %.1f us, postprocess %.1f us\n",
          conc, done, conc, wall, double(st.generation_tokens_total) / wall,
          (unsigned long long)st.steps_total, st.schedule_seconds * 1e3, 100 * st.schedule_seconds / wall,
          st.model_seconds, st.postprocess_seconds * 1e3, 1e6 * st.schedule_seconds / st.steps_total,
          1e6 * st.postprocess_seconds / st.steps_total);
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "llamarun_bench_engine: %s\n", ex.what());
    return 1;
  }
  return 0;
}
