#include "sampling/penalties.h"

#include "core/error.h"

namespace llamarun {

namespace {
constexpr uint32_t kGeneratedBit = 0x80000000u;
}

PenaltyTracker::PenaltyTracker(int vocab_size, int window) : vocab_size_(vocab_size), window_(window) {
  LLAMARUN_CHECK(vocab_size > 0, "PenaltyTracker: vocab_size must be > 0 (got ", vocab_size, ")");
  LLAMARUN_CHECK(window >= -1, "PenaltyTracker: window must be >= -1 (got ", window, ")");
  if (!enabled()) return;
  count_all_.assign(vocab_size, 0);
  count_gen_.assign(vocab_size, 0);
  slot_.assign(vocab_size, -1);
}

void PenaltyTracker::check_id(int32_t id, const char* what, size_t pos) const {
  if (id < 0 || id >= vocab_size_) {
    fail("sampler: ", what, " token id ", id, " (position ", pos, ") is outside the vocabulary [0, ",
         vocab_size_, ")");
  }
}

void PenaltyTracker::reset(std::span<const int32_t> prompt) {
  n_generated_ = 0;
  if (!enabled()) {
    for (size_t i = 0; i < prompt.size(); ++i) check_id(prompt[i], "prompt", i);
    return;
  }
  for (int32_t id : active_) {
    count_all_[id] = 0;
    count_gen_[id] = 0;
    slot_[id] = -1;
  }
  active_.clear();
  history_.clear();
  window_begin_ = 0;
  for (size_t i = 0; i < prompt.size(); ++i) check_id(prompt[i], "prompt", i);
  // With a window only the last `window_` prompt tokens can matter.
  size_t start = 0;
  if (window_ > 0 && prompt.size() > static_cast<size_t>(window_)) start = prompt.size() - window_;
  for (size_t i = start; i < prompt.size(); ++i) push(prompt[i], false);
}

void PenaltyTracker::accept(int32_t id) {
  check_id(id, "generated", n_generated_);
  ++n_generated_;
  if (!enabled()) return;
  push(id, true);
}

void PenaltyTracker::push(int32_t id, bool generated) {
  if (count_all_[id]++ == 0) {
    slot_[id] = static_cast<int32_t>(active_.size());
    active_.push_back(id);
  }
  if (generated) ++count_gen_[id];
  if (window_ > 0) {
    history_.push_back(static_cast<uint32_t>(id) | (generated ? kGeneratedBit : 0u));
    if (history_.size() - window_begin_ > static_cast<size_t>(window_)) evict_oldest();
    // Drop the evicted prefix now and then so the history does not grow without bound.
    if (window_begin_ > 4096 && window_begin_ * 2 > history_.size()) {
      history_.erase(history_.begin(), history_.begin() + static_cast<ptrdiff_t>(window_begin_));
      window_begin_ = 0;
    }
  }
}

void PenaltyTracker::evict_oldest() {
  const uint32_t e = history_[window_begin_++];
  const auto id = static_cast<int32_t>(e & ~kGeneratedBit);
  if (e & kGeneratedBit) --count_gen_[id];
  if (--count_all_[id] == 0) {
    // Swap-remove from active_.
    const int32_t s = slot_[id];
    const int32_t last = active_.back();
    active_[s] = last;
    slot_[last] = s;
    active_.pop_back();
    slot_[id] = -1;
  }
}

void PenaltyTracker::apply(float* logits, float repetition, float presence, float frequency) const {
  if (!enabled()) return;
  const bool rep = repetition != 1.0f;
  const bool additive = presence != 0.0f || frequency != 0.0f;
  for (int32_t id : active_) {
    float l = logits[id];
    if (rep) l = l > 0.0f ? l / repetition : l * repetition;
    const int c = count_gen_[id];
    if (additive && c > 0) l -= frequency * static_cast<float>(c) + presence;
    logits[id] = l;
  }
}

}  // namespace llamarun
