#include "sampling/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "sampling/vocab_kernels.h"

namespace llamarun {

namespace {

uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
}

// Strict total order: higher logit first, then lower id.
inline bool better(const SamplerWorkspace::Candidate& a, const SamplerWorkspace::Candidate& b) {
  return a.s > b.s || (a.s == b.s && a.id < b.id);
}

}  // namespace

void SamplerWorkspace::reserve(int vocab_size) {
  if (cand_.size() < static_cast<size_t>(vocab_size)) {
    cand_.resize(vocab_size);
    w_.resize(vocab_size);
    blocks_.resize((vocab_size + kBlock - 1) / kBlock);
    mass_.resize(kMassBuckets);
  }
}

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params), vocab_size_(vocab_size), seed_(0) {
  validate(params_, vocab_size_);
  // Only pay for the per-token counts when a penalty can change something.
  penalties_ = PenaltyTracker(vocab_size_, params_.has_penalties() ? params_.penalty_last_n : 0);
  logprobs_.top.reserve(params_.top_logprobs);
  reset({});
}

void Sampler::reset(std::span<const int32_t> prompt) {
  penalties_.reset(prompt);
  seed_ = params_.seed ? *params_.seed : random_seed();
  rng_.seed(seed_);
  logprobs_.chosen = {};
  logprobs_.top.clear();
}

void Sampler::accept(int32_t id) { penalties_.accept(id); }

void Sampler::process_logits(float* logits) const {
  for (const auto& [id, bias] : params_.logit_bias) logits[id] += bias;
  penalties_.apply(logits, params_.repetition_penalty, params_.presence_penalty, params_.frequency_penalty);
}

double Sampler::uniform01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(float* logits) { return sample(logits, own_ws_); }

int32_t Sampler::sample(float* logits, SamplerWorkspace& ws) {
  const bool want_lp = params_.wants_logprobs();
  float lse = 0.0f;
  if (want_lp) {
    ws.raw_.assign(logits, logits + vocab_size_);  // reuses capacity after the first call
    lse = log_sum_exp(logits, vocab_size_);
    top_logprobs(logits, vocab_size_, params_.top_logprobs, lse, logprobs_.top);
  }
  process_logits(logits);
  const int32_t id = params_.greedy() ? argmax(logits) : sample_random(logits, ws);
  if (want_lp) logprobs_.chosen = {id, ws.raw_[id] - lse};
  return id;
}

int32_t Sampler::argmax(const float* logits) const {
  const int32_t best = finite_argmax(logits, vocab_size_);  // lowest id on ties
  LLAMARUN_CHECK(best >= 0, "sampler: no finite logit among ", vocab_size_, " (all NaN or infinite)");
  return best;
}

namespace {

using Candidate = SamplerWorkspace::Candidate;

// Top-k by a single pass with a heap of k candidates whose front is the worst kept one; most tokens
// are rejected by one comparison. Writes the (unordered) finite top-k into c[0..k); returns how many
// were written (fewer than k when fewer logits are finite).
int select_top_k_heap(const float* logits, int vocab, int k, Candidate* c) {
  int n = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    const float l = logits[i];
    if (!std::isfinite(l)) continue;
    if (n < k) {
      c[n++] = {l, 0.0f, i};
      std::push_heap(c, c + n, better);
    } else if (l > c[0].s) {  // equal logit: the later (higher) id is worse, so '>' is exact
      std::pop_heap(c, c + n, better);
      c[n - 1] = {l, 0.0f, i};
      std::push_heap(c, c + n, better);
    }
  }
  return n;
}

