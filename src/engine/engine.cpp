#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/clock.h"
#include "core/error.h"
#include "engine/scheduler.h"
#include "engine/step_model.h"
#include "engine/token_postprocessor.h"
#include "kv/block_allocator.h"
#include "kv/paged_kv_pool.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {

struct Request;

// One choice of a request: the scheduler's Sequence plus its sampling and text state.
struct SeqState {
  Sequence seq;
  Request* req = nullptr;
  int choice = 0;
  std::optional<Sampler> sampler;
  std::optional<TokenPostprocessor> post;
  int generated = 0;
  bool done = false;
};

struct Request {
  uint64_t id = 0;
  GenerationRequest req;
  std::vector<std::unique_ptr<SeqState>> seqs;
  int n_done = 0;
};

namespace {

// The CPU forward pass over a host PagedKVPool of f32 K / V. Logits of every row come back; the sampler
// picks tokens.
class CpuStepModel final : public StepModel {
 public:
  explicit CpuStepModel(LlamaModel& m) : m_(m) {}
  int init_kv(int block_size, int num_blocks, size_t kv_bytes) override {
    const LlamaConfig& mc = m_.config();
    const size_t per_block =
        PagedKVPool::bytes_per_block(mc.num_layers, mc.num_kv_heads, mc.head_dim, block_size);
    int nb = num_blocks;
    if (nb <= 0) {
      if (kv_bytes == 0) kv_bytes = size_t(1) << 30;
      const size_t want = kv_bytes / per_block;
      LLAMARUN_CHECK(want >= 1, "engine: kv_cache_bytes ", kv_bytes, " is less than one KV block (",
                     per_block, " bytes)");
      nb = int(std::min<size_t>(want, size_t(1) << 30));
    }
    try {
      pool_ = PagedKVPool(mc.num_layers, mc.num_kv_heads, mc.head_dim, block_size, nb);
    } catch (const std::bad_alloc&) {
      fail("engine: cannot allocate a KV cache of ", nb, " blocks (", double(per_block) * nb / (1 << 20),
           " MiB); lower kv_cache_bytes or num_blocks");
    }
    return nb;
  }
  void forward(const BatchInput& b, const uint8_t*, int32_t*, float* logits) override {
    m_.forward(b, pool_, logits);
  }
  bool device_argmax() const override { return false; }
  std::string name() const override { return "cpu"; }
  BackendStats backend_stats() const override {
    // The weights stay in the host's mmap: no load time, no device memory.
    BackendStats s;
    const LlamaWeights& w = m_.weights();
    auto bytes = [](const WeightView& v) { return v.row_bytes() * size_t(v.rows); };
    s.weight_bytes_per_token = bytes(w.lm_head) + bytes(w.out_norm);
    for (const LlamaLayerWeights& L : w.layers)
      s.weight_bytes_per_token += bytes(L.attn_norm) + bytes(L.wq) + bytes(L.wk) + bytes(L.wv) + bytes(L.wo) +
                                  bytes(L.ffn_norm) + bytes(L.w_gate) + bytes(L.w_up) + bytes(L.w_down);
    const LlamaConfig& c = m_.config();
    s.kv_bytes_per_position = 2 * size_t(c.num_layers) * c.num_kv_heads * c.head_dim * sizeof(float);
    return s;
  }

 private:
  LlamaModel& m_;
  PagedKVPool pool_;
};

// Plain greedy: the token is the argmax of the raw logits, and nothing but the token is needed.
bool plain_greedy(const SamplingParams& p) {
  return p.greedy() && !p.has_penalties() && p.logit_bias.empty() && !p.wants_logprobs();
}

}  // namespace

struct Engine::Impl {
  Model& model;
  EngineConfig cfg;
  int max_len = 0;
  int vocab = 0;
  std::unique_ptr<StepModel> backend;
  BlockAllocator alloc;
  std::optional<Scheduler> sched;

  // Shared with submitting threads.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Request>> incoming;
  std::vector<uint64_t> cancels;
  uint64_t next_id = 1;
  int queued = 0;      // requests submitted but not yet admitted by the scheduler (approximate)
  int unfinished = 0;  // requests submitted and not finished
  bool stopping = false;
  EngineStats stats;

