// Per-sequence sampler: logits processors (logit_bias, penalties) then greedy or seeded random
// sampling with temperature / top-k / top-p / min-p. One Sampler per sequence; not thread-safe.
//
//   Sampler s(params, vocab);      // validates params (throws Error)
//   s.reset(prompt_ids);
//   loop: id = s.sample(logits);   // logits: [vocab] floats of the last position, modified in place
//         s.accept(id);            // record the token the sequence actually continues with
//
// Cost per call is O(vocab) on every path, without a full sort: greedy is one argmax pass; plain
// temperature sampling is max + exp (vectorized) + a block-wise draw; top-k <= 1024 keeps a heap of
// k in one pass (nth_element above that); top-p alone finds the cut with a mass histogram and
// orders only the tokens of the one bucket it falls in; min-p is a threshold on the logits.
// Nothing allocates after the first call (the workspace grows once).
// Memory: the workspace is ~20 bytes x vocab (2.5 MB at 128k); with penalties on, the Sampler also
// keeps 12 bytes x vocab of counts. Engines running many sequences should share one workspace per
// thread through sample(logits, ws).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "sampling/logprobs.h"
#include "sampling/penalties.h"
#include "sampling/sampling_params.h"

namespace llamarun {

// Scratch memory for sample(): about 16 bytes x vocab (+ 4 with logprobs). A Sampler owns one,
// allocated on first use; an engine sampling many sequences on one thread can share one instead.
class SamplerWorkspace {
 public:
  struct Candidate {
    float s;     // processed logit; after top-k: (logit - max) / temperature
    float w;     // exp(s): unnormalised probability
    int32_t id;  // token id
  };
  void reserve(int vocab_size);

 private:
  friend class Sampler;
  std::vector<Candidate> cand_;  // [vocab]
  std::vector<float> w_;         // [vocab] dense unnormalised probabilities (no top-k)
  std::vector<double> blocks_;   // [ceil(vocab / kBlock)] block sums of w_
  std::vector<double> mass_;     // [kMassBuckets] mass histogram of w_ (top-p without top-k)
  std::vector<float> raw_;       // [vocab] copy of the raw logits, only when logprobs are requested
};

class Sampler {
 public:
  // Validates params against vocab_size (throws Error naming the bad parameter).
  Sampler(const SamplingParams& params, int vocab_size);

  // Starts a new sequence: records the prompt for the repetition penalty (ids must be in the
  // vocabulary, else Error) and re-seeds the generator (same seed -> same draws again).
  void reset(std::span<const int32_t> prompt);

  // logits: [vocab_size] raw model logits for the next position. Returns the sampled id.
  // On return, logits holds the processed values (logit_bias and penalties applied; temperature and
  // filtering are NOT written back). NaN and +-inf logits are never chosen; throws Error when no
  // logit is finite. Does not record the token: call accept().
  int32_t sample(float* logits);
  int32_t sample(float* logits, SamplerWorkspace& ws);

  // The logit processors alone (logit_bias, then repetition, then frequency/presence), in place.
  void process_logits(float* logits) const;

  // Records a generated token (id in the vocabulary, else Error).
  void accept(int32_t id);

  // Log-probabilities of the last sample() call, when params.wants_logprobs() (see logprobs.h for
  // the convention: log_softmax of the raw logits). Empty (chosen.id == -1) otherwise.
  const SampleLogprobs& last_logprobs() const { return logprobs_; }

  const SamplingParams& params() const { return params_; }
  int vocab_size() const { return vocab_size_; }
  // The seed in use (params.seed, or the one drawn from std::random_device).
  uint64_t seed() const { return seed_; }

 private:
  // top_k up to this uses a one-pass heap; larger values use nth_element over all candidates.
  static constexpr int kHeapTopKMax = 1024;

  int32_t argmax(const float* logits) const;
  int32_t sample_random(const float* logits, SamplerWorkspace& ws);
  double uniform01();  // [0, 1), 53 random bits

  SamplingParams params_;
  int vocab_size_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  PenaltyTracker penalties_;
  SamplerWorkspace own_ws_;
  SampleLogprobs logprobs_;
};

}  // namespace llamarun