// Reorders c[0..n) so that c[0..keep) is the smallest set of best candidates (by `better`) whose
// weights sum to at least target, and returns keep (n when the target is never reached).
// Expected O(n): a quickselect that recurses on the side holding the cut.
int select_nucleus(Candidate* c, int n, double target) {
  int lo = 0, hi = n;   // the cut lies in (lo, hi]
  double before = 0.0;  // weight of c[0..lo), all better than c[lo..hi)
  int budget = 64;      // guards against degenerate pivots: then sort the rest
  while (hi - lo > 32 && budget-- > 0) {
    // Median of three as pivot, moved to lo.
    const int mid = lo + (hi - lo) / 2;
    Candidate* a = &c[lo];
    Candidate* b = &c[mid];
    Candidate* d = &c[hi - 1];
    if (better(*b, *a)) std::swap(a, b);
    if (better(*d, *b)) std::swap(b, d);
    if (better(*b, *a)) std::swap(a, b);
    std::swap(c[lo], *b);
    const Candidate pv = c[lo];
    // Better than the pivot -> c[lo+1..m), worse -> c[m..hi).
    Candidate* m = std::partition(c + lo + 1, c + hi, [&](const Candidate& x) { return better(x, pv); });
    const int mi = static_cast<int>(m - c);
    // Pivot to its final place: c[lo..mi-1) better, c[mi-1] pivot, c[mi..hi) worse.
    std::swap(c[lo], c[mi - 1]);
    double mass = 0.0;
    for (int j = lo; j < mi - 1; ++j) mass += c[j].w;
    if (before + mass >= target) {
      hi = mi - 1;
    } else if (before + mass + pv.w >= target) {
      return mi;
    } else {
      before += mass + pv.w;
      lo = mi;
    }
  }
  std::sort(c + lo, c + hi, better);
  double cum = before;
  for (int j = lo; j < hi; ++j) {
    cum += c[j].w;
    if (cum >= target) return j + 1;
  }
  return hi;  // reached only through rounding (or hi == n: all tokens needed)
}

}  // namespace

namespace {

// Draws from w[0..n) (unnormalised, total z = sum of block_sums in order) by finding the block
// first, then the token inside it.
int32_t draw_dense(const float* w, const double* block_sums, int n, double z, double u) {
  const double r = u * z;
  const int nb = (n + kBlock - 1) / kBlock;
  double cum = 0.0;
  int b = 0;
  while (b < nb - 1 && !(r < cum + block_sums[b])) cum += block_sums[b++];
  const int begin = b * kBlock, end = std::min(n, begin + kBlock);
  int last_nonzero = -1;
  for (int i = begin; i < end; ++i) {
    if (w[i] <= 0.0f) continue;
    cum += w[i];
    last_nonzero = i;
    if (r < cum) return i;
  }
  if (last_nonzero >= 0) return last_nonzero;  // rounding at the end of the block
  for (int i = n - 1; i >= 0; --i)             // unreachable unless every block before was empty
    if (w[i] > 0.0f) return i;
  return 0;
}

// Draws the token where the running sum of the weights >= floor passes r (r below their total),
// finding the block first (vectorized masked sums), then the token inside it.
int32_t draw_at_least(const float* w, int n, float floor, double r) {
  double cum = 0.0;
  int32_t last = -1;
  for (int begin = 0; begin < n; begin += kBlock) {
    const int end = std::min(n, begin + kBlock);
    const double bs = sum_at_least(w + begin, end - begin, floor);
    if (!(r < cum + bs)) {
      cum += bs;
      continue;
    }
    for (int i = begin; i < end; ++i) {
      if (!(w[i] >= floor)) continue;
      cum += w[i];
      last = i;
      if (r < cum) return i;
    }
  }
  if (last >= 0) return last;  // rounding: r landed just past a block's own running sum
  for (int i = n - 1; i >= 0; --i)
    if (w[i] >= floor) return i;
  return 0;
}

// Sum of c[0..n).w in four interleaved double accumulators (a fixed order: deterministic).
double sum_weights(const Candidate* c, int n) {
  double a[4] = {};
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int l = 0; l < 4; ++l) a[l] += c[j + l].w;
  }
  for (; j < n; ++j) a[0] += c[j].w;
  return (a[0] + a[1]) + (a[2] + a[3]);
}

