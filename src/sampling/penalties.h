// Token history for repetition / presence / frequency penalties, with an optional sliding window.
// Keeps per-token counts so that applying the penalties touches only the distinct tokens of the
// window, never the whole vocabulary.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llamarun {

class PenaltyTracker {
 public:
  PenaltyTracker() = default;
  // window: -1 = all tokens, 0 = disabled (nothing is recorded), n > 0 = last n tokens of
  // prompt + generated. Allocates three int32 arrays of vocab_size entries (unless disabled).
  PenaltyTracker(int vocab_size, int window);

  // Forgets everything and records the prompt (ids must be in [0, vocab)). Throws Error otherwise.
  void reset(std::span<const int32_t> prompt);
  // Records one generated token (id in [0, vocab)). Throws Error otherwise.
  void accept(int32_t id);

  // logits: [vocab]. For each distinct token t in the window:
  //   repetition (HF):    logits[t] = logits[t] > 0 ? logits[t] / repetition : logits[t] * repetition
  //   then, when t was generated c > 0 times inside the window (OpenAI):
  //                       logits[t] -= frequency * c + presence
  void apply(float* logits, float repetition, float presence, float frequency) const;

  // Counts inside the window (for tests and debugging). 0 when disabled.
  int count_all(int32_t id) const { return enabled() ? count_all_[id] : 0; }
  int count_generated(int32_t id) const { return enabled() ? count_gen_[id] : 0; }
  int distinct() const { return static_cast<int>(active_.size()); }
  bool enabled() const { return window_ != 0 && vocab_size_ > 0; }

 private:
  void push(int32_t id, bool generated);
  void evict_oldest();
  void check_id(int32_t id, const char* what, size_t pos) const;

  int vocab_size_ = 0;
  int window_ = 0;
  // Every recorded token in order, with bit 31 set when it was generated. Only kept when window > 0.
  std::vector<uint32_t> history_;
  size_t n_generated_ = 0;          // tokens accepted since reset (for error messages)
  size_t window_begin_ = 0;         // index in history_ of the oldest token inside the window
  std::vector<int32_t> count_all_;  // [vocab] occurrences inside the window, prompt + generated
  std::vector<int32_t> count_gen_;  // [vocab] occurrences inside the window, generated only
  std::vector<int32_t> slot_;       // [vocab] index into active_, or -1
  std::vector<int32_t> active_;     // distinct ids with count_all_ > 0, in no particular order
};

}  // namespace llamarun