  // Engine thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Request>> active;
  std::vector<std::unique_ptr<Request>> new_reqs;  // swapped with `incoming`
  std::vector<uint64_t> new_cancels;
  std::vector<uint64_t> done_ids;  // requests whose every choice finished
  BatchInput batch;
  std::vector<float> logits;         // [rows, vocab]
  std::vector<int32_t> row_ids;      // [rows] the backend's argmax (device_argmax backends)
  std::vector<uint8_t> want_logits;  // [rows] the row's sequence needs its logits on the host
  std::vector<int32_t> sample_row;   // per chunk: logits row or -1
  SamplerWorkspace ws;
  RequestOutput out;
  uint64_t steps = 0, prompt_tokens = 0, gen_tokens = 0, finished_reqs = 0;
  double t_sched = 0, t_model = 0, t_post = 0;

  std::thread thread;
  bool thread_stop = false;  // under mu
  // Raised by stop() when it stops waiting: the CPU forward polls it and abandons the step in flight.
  std::atomic<bool> abort_step{false};

  Impl(Model& m, const EngineConfig& c, std::unique_ptr<StepModel> b)
      : model(m), cfg(c), backend(std::move(b)) {
    if (!backend) {
      LLAMARUN_CHECK(m.llama, "engine: the model has no forward pass");
      backend = std::make_unique<CpuStepModel>(*m.llama);
    }
    const LlamaConfig& mc = m.cfg;
    vocab = mc.vocab_size;
    max_len = cfg.max_model_len > 0 ? std::min(cfg.max_model_len, mc.max_position) : mc.max_position;
    LLAMARUN_CHECK(cfg.block_size >= 1 && cfg.block_size <= 1024,
                   "engine: block_size must be in [1, 1024], got ", cfg.block_size);
    LLAMARUN_CHECK(cfg.max_batch_tokens >= 1, "engine: max_batch_tokens must be at least 1, got ",
                   cfg.max_batch_tokens);
    LLAMARUN_CHECK(cfg.max_num_seqs >= 1, "engine: max_num_seqs must be at least 1, got ", cfg.max_num_seqs);
    LLAMARUN_CHECK(cfg.max_queue >= 1, "engine: max_queue must be at least 1, got ", cfg.max_queue);
    const int nb = backend->init_kv(cfg.block_size, cfg.num_blocks, cfg.kv_cache_bytes);
    cfg.num_blocks = nb;
    alloc = BlockAllocator(nb, cfg.block_size, cfg.enable_prefix_caching);
    SchedulerConfig sc;
    sc.max_num_seqs = cfg.max_num_seqs;
    sc.max_batch_tokens = cfg.max_batch_tokens;
    sc.watermark_blocks = nb / 100;
    sched.emplace(sc, alloc);
    ws.reserve(vocab);
    batch.batch_invariant = cfg.batch_invariant;
    batch.abort = &abort_step;
  }

  int64_t capacity_tokens() const { return int64_t(cfg.num_blocks) * cfg.block_size; }

  void emit(SeqState& sc) {
    try {
      sc.req->req.on_output(out);
    } catch (...) {
      // A failing callback ends its request (as a disconnect would), never the engine.
      std::lock_guard<std::mutex> lk(mu);
      cancels.push_back(sc.req->id);
    }
  }

  // Ends a sequence: frees its blocks now and sends the final output (with `text` appended).
  void finish_seq(SeqState& sc, const char* reason, const std::string& error = {}) {
    if (sc.done) return;
    sched->finish(&sc.seq);
    sc.done = true;
    out.finished = true;
    out.finish_reason = reason;
    out.error = error;
    out.prompt_tokens = sc.seq.prompt_len;
    out.completion_tokens = sc.generated;
    out.cached_prompt_tokens = sc.seq.cached_prompt_tokens;
    emit(sc);
    if (++sc.req->n_done == int(sc.req->seqs.size())) {
      ++finished_reqs;
      done_ids.push_back(sc.req->id);
      std::lock_guard<std::mutex> lk(mu);
      --unfinished;
    }
  }