// Draws from the candidates c[0..n) with weights c[j].w summing to total.
int32_t draw_candidates(const Candidate* c, int n, double total, double u) {
  const double r = u * total;
  double cum = 0.0;
  for (int j = 0; j < n; ++j) {
    cum += c[j].w;
    if (r < cum) return c[j].id;
  }
  for (int j = n - 1; j > 0; --j)  // only through rounding
    if (c[j].w > 0.0f) return c[j].id;
  return c[0].id;
}

// Applies min-p then top-p to candidates c[0..n) (s = scaled logit, w = exp(s); the best has
// s = 0). Both keep a prefix of the ranking, so the result is the shorter prefix: min-p is a
// cheap filter (p / p_max = exp(s) >= min_p <=> s >= log(min_p)) and goes first; the top-p search
// then only runs when its cut lies inside what min-p kept. z is the mass of the whole (top-k)
// set, which top-p is relative to. Returns the new count and sets total to its mass.
int apply_min_p_top_p(Candidate* c, int n, double z, float min_p, float top_p, double& total) {
  total = 0.0;
  if (min_p > 0.0f) {
    const float thr = std::log(min_p);
    int m = 0;
    for (int j = 0; j < n; ++j) {
      if (c[j].s >= thr) {
        total += c[j].w;
        c[m++] = c[j];
      }
    }
    n = m;
  } else {
    total = sum_weights(c, n);
  }
  if (top_p < 1.0f) {
    const double target = static_cast<double>(top_p) * z;
    if (total >= target) {
      const int keep = select_nucleus(c, n, target);
      if (keep < n) {
        n = keep;
        total = sum_weights(c, n);
      }
    }
  }
  return n;
}

}  // namespace

