// The serving engine on the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf; skipped when
// absent): streamed text with the real tokenizer, stop strings, EOS, and batch invariance with a
// quantised model. Kept small: the CI machine has 2 cores.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>

#include "engine/engine.h"
#include "model/model.h"

using namespace llamarun;

namespace {

const std::string kModel = std::string(LLAMARUN_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

Model* default_model() {
  static std::unique_ptr<Model> m = []() -> std::unique_ptr<Model> {
    if (!std::filesystem::exists(kModel)) return nullptr;
    return load_model(kModel);
  }();
  return m.get();
}

struct Out {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string text;
  std::string reason;
  bool finished = false;
};

struct Sink {
  std::mutex mu;
  std::map<uint64_t, Out> got;
  Out& at(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu);
    return got[id];
  }
  OutputCallback cb() {
    return [this](const RequestOutput& o) {
      std::lock_guard<std::mutex> lk(mu);
      Out& r = got[o.request_id];
      for (const auto& t : o.tokens) {
        r.ids.push_back(t.id);
        r.logprobs.push_back(t.logprob.logprob);
        r.text += t.text;
      }
      if (o.finished) r.finished = true, r.reason = o.finish_reason;
    };
  }
};

std::vector<int32_t> encode(const Model& m, const std::string& text) {
  std::vector<int32_t> ids;
  if (m.tokenizer->add_bos() && m.tokenizer->bos_id() >= 0) ids.push_back(m.tokenizer->bos_id());
  for (int32_t t : m.tokenizer->encode(text, true)) ids.push_back(t);
  return ids;
}

GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens, Sink& sink) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.logprobs = true;
  r.on_output = sink.cb();
  return r;
}

void run(Engine& e) {
  while (e.step()) {
  }
}

}  // namespace

TEST(EngineDefaultModel, TextStopStringsAndBatchInvariance) {
  Model* m = default_model();
  if (!m) GTEST_SKIP() << kModel << " not present";
  ASSERT_NE(m->tokenizer, nullptr);
  EngineConfig cfg;
  cfg.kv_cache_bytes = size_t(64) << 20;
  cfg.max_batch_tokens = 64;
  const std::vector<int32_t> prompt =
      encode(*m, "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n");

  Out alone;
  {
    Engine e(*m, cfg);
    Sink sink;
    uint64_t id = e.submit(greedy(prompt, 16, sink));
    run(e);
    alone = sink.at(id);
  }
  ASSERT_TRUE(alone.finished);
  EXPECT_EQ(alone.reason, "length");
  ASSERT_EQ(alone.ids.size(), 16u);
  // The streamed deltas add up to the decoded ids.
  EXPECT_EQ(alone.text, m->tokenizer->decode(alone.ids));
  ASSERT_GT(alone.text.size(), 8u);

  // Batched with 3 others (different prompts, one sampled): the same ids and logprobs, bit for bit.
  {
    Engine e(*m, cfg);
    Sink sink;
    std::vector<uint64_t> others;
    const char* texts[] = {"Hello", "Write a haiku about the sea.", "Tell me a joke about cats and dogs."};
    for (int i = 0; i < 3; ++i) {
      GenerationRequest r = greedy(encode(*m, texts[i]), 4 + 4 * i, sink);
      if (i == 1) r.params.temperature = 0.7f, r.params.seed = 3;
      others.push_back(e.submit(std::move(r)));
      if (i == 0) e.step();
    }
    uint64_t id = e.submit(greedy(prompt, 16, sink));
    run(e);
    EXPECT_EQ(sink.at(id).ids, alone.ids);
    EXPECT_EQ(sink.at(id).logprobs, alone.logprobs);
    for (uint64_t o : others) EXPECT_TRUE(sink.at(o).finished);
  }

  // A stop string taken from the middle of the text: generation ends before it, reason "stop".
  {
    const size_t cut = alone.text.size() / 2;
    const std::string stop = alone.text.substr(cut, 3);
    const size_t first = alone.text.find(stop);
    Engine e(*m, cfg);
    Sink sink;
    GenerationRequest r = greedy(prompt, 16, sink);
    r.params.stop = {stop};
    uint64_t id = e.submit(std::move(r));
    run(e);
    EXPECT_EQ(sink.at(id).reason, "stop");
    EXPECT_EQ(sink.at(id).text, alone.text.substr(0, first)) << "stop string '" << stop << "'";
    EXPECT_EQ(e.stats().kv_usage, 0.0);
  }

  // Without ignore_eos the chat turn ends at <|im_end|> (a stop id), with the same text before it.
  {
    Engine e(*m, cfg);
    Sink sink;
    GenerationRequest r = greedy(prompt, 40, sink);
    r.params.ignore_eos = false;
    uint64_t id = e.submit(std::move(r));
    run(e);
    const Out& o = sink.at(id);
    ASSERT_TRUE(o.finished);
    if (o.reason == "stop") {
      const auto& stops = m->tokenizer->stop_ids();
      EXPECT_NE(std::find(stops.begin(), stops.end(), o.ids.back()), stops.end());
    }
    // The same greedy path as with ignore_eos, up to where it stopped.
    const size_t n = std::min(o.ids.size(), alone.ids.size());
    EXPECT_EQ(std::vector<int32_t>(o.ids.begin(), o.ids.begin() + n),
              std::vector<int32_t>(alone.ids.begin(), alone.ids.begin() + n));
  }
}
