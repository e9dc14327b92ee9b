// Deadlines inside a step: Engine::stop() abandons a forward pass that is still running when the drain
// deadline passes (the CPU forward polls BatchInput::abort between layers), so a shutdown is bounded by
// about half a layer's compute, not by the longest prefill (issue 9, fault 2).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string_view>
#include <thread>

#include "engine/engine.h"
#include "kv/paged_kv_pool.h"
#include "model/random_model.h"

using namespace llamarun;
using namespace std::chrono_literals;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A 40-layer tiny model whose every layer takes at least 50 ms (the dump hook sleeps): one step of any
// prompt takes 2 s or more, whatever the machine.
std::unique_ptr<Model> slow_model(std::atomic<bool>& in_forward) {
  LlamaConfig c = random_model_preset("tiny");
  c.num_layers = 40;
  auto m = make_random_model(c, DType::F32);
  m->llama->options().dump = [&in_forward](const char* name, int, const float*, int64_t, int64_t) {
    if (std::string_view(name) != "ffn_residual") return;
    in_forward = true;
    std::this_thread::sleep_for(50ms);
  };
  return m;
}

TEST(EngineDeadline, StopAbandonsAStepInFlightAtTheDrainDeadline) {
  std::atomic<bool> in_forward{false};
  auto m = slow_model(in_forward);
  Engine e(*m, EngineConfig{});
  std::mutex mu;
  bool finished = false;
  std::string reason;
  GenerationRequest r;
  r.prompt.assign(64, 7);
  r.params.max_tokens = 1;
  r.on_output = [&](const RequestOutput& o) {
    std::lock_guard<std::mutex> lk(mu);
    if (o.finished) finished = true, reason = o.finish_reason;
  };
  e.submit(std::move(r));
  e.start();
  const double t_wait = now_s();
  while (!in_forward && now_s() - t_wait < 30) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(in_forward) << "the step never started";
  const double t0 = now_s();
  e.stop(/*drain=*/true, /*timeout_s=*/0.1);
  const double took = now_s() - t0;
  // The whole step takes >= 2 s; the deadline is 0.1 s and a layer 50 ms.
  EXPECT_LT(took, 1.0) << "stop() waited for the step in flight";
  {
    std::lock_guard<std::mutex> lk(mu);
    EXPECT_TRUE(finished);
    EXPECT_EQ(reason, "cancelled");
  }

  // The engine serves again after an abandoned step.
  m->llama->options().dump = nullptr;
  finished = false;
  GenerationRequest r2;
  r2.prompt.assign(8, 3);
  r2.params.max_tokens = 2;
  r2.params.ignore_eos = true;
  r2.on_output = [&](const RequestOutput& o) {
    std::lock_guard<std::mutex> lk(mu);
    if (o.finished) finished = true, reason = o.finish_reason;
  };
  e.start();
  e.submit(std::move(r2));
  e.stop(/*drain=*/true, 30);
  std::lock_guard<std::mutex> lk(mu);
  EXPECT_TRUE(finished);
  EXPECT_EQ(reason, "length");
}

TEST(EngineDeadline, ForwardThrowsForwardAbortedWhenAbortIsRaised) {
  LlamaConfig c = random_model_preset("tiny");
  auto m = make_random_model(c, DType::F32);
  PagedKVPool kv(c.num_layers, c.num_kv_heads, c.head_dim, 16, 1);
  std::vector<int32_t> table{0};
  std::atomic<bool> abort{true};
  BatchInput b;
  b.tokens = {1, 2};
  b.positions = {0, 1};
  b.seq_index = {0, 0};
  b.block_tables.emplace_back(table.data(), table.size());
  b.logit_rows = {1};
  b.abort = &abort;
  std::vector<float> logits(c.vocab_size);
  EXPECT_THROW(m->llama->forward(b, kv, logits.data()), ForwardAborted);
  abort = false;
  EXPECT_NO_THROW(m->llama->forward(b, kv, logits.data()));
}

}  // namespace