int32_t Sampler::sample_random(const float* logits, SamplerWorkspace& ws) {
  ws.reserve(vocab_size_);
  Candidate* c = ws.cand_.data();
  const float t = params_.temperature;
  const float top_p = params_.top_p;
  const float min_p = params_.min_p;
  const int k = params_.top_k;

  if (k <= 0 || k >= vocab_size_) {
    // No top-k: dense weights over the whole vocabulary (vectorized).
    const float mx = finite_max(logits, vocab_size_);
    LLAMARUN_CHECK(mx > -std::numeric_limits<float>::infinity(), "sampler: no finite logit among ",
                   vocab_size_, " (all NaN or infinite)");
    float* w = ws.w_.data();
    const double z = exp_weights(logits, vocab_size_, mx, t, w, ws.blocks_.data());
    if (top_p >= 1.0f && min_p <= 0.0f) return draw_dense(w, ws.blocks_.data(), vocab_size_, z, uniform01());

    // Filters on: gather candidates from a prefix of the ranking that provably holds the result.
    // For top-p, a mass histogram gives the narrow weight bucket (the "edge") where the cumulative
    // mass reaches top_p * z: tokens above it are in the nucleus for sure, tokens below it are out.
    const double target = static_cast<double>(top_p) * z;
    float floor_w = 0.0f;  // weights below this are out
    float sure_w = 2.0f;   // weights at or above this are in (top-p alone)
    int edge = -1;
    if (top_p < 1.0f) {
      double* mass = ws.mass_.data();
      mass_histogram(w, vocab_size_, mass);
      double cum = 0.0;
      for (int b = 0; b < kMassBuckets; ++b) {
        cum += mass[b];
        if (cum >= target) {
          edge = b;
          floor_w = mass_bucket_floor(b);
          if (b > 0) sure_w = mass_bucket_floor(b - 1);
          break;
        }
      }
    }
    if (min_p <= 0.0f && edge >= 0) {
      // Top-p alone: every token above the edge bucket is in the nucleus (their mass, summed in
      // the same order as when the edge was found, is below target), tokens below it are out.
      // Only the edge bucket is gathered and ordered; the draw picks the sure set or the edge.
      double sure_mass = 0.0;
      for (int b = 0; b < edge; ++b) sure_mass += ws.mass_[b];
      // Edge test as one unsigned range check: a single, rarely taken branch.
      const uint32_t floor_bits = static_cast<uint32_t>(std::max(1, std::bit_cast<int32_t>(floor_w)));
      const uint32_t width = static_cast<uint32_t>(std::bit_cast<int32_t>(sure_w)) - floor_bits;
      int n_edge = 0;
      for (int32_t i = 0; i < vocab_size_; ++i) {
        if (std::bit_cast<uint32_t>(w[i]) - floor_bits < width) c[n_edge++] = {(logits[i] - mx) / t, w[i], i};
      }
      const int keep = select_nucleus(c, n_edge, target - sure_mass);
      const double edge_mass = sum_weights(c, keep);
      const double r = uniform01() * (sure_mass + edge_mass);
      if (r >= sure_mass && edge_mass > 0.0)
        return draw_candidates(c, keep, edge_mass, (r - sure_mass) / edge_mass);
      return draw_at_least(w, vocab_size_, sure_w, r);
    }

    // Min-p (possibly with top-p). Min-p keeps p / p_max >= min_p, i.e. (l - mx) / t >= log(min_p):
    // l >= mx + t * log(min_p) (exactly l == mx for min_p = 1). Both filters keep a prefix of the
    // ranking, so the result is the shorter one: gather the min-p set (above the top-p floor);
    // if its mass reaches target the nucleus is inside it, else it is the result.
    const float l_min = min_p > 0.0f ? mx + t * std::log(min_p) : -std::numeric_limits<float>::infinity();
    auto gather = [&](float floor) {
      // Branch-free (whether a token passes is unpredictable): store always, advance on a pass.
      // Weights are >= 0, so their bit patterns compare like the floats; floor_bits >= 1 skips 0.
      const int32_t floor_bits = std::max(1, std::bit_cast<int32_t>(floor));
      int n = 0;
      for (int32_t i = 0; i < vocab_size_; ++i) {
        c[n] = {0.0f, w[i], i};
        n += (std::bit_cast<int32_t>(w[i]) >= floor_bits) & (logits[i] >= l_min);
      }
      return n;
    };
    int n = gather(floor_w);
    double total = sum_weights(c, n);
    // Short of target: min-p is the binding filter, unless the floor (from the histogram) cut
    // tokens that min-p keeps, which only a rounding edge can cause: then regather without it.
    // (min_p >= floor_w: the min-p set lies wholly above the floor; the factor covers fast_expf.)
    if (top_p < 1.0f && total < target && floor_w > 0.0f && min_p < floor_w * 1.00001f) {
      n = gather(0.0f);
      total = sum_weights(c, n);
    }
    if (top_p < 1.0f && total >= target) {
      for (int j = 0; j < n; ++j) c[j].s = (logits[c[j].id] - mx) / t;
      const int keep = select_nucleus(c, n, target);
      if (keep < n) {
        n = keep;
        total = sum_weights(c, n);
      }
    }
    return draw_candidates(c, n, total, uniform01());
  }

  // Top-k: the k best finite logits (unordered) become the candidates.
  int n = 0;
  if (k <= kHeapTopKMax) {
    n = select_top_k_heap(logits, vocab_size_, k, c);
  } else {
    for (int32_t i = 0; i < vocab_size_; ++i) {
      const float l = logits[i];
      if (std::isfinite(l)) c[n++] = {l, 0.0f, i};
    }
    if (k < n) {
      std::nth_element(c, c + k, c + n, better);
      n = k;
    }
  }
  LLAMARUN_CHECK(n > 0, "sampler: no finite logit among ", vocab_size_, " (all NaN or infinite)");
  float mx = c[0].s;
  for (int j = 1; j < n; ++j) mx = std::max(mx, c[j].s);
  double z = 0.0;
  for (int j = 0; j < n; ++j) {
    const float s = (c[j].s - mx) / t;  // the best token gets s = 0, w = 1
    c[j].s = s;
    c[j].w = fast_expf(s);
    z += c[j].w;
  }
  double total = z;
  n = apply_min_p_top_p(c, n, z, min_p, top_p, total);
  return draw_candidates(c, n, total, uniform01());
}

}  // namespace llamarun