  void reset_out(SeqState& sc) {
    out.request_id = sc.req->id;
    out.choice = sc.choice;
    out.tokens.clear();
    out.finished = false;
    out.finish_reason.clear();
    out.error.clear();
    out.prompt_tokens = out.completion_tokens = out.cached_prompt_tokens = 0;
  }

  void cancel_request(Request& r, const char* reason, const std::string& error = {}) {
    for (auto& sc : r.seqs) {
      if (sc->done) continue;
      reset_out(*sc);
      finish_seq(*sc, reason, error);
    }
  }

  // Samples the sequence's next token and delivers it: stop ids, stop strings, max_tokens, context length.
  // device_id >= 0: the backend's argmax, used for plain greedy sequences (row_logits unused then).
  void accept_token(SeqState& sc, float* row_logits, int32_t device_id) {
    const SamplingParams& p = sc.req->req.params;
    reset_out(sc);
    const int32_t id = device_id >= 0 ? device_id : sc.sampler->sample(row_logits, ws);
    sc.sampler->accept(id);
    ++sc.generated;
    ++gen_tokens;
    TokenOutput& t = out.tokens.emplace_back();
    t.id = id;
    if (p.wants_logprobs()) {
      const SampleLogprobs& lp = sc.sampler->last_logprobs();
      t.logprob = lp.chosen;
      t.top = lp.top;
    }
    const char* reason = nullptr;
    TokenPostprocessor::Step st = sc.post->push(id);
    t.text = std::move(st.text);
    if (st.stop) reason = "stop";
    if (!reason && (sc.generated >= p.max_tokens || int(sc.seq.tokens.size()) + 1 > max_len))
      reason = "length";
    if (reason) {
      TokenPostprocessor::Step fin = sc.post->finish();
      t.text += fin.text;
      if (fin.stop) reason = "stop";
      finish_seq(sc, reason);
      return;
    }
    sc.seq.tokens.push_back(id);
    emit(sc);
  }

  void admit_new() {
    {
      std::lock_guard<std::mutex> lk(mu);
      new_reqs.swap(incoming);
      new_cancels.swap(cancels);
    }
    for (auto& r : new_reqs) {
      Request* rp = r.get();
      for (auto& sc : rp->seqs) sched->add(&sc->seq);
      active.emplace(rp->id, std::move(r));
    }
    new_reqs.clear();
    for (uint64_t id : new_cancels) {
      auto it = active.find(id);
      if (it != active.end()) cancel_request(*it->second, "cancelled");
    }
    new_cancels.clear();
  }

  // Frees the state of requests finished since the last call (outside the callbacks that ran).
  void drop_finished() {
    for (uint64_t id : done_ids) active.erase(id);
    done_ids.clear();
  }

  void update_stats() {
    std::lock_guard<std::mutex> lk(mu);
    stats.running = int(sched->num_running());
    queued = int(sched->num_waiting());
    stats.waiting = queued + int(incoming.size());
    stats.kv_usage = double(alloc.num_in_use()) / alloc.num_blocks();
    stats.prompt_tokens_total = prompt_tokens;
    stats.generation_tokens_total = gen_tokens;
    stats.preemptions_total = sched->preemptions();
    stats.prefix_cache_queries = sched->prefix_queries();
    stats.prefix_cache_hits = sched->prefix_hits();
    stats.steps_total = steps;
    stats.requests_finished_total = finished_reqs;
    stats.schedule_seconds = t_sched;
    stats.model_seconds = t_model;
    stats.postprocess_seconds = t_post;
    stats.backend_host_seconds = backend->host_prep_seconds();
  }

  // One engine iteration: schedule -> run -> postprocess. false when there was nothing to run.
  bool step() {
    const double t0 = now_seconds();
    const SchedulerOutput* so = schedule();
    if (!so) {
      update_stats();
      return false;
    }
    const double t1 = now_seconds();
    t_sched += t1 - t0;
    const bool ran = run(*so);
    const double t2 = now_seconds();
    t_model += t2 - t1;
    if (ran) postprocess(*so);
    t_post += now_seconds() - t2;
    update_stats();
    return true;
  }

