#include "engine/scheduler.h"

#include <algorithm>
#include <span>

#include "core/error.h"

namespace llamarun {

Scheduler::Scheduler(const SchedulerConfig& cfg, BlockAllocator& blocks) : cfg_(cfg), blocks_(blocks) {
  LLAMARUN_CHECK(cfg.max_batch_tokens >= 1, "scheduler: max_batch_tokens must be at least 1, got ",
                 cfg.max_batch_tokens);
  LLAMARUN_CHECK(cfg.max_num_seqs >= 1, "scheduler: max_num_seqs must be at least 1, got ", cfg.max_num_seqs);
  running_.reserve(cfg.max_num_seqs);
  out_.chunks.reserve(cfg.max_num_seqs);
}

void Scheduler::add(Sequence* s) {
  LLAMARUN_CHECK(!s->tokens.empty(), "scheduler: sequence ", s->id, " has no tokens");
  s->status = SeqStatus::kWaiting;
  waiting_.push_back(s);
}

void Scheduler::release_blocks(Sequence* s) {
  // Release in reverse so that a prefix's tail blocks are evicted before its head blocks.
  for (auto it = s->blocks.rbegin(); it != s->blocks.rend(); ++it) blocks_.release(*it);
  s->blocks.clear();
  s->hashes.clear();
  s->num_computed = 0;
}

void Scheduler::finish(Sequence* s) {
  if (s->status == SeqStatus::kFinished) return;
  if (s->status == SeqStatus::kRunning) {
    auto it = std::find(running_.begin(), running_.end(), s);
    if (it != running_.end()) running_.erase(it);
  } else {
    auto it = std::find(waiting_.begin(), waiting_.end(), s);
    if (it != waiting_.end()) waiting_.erase(it);
  }
  release_blocks(s);
  s->status = SeqStatus::kFinished;
}

bool Scheduler::ensure_blocks(Sequence* s, int n_tokens) {
  const int bs = blocks_.block_size();
  const int need = (n_tokens + bs - 1) / bs - int(s->blocks.size());
  if (need <= 0) return true;
  if (need > blocks_.num_available()) return false;
  for (int i = 0; i < need; ++i) s->blocks.push_back(blocks_.allocate());
  return true;
}

void Scheduler::preempt(Sequence* s) {
  auto it = std::find(running_.begin(), running_.end(), s);
  if (it != running_.end()) running_.erase(it);
  release_blocks(s);
  s->status = SeqStatus::kWaiting;
  ++s->preemptions;
  ++preemptions_;
  waiting_.push_front(s);
  out_.preempted.push_back(s);
}

void Scheduler::match_prefix(Sequence* s) {
  // Only full blocks strictly before the last token: at least one token is computed for its logits.
  const int bs = blocks_.block_size();
  const int max_blocks = (int(s->tokens.size()) - 1) / bs;
  uint64_t parent = 0;
  for (int j = 0; j < max_blocks; ++j) {
    std::span<const int32_t> toks(s->tokens.data() + size_t(j) * bs, size_t(bs));
    const uint64_t h = hash_block_tokens(parent, toks);
    const int32_t b = blocks_.lookup(h, parent, toks);
    if (b < 0) break;
    s->blocks.push_back(b);
    s->hashes.push_back(h);
    parent = h;
  }
  s->num_computed = int(s->blocks.size()) * bs;
}

const SchedulerOutput& Scheduler::schedule() {
  out_.chunks.clear();
  out_.preempted.clear();
  int budget = cfg_.max_batch_tokens;

  int decodes_left = 0;
  for (Sequence* s : running_) decodes_left += int(s->tokens.size()) - s->num_computed == 1;

  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* s = running_[i];
    const int need = int(s->tokens.size()) - s->num_computed;
    if (need <= 0) continue;  // nothing new (the engine had no token to append)
    int n;
    if (need == 1) {
      n = 1;
      --decodes_left;
    } else {
      n = std::min(need, budget - decodes_left);
      if (n <= 0) continue;
    }
    bool self_preempted = false;
    while (!ensure_blocks(s, s->num_computed + n)) {
      Sequence* victim = running_.back();
      if (int(victim->tokens.size()) - victim->num_computed == 1 && victim != s) --decodes_left;
      preempt(victim);
      if (victim == s) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;  // everything newer was preempted already
    out_.chunks.push_back({s, s->num_computed, n, s->num_computed + n == int(s->tokens.size())});
    budget -= n;
  }

  if (out_.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 && int(running_.size()) < cfg_.max_num_seqs) {
      Sequence* s = waiting_.front();
      const bool first = !s->admitted_once;
      if (s->blocks.empty()) match_prefix(s);
      const int need = int(s->tokens.size()) - s->num_computed;
      const int n = std::min(need, budget);
      const int bs = blocks_.block_size();
      const int new_blocks = (s->num_computed + n + bs - 1) / bs - int(s->blocks.size());
      const int reserve = running_.empty() ? 0 : cfg_.watermark_blocks;
      if (new_blocks > blocks_.num_available() - reserve) {
        release_blocks(s);  // give back the prefix-cache hits; retried next step
        break;
      }
      ensure_blocks(s, s->num_computed + n);
      if (first) {
        s->admitted_once = true;
        s->cached_prompt_tokens = std::min(s->num_computed, s->prompt_len);
        prefix_queries_ += s->prompt_len;
        prefix_hits_ += s->cached_prompt_tokens;
      }
      waiting_.pop_front();
      s->status = SeqStatus::kRunning;
      running_.push_back(s);
      out_.chunks.push_back({s, s->num_computed, n, s->num_computed + n == int(s->tokens.size())});
      budget -= n;
    }
  }
  out_.num_tokens = cfg_.max_batch_tokens - budget;
  return out_;
}

void Scheduler::on_computed(const ScheduledChunk& c) {
  Sequence* s = c.seq;
  LLAMARUN_CHECK(c.start == s->num_computed, "scheduler: chunk of sequence ", s->id, " starts at ", c.start,
                 " but ", s->num_computed, " tokens are computed");
  s->num_computed += c.n;
  if (!blocks_.prefix_cache_enabled()) return;
  const int bs = blocks_.block_size();
  const int full = s->num_computed / bs;
  for (int j = int(s->hashes.size()); j < full; ++j) {
    const uint64_t parent = j ? s->hashes[j - 1] : 0;
    std::span<const int32_t> toks(s->tokens.data() + size_t(j) * bs, size_t(bs));
    const uint64_t h = hash_block_tokens(parent, toks);
    blocks_.register_full(s->blocks[j], h, parent, toks);
    s->hashes.push_back(h);
  }
}

}  // namespace llamarun