  // Takes in new requests and cancellations, plans the step and fills `batch` with its tokens (one
  // sequence after another; a logits row for each chunk that samples). Null when there is no work.
  const SchedulerOutput* schedule() {
    admit_new();
    drop_finished();
    if (!sched->has_work()) return nullptr;
    const SchedulerOutput& so = sched->schedule();
    if (so.empty()) return nullptr;
    batch.clear();
    sample_row.clear();
    want_logits.clear();
    int rows = 0;
    for (size_t i = 0; i < so.chunks.size(); ++i) {
      const ScheduledChunk& c = so.chunks[i];
      batch.block_tables.emplace_back(c.seq->blocks.data(), c.seq->blocks.size());
      for (int j = 0; j < c.n; ++j) {
        batch.tokens.push_back(c.seq->tokens[c.start + j]);
        batch.positions.push_back(c.start + j);
        batch.seq_index.push_back(int32_t(i));
      }
      if (c.sample) {
        batch.logit_rows.push_back(batch.size() - 1);
        want_logits.push_back(plain_greedy(c.seq->owner->req->req.params) ? 0 : 1);
        sample_row.push_back(rows++);
      } else {
        sample_row.push_back(-1);
      }
      if (c.seq->num_computed < c.seq->prompt_len)
        prompt_tokens += std::min(c.start + c.n, c.seq->prompt_len) - c.start;
    }
    if (logits.size() < size_t(rows) * vocab) logits.resize(size_t(rows) * vocab);
    if (row_ids.size() < size_t(rows)) row_ids.resize(rows);
    ++steps;
    return &so;
  }

  // Runs the batch on the backend. On failure every sequence of the step ends ("cancelled" when the
  // pass was aborted by stop()'s deadline, else "error" with the message) and false comes back.
  bool run(const SchedulerOutput& so) {
    const char* reason = "error";
    std::string error;
    try {
      backend->forward(batch, want_logits.data(), row_ids.data(), logits.data());
      return true;
    } catch (const ForwardAborted&) {
      reason = "cancelled";
    } catch (const std::exception& e) {
      error = e.what();
    }
    for (const ScheduledChunk& c : so.chunks) {
      reset_out(*c.seq->owner);
      finish_seq(*c.seq->owner, reason, error);
    }
    return false;
  }

  // Advances every chunk, then samples and delivers the token of each chunk that asked for one.
  void postprocess(const SchedulerOutput& so) {
    // Advance every chunk before any sequence finishes (finishing releases blocks).
    for (const ScheduledChunk& c : so.chunks) sched->on_computed(c);
    const bool dev_ids = backend->device_argmax();
    for (size_t i = 0; i < so.chunks.size(); ++i) {
      const int r = sample_row[i];
      if (r < 0) continue;
      SeqState& sc = *so.chunks[i].seq->owner;
      try {
        accept_token(sc, &logits[size_t(r) * vocab], dev_ids && !want_logits[r] ? row_ids[r] : -1);
      } catch (const std::exception& e) {
        reset_out(sc);
        finish_seq(sc, "error", e.what());
      }
    }
  }

  bool idle() const {
    std::lock_guard<std::mutex> lk(mu);
    return unfinished == 0;
  }

  void loop() {
    for (;;) {
      {
        std::lock_guard<std::mutex> lk(mu);
        if (thread_stop) return;
      }
      bool worked = false;
      try {
        worked = step();
      } catch (const std::exception&) {
        worked = false;  // step() reports per-sequence errors itself; never let the thread die
      }
      if (!worked) {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait_for(lk, std::chrono::milliseconds(20),
                    [&] { return thread_stop || !incoming.empty() || !cancels.empty(); });
      }
    }
  }
};

Engine::Engine(Model& model, const EngineConfig& cfg, std::unique_ptr<StepModel> backend)
    : impl_(std::make_unique<Impl>(model, cfg, std::move(backend))) {}

Engine::~Engine() {
  try {
    stop(false);
  } catch (...) {
  }
}

uint64_t Engine::submit(GenerationRequest req) {
  Impl& I = *impl_;
  LLAMARUN_CHECK(req.on_output, "request has no output callback");
  LLAMARUN_CHECK(req.n >= 1 && req.n <= 128, "n must be in [1, 128], got ", req.n);
  if (req.prompt.empty()) fail("the prompt is empty (no tokens)");
  validate(req.params, I.vocab);
  for (size_t i = 0; i < req.prompt.size(); ++i)
    LLAMARUN_CHECK(req.prompt[i] >= 0 && req.prompt[i] < I.vocab, "prompt token ", req.prompt[i],
                   " at index ", i, " is outside the vocabulary (size ", I.vocab, ")");
  const int64_t total = int64_t(req.prompt.size()) + req.params.max_tokens;
  if (total > I.max_len)
    fail("the prompt has ", req.prompt.size(), " tokens and max_tokens is ", req.params.max_tokens, ": ",
         total, " tokens exceed the model's context length of ", I.max_len);
  if (total > I.capacity_tokens())
    fail("the prompt has ", req.prompt.size(), " tokens and max_tokens is ", req.params.max_tokens, ": ",
         total, " tokens exceed the KV cache capacity of ", I.capacity_tokens(), " tokens");

  auto r = std::make_unique<Request>();
  const Tokenizer* tok = I.model.tokenizer.get();
  for (int i = 0; i < req.n; ++i) {
    auto sc = std::make_unique<SeqState>();
    sc->req = r.get();
    sc->seq.owner = sc.get();
    sc->choice = i;
    SamplingParams p = req.params;
    if (p.seed) p.seed = *p.seed + uint64_t(i);
    sc->sampler.emplace(p, I.vocab);
    sc->sampler->reset(req.prompt);
    sc->post.emplace(tok, I.model.cfg.eos_ids, p);
    sc->seq.tokens.reserve(total);
    sc->seq.tokens = req.prompt;
    sc->seq.prompt_len = int(req.prompt.size());
    r->seqs.push_back(std::move(sc));
  }
  r->req = std::move(req);
  std::lock_guard<std::mutex> lk(I.mu);
  if (I.stopping) fail("the engine is shutting down");
  if (I.queued + int(I.incoming.size()) >= I.cfg.max_queue) throw QueueFull();
  r->id = I.next_id++;
  for (auto& sc : r->seqs) sc->seq.id = r->id;
  const uint64_t id = r->id;
  I.incoming.push_back(std::move(r));
  ++I.unfinished;
  I.cv.notify_all();
  return id;
}

void Engine::cancel(uint64_t request_id) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->cancels.push_back(request_id);
  impl_->cv.notify_all();
}

bool Engine::step() { return impl_->step(); }

void Engine::start() {
  Impl& I = *impl_;
  if (I.thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(I.mu);
    I.thread_stop = false;
    I.stopping = false;
  }
  I.thread = std::thread([&I] { I.loop(); });
}

void Engine::stop(bool drain, double timeout_s) {
  Impl& I = *impl_;
  {
    std::lock_guard<std::mutex> lk(I.mu);
    I.stopping = true;
  }
  if (drain && I.thread.joinable()) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (!I.idle() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (I.thread.joinable()) {
    {
      std::lock_guard<std::mutex> lk(I.mu);
      I.thread_stop = true;
      I.cv.notify_all();
    }
    // The deadline passed (or no drain): a forward pass still running is abandoned between layers, so
    // the thread ends within one layer's time; that step's sequences end "cancelled".
    I.abort_step.store(true);
    I.thread.join();
    I.abort_step.store(false);
  }
  // Whatever is left is cancelled (on the caller's thread: the engine thread is gone).
  I.admit_new();
  for (auto& [id, r] : I.active) I.cancel_request(*r, "cancelled");
  I.drop_finished();
  I.update_stats();
  std::lock_guard<std::mutex> lk(I.mu);
  I.stopping = false;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->stats;
}

const Model& Engine::model() const { return impl_->model; }
std::string Engine::backend_name() const { return impl_->backend->name(); }
BackendStats Engine::backend_stats() const { return impl_->backend->backend_stats(); }
int Engine::num_kv_blocks() const { return impl_->cfg.num_blocks; }
int Engine::max_model_len() const { return impl_->max_len; }

}  // namespace llamarun
