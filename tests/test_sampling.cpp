// Tests for src/sampling: parameter validation, logit processors (expected values computed here from
// the formulas, by hand), greedy and random sampling (statistical checks against a softmax computed
// here in double precision), raw logprobs, and stop-string matching.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "sampling/logprobs.h"
#include "sampling/penalties.h"
#include "sampling/sampler.h"
#include "sampling/sampling_params.h"
#include "sampling/stop_matcher.h"
#include "sampling/vocab_kernels.h"

using namespace llamarun;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Expects validate() to throw an Error whose message contains `needle`.
void expect_rejected(const SamplingParams& p, const std::string& needle, int vocab = 100) {
  try {
    validate(p, vocab);
    ADD_FAILURE() << "validate accepted a bad value; expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

std::vector<float> random_logits(int n, std::mt19937& rng, float scale = 3.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

int ref_argmax(const std::vector<float>& v) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(v.size()); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// Softmax of logits / t in double, restricted to `keep` (others 0).
std::vector<double> ref_softmax(const std::vector<float>& logits, double t, const std::vector<bool>& keep) {
  double mx = -1e300;
  for (size_t i = 0; i < logits.size(); ++i)
    if (keep[i]) mx = std::max(mx, static_cast<double>(logits[i]));
  std::vector<double> p(logits.size(), 0.0);
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!keep[i]) continue;
    p[i] = std::exp((logits[i] - mx) / t);
    z += p[i];
  }
  for (auto& x : p) x /= z;
  return p;
}

// Draws `draws` samples (fresh copy of the logits each time) and returns the counts per id.
std::vector<int> histogram(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> buf(logits.size());
  for (int d = 0; d < draws; ++d) {
    buf = logits;
    ++counts[s.sample(buf.data())];
  }
  return counts;
}

// Pearson chi-square statistic of observed counts vs expected probabilities; ids with expected
// probability 0 must have no counts (checked separately by the callers via EXPECT).
double chi_square(const std::vector<int>& counts, const std::vector<double>& p, int draws) {
  double chi2 = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) continue;
    const double e = p[i] * draws;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi2;
}

// Chi-square critical values at significance 1e-4 for 1..6 degrees of freedom (tables).
double chi2_crit(int dof) {
  static const double kCrit[] = {0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86};
  return kCrit[dof];
}

}  // namespace

// ---------------------------------------------------------------- validation

TEST(SamplingValidate, DefaultsAndEdgesAreAccepted) {
  SamplingParams p;
  EXPECT_NO_THROW(validate(p, 100));
  p.temperature = 0.0f;
  p.top_k = -1;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.repetition_penalty = 0.01f;
  p.penalty_last_n = 0;
  p.max_tokens = 1;
  p.logit_bias = {{0, -100.0f}, {99, 100.0f}};
  p.stop = std::vector<std::string>(16, "x");
  p.stop[0] = "\xe4\xb8\x96\xe7\x95\x8c";  // 世界
  p.top_logprobs = 20;
  EXPECT_NO_THROW(validate(p, 100));
  p.top_k = 1000000;  // larger than the vocabulary acts as off
  EXPECT_NO_THROW(validate(p, 100));
}

TEST(SamplingValidate, RejectsEachBadValueNamingTheParameter) {
  auto with = [](auto f) {
    SamplingParams p;
    f(p);
    return p;
  };
  for (float t : {-0.5f, kNaN, kInf, -kInf})
    expect_rejected(with([&](auto& p) { p.temperature = t; }), "temperature");
  for (float v : {0.0f, -0.1f, 1.0001f, kNaN, kInf})
    expect_rejected(with([&](auto& p) { p.top_p = v; }), "top_p");
  for (int k : {-2, -100}) expect_rejected(with([&](auto& p) { p.top_k = k; }), "top_k");
  for (float v : {-0.01f, 1.01f, kNaN}) expect_rejected(with([&](auto& p) { p.min_p = v; }), "min_p");
  for (float v : {0.0f, -1.0f, kNaN, kInf})
    expect_rejected(with([&](auto& p) { p.repetition_penalty = v; }), "repetition_penalty");
  for (float v : {2.01f, -2.5f, kNaN, kInf}) {
    expect_rejected(with([&](auto& p) { p.presence_penalty = v; }), "presence_penalty");
    expect_rejected(with([&](auto& p) { p.frequency_penalty = v; }), "frequency_penalty");
  }
  expect_rejected(with([](auto& p) { p.penalty_last_n = -2; }), "penalty_last_n");
  for (int m : {0, -1, std::numeric_limits<int>::min()})
    expect_rejected(with([&](auto& p) { p.max_tokens = m; }), "max_tokens");
  expect_rejected(with([](auto& p) { p.stop = std::vector<std::string>(17, "x"); }), "stop");
  expect_rejected(with([](auto& p) { p.stop = std::vector<std::string>(5000, "x"); }), "at most 16");
  expect_rejected(with([](auto& p) { p.stop = {"ok", ""}; }), "stop[1] is an empty string");
  expect_rejected(with([](auto& p) { p.stop = {"\xff\xfe"}; }), "stop[0] is not valid UTF-8");
  expect_rejected(with([](auto& p) { p.stop = {"a\xe4\xb8"}; }), "not valid UTF-8");  // truncated 世
  expect_rejected(with([](auto& p) { p.stop = {std::string(1025, 'a')}; }), "stop[0] is 1025 bytes");
  expect_rejected(with([](auto& p) { p.logit_bias = {{-1, 1.0f}}; }), "logit_bias token id -1");
  expect_rejected(with([](auto& p) { p.logit_bias = {{100, 1.0f}}; }), "logit_bias token id 100");
  for (float b : {100.5f, -101.0f, kNaN, kInf})
    expect_rejected(with([&](auto& p) { p.logit_bias = {{5, b}}; }), "logit_bias for token 5");
  for (int n : {-1, 21}) expect_rejected(with([&](auto& p) { p.top_logprobs = n; }), "top_logprobs");
  EXPECT_THROW(validate(SamplingParams{}, 0), Error);
}

TEST(SamplingValidate, SamplerConstructorValidates) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler(p, 10), Error);
  p = {};
  p.logit_bias = {{10, 1.0f}};
  EXPECT_THROW(Sampler(p, 10), Error);
  EXPECT_NO_THROW(Sampler(p, 11));
}

// ---------------------------------------------------------------- greedy

TEST(SamplingGreedy, PicksArgmaxAndLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p, 6);
  std::vector<float> l = {0.1f, 2.0f, -3.0f, 1.9f, 0.0f, -1.0f};
  EXPECT_EQ(s.sample(l.data()), 1);
  l = {0.5f, 3.0f, 3.0f, -1.0f, 3.0f, 2.9999f};
  EXPECT_EQ(s.sample(l.data()), 1);
  l = {kNaN, -kInf, 1.0f, kNaN, 1.0f, kInf};  // NaN and inf are never chosen
  EXPECT_EQ(s.sample(l.data()), 2);
  l = {-kInf, -kInf, kNaN, -kInf, kNaN, -kInf};
  EXPECT_THROW(s.sample(l.data()), Error);

  std::mt19937 rng(7);
  Sampler big(p, 1000);
  for (int trial = 0; trial < 50; ++trial) {
    auto v = random_logits(1000, rng);
    const int expect = ref_argmax(v);
    EXPECT_EQ(big.sample(v.data()), expect);
  }
}

TEST(SamplingGreedy, TopK1TinyTopPAndMinP1EqualGreedyAtAnyTemperature) {
  std::mt19937 rng(11);
  for (float t : {0.05f, 0.7f, 1.0f, 3.0f, 100.0f}) {
    SamplingParams pk, pp, pm;
    pk.temperature = pp.temperature = pm.temperature = t;
    pk.top_k = 1;
    pp.top_p = 1e-6f;
    pm.min_p = 1.0f;
    pk.seed = pp.seed = pm.seed = 1234;
    Sampler sk(pk, 2000), sp(pp, 2000), sm(pm, 2000);
    for (int trial = 0; trial < 30; ++trial) {
      auto v = random_logits(2000, rng);
      const int expect = ref_argmax(v);
      auto a = v, b = v, c = v;
      EXPECT_EQ(sk.sample(a.data()), expect) << "top_k=1, T=" << t;
      EXPECT_EQ(sp.sample(b.data()), expect) << "top_p=1e-6, T=" << t;
      EXPECT_EQ(sm.sample(c.data()), expect) << "min_p=1, T=" << t;
    }
  }
  // With tied maxima, top_k=1 and top_p tiny pick the lowest id, as greedy does.
  SamplingParams p;
  p.top_k = 1;
  Sampler sk(p, 5);
  p = {};
  p.top_p = 1e-6f;
  Sampler sp(p, 5);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> l = {0.0f, 4.0f, 1.0f, 4.0f, 4.0f};
    auto l2 = l;
    EXPECT_EQ(sk.sample(l.data()), 1);
    EXPECT_EQ(sp.sample(l2.data()), 1);
  }
}

// ---------------------------------------------------------------- random sampling

TEST(SamplingRandom, SeededIsReproducibleAndSeedsDiffer) {
  std::mt19937 rng(3);
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 200; ++i) steps.push_back(random_logits(500, rng, 1.0f));
  auto run = [&](std::optional<uint64_t> seed, Sampler* reuse = nullptr) {
    SamplingParams p;
    p.seed = seed;
    p.top_p = 0.95f;
    p.top_k = 100;
    Sampler own(p, 500);
    Sampler& s = reuse ? *reuse : own;
    std::vector<int> ids;
    for (auto l : steps) ids.push_back(s.sample(l.data()));
    return ids;
  };
  const auto a = run(42), b = run(42), c = run(43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // reset() re-seeds: the same Sampler repeats its draws.
  SamplingParams p;
  p.seed = 42;
  p.top_p = 0.95f;
  p.top_k = 100;
  Sampler s(p, 500);
  const auto first = run(std::nullopt, &s);
  s.reset({});
  const auto second = run(std::nullopt, &s);
  EXPECT_EQ(first, second);
  EXPECT_EQ(first, a);
  // Without a seed two samplers (almost surely) differ.
  EXPECT_NE(run(std::nullopt), run(std::nullopt));
}

TEST(SamplingRandom, FrequenciesMatchSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  const int draws = 20000;
  for (float t : {0.7f, 1.0f, 1.8f}) {
    SamplingParams p;
    p.temperature = t;
    p.seed = 99;
    Sampler s(p, 6);
    const auto counts = histogram(s, logits, draws);
    const auto expect = ref_softmax(logits, t, std::vector<bool>(6, true));
    const double chi2 = chi_square(counts, expect, draws);
    EXPECT_LT(chi2, chi2_crit(5)) << "T=" << t;
  }
}

TEST(SamplingRandom, TopKKeepsExactlyKAndRenormalises) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  SamplingParams p;
  p.top_k = 3;  // ids 4, 1, 0
  p.temperature = 1.3f;
  p.seed = 5;
  Sampler s(p, 6);
  const int draws = 20000;
  const auto counts = histogram(s, logits, draws);
  const std::vector<bool> keep = {true, true, false, false, true, false};
  for (int i = 0; i < 6; ++i)
    if (!keep[i]) {
      EXPECT_EQ(counts[i], 0) << "id " << i;
    }
  EXPECT_LT(chi_square(counts, ref_softmax(logits, 1.3, keep), draws), chi2_crit(2));
}

TEST(SamplingRandom, TopPKeepsSmallestNucleus) {
  // Probabilities 0.5, 0.25, 0.15, 0.1 at temperature 1.
  const std::vector<float> logits = {std::log(0.25f), std::log(0.5f), std::log(0.1f), std::log(0.15f)};
  const int draws = 20000;
  struct Case {
    float top_p;
    std::vector<bool> keep;
  };
  // 0.5 < 0.7 <= 0.75 -> {1, 0}; 0.75 < 0.8 <= 0.9 -> {1, 0, 3}; 0.4 <= 0.5 -> {1}.
  for (const Case& c : {Case{0.7f, {true, true, false, false}}, Case{0.8f, {true, true, false, true}},
                        Case{0.4f, {false, true, false, false}}}) {
    SamplingParams p;
    p.top_p = c.top_p;
    p.seed = 17;
    Sampler s(p, 4);
    const auto counts = histogram(s, logits, draws);
    const int kept = static_cast<int>(std::count(c.keep.begin(), c.keep.end(), true));
    for (int i = 0; i < 4; ++i)
      if (!c.keep[i]) {
        EXPECT_EQ(counts[i], 0) << "top_p=" << c.top_p << " id " << i;
      }
    if (kept > 1) {
      EXPECT_LT(chi_square(counts, ref_softmax(logits, 1.0, c.keep), draws), chi2_crit(kept - 1))
          << "top_p=" << c.top_p;
    } else {
      EXPECT_EQ(counts[1], draws);
    }
  }
}

TEST(SamplingRandom, TopPAppliesAfterTopK) {
  // Probabilities 0.5, 0.25, 0.15, 0.1. top_k=2 renormalises to 2/3, 1/3; top_p=0.6 then keeps only
  // the first (2/3 >= 0.6), whereas top_p=0.6 alone would keep two tokens.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.15f), std::log(0.1f)};
  SamplingParams p;
  p.top_k = 2;
  p.top_p = 0.6f;
  p.seed = 1;
  Sampler s(p, 4);
  const auto counts = histogram(s, logits, 2000);
  EXPECT_EQ(counts[0], 2000);
}

TEST(SamplingRandom, MinPDropsTokensBelowFractionOfMax) {
  // Probabilities 0.5, 0.25, 0.15, 0.1: min_p=0.35 keeps p >= 0.175 -> {0, 1};
  // min_p=0.25 keeps p >= 0.125 -> {0, 1, 2}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.15f), std::log(0.1f)};
  const int draws = 20000;
  for (auto [min_p, kept] : {std::pair{0.35f, 2}, std::pair{0.25f, 3}}) {
    SamplingParams p;
    p.min_p = min_p;
    p.seed = 8;
    Sampler s(p, 4);
    const auto counts = histogram(s, logits, draws);
    std::vector<bool> keep(4, false);
    for (int i = 0; i < kept; ++i) keep[i] = true;
    for (int i = kept; i < 4; ++i) EXPECT_EQ(counts[i], 0) << "min_p=" << min_p << " id " << i;
    EXPECT_LT(chi_square(counts, ref_softmax(logits, 1.0, keep), draws), chi2_crit(kept - 1));
  }
}

TEST(SamplingRandom, LargeVocabNucleusAndTopK) {
  // 128k vocabulary: the sampled token is always inside the nucleus / top-k set computed here by a
  // full sort in double precision.
  const int v = 128256;
  std::mt19937 rng(21);
  auto logits = random_logits(v, rng, 2.0f);
  std::vector<int> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const double t = 0.8;
  std::vector<double> p(v);
  double z = 0;
  for (int i = 0; i < v; ++i) z += p[i] = std::exp((logits[i] - logits[order[0]]) / t);
  double cum = 0;
  std::vector<bool> in_nucleus(v, false);
  for (int i = 0; i < v; ++i) {
    in_nucleus[order[i]] = true;
    cum += p[order[i]] / z;
    if (cum >= 0.9 + 1e-4) break;  // a little slack for float vs double rounding at the edge
  }
  std::vector<bool> in_top40(v, false);
  for (int i = 0; i < 40; ++i) in_top40[order[i]] = true;

  SamplingParams pp;
  pp.temperature = 0.8f;
  pp.top_p = 0.9f;
  pp.seed = 3;
  SamplingParams pk = pp;
  pk.top_p = 1.0f;
  pk.top_k = 40;
  Sampler sp(pp, v), sk(pk, v);
  SamplerWorkspace shared;
  for (int d = 0; d < 200; ++d) {
    auto a = logits, b = logits;
    EXPECT_TRUE(in_nucleus[sp.sample(a.data(), shared)]);
    EXPECT_TRUE(in_top40[sk.sample(b.data())]);
  }
}

namespace {

// Reference for the kept set, by a full sort in double precision: order (logit desc, id asc);
// top-k; softmax over the top-k set at temperature t; top-p = smallest prefix whose mass reaches
// top_p; min-p = p >= min_p * p_max. `doubtful` marks tokens whose membership depends on rounding
// (a cumulative mass or a probability ratio within 1e-5 of its threshold).
struct RefSet {
  std::vector<bool> keep, doubtful;
  std::vector<double> p;  // renormalised over keep
};
RefSet reference_set(const std::vector<float>& l, double t, int top_k, double top_p, double min_p) {
  const int v = static_cast<int>(l.size());
  std::vector<int> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  const int k = (top_k > 0 && top_k < v) ? top_k : v;
  std::vector<double> p(v, 0.0);
  double z = 0;
  for (int r = 0; r < k; ++r) z += p[order[r]] = std::exp((l[order[r]] - l[order[0]]) / t);
  for (auto& x : p) x /= z;
  RefSet out{std::vector<bool>(v, false), std::vector<bool>(v, false), std::vector<double>(v, 0.0)};
  double cum = 0;
  bool reached = false;
  for (int r = 0; r < k; ++r) {
    const int id = order[r];
    const double ratio = p[id] / p[order[0]];
    const bool in_p = !reached;
    const double before = cum;
    cum += p[id];
    reached = reached || cum >= top_p;
    const bool in_min = ratio >= min_p;
    out.keep[id] = in_p && in_min;
    if ((top_p < 1 && (std::abs(before - top_p) < 1e-5 || std::abs(cum - top_p) < 1e-5)) ||
        (min_p > 0 && std::abs(ratio - min_p) < 1e-5))
      out.doubtful[id] = true;
  }
  double kept = 0;
  for (int i = 0; i < v; ++i)
    if (out.keep[i]) kept += p[i];
  for (int i = 0; i < v; ++i) out.p[i] = out.keep[i] ? p[i] / kept : 0.0;
  return out;
}

}  // namespace

TEST(SamplingRandom, FilterCombinationsMatchReferenceSet) {
  // Many random (vocab, temperature, top_k, top_p, min_p) cases, on peaked and on flat logits;
  // every drawn token must be in the reference set (or on a rounding edge of it).
  std::mt19937 rng(77);
  const int vocab_sizes[] = {7, 300, 5000, 40000};
  const int top_ks[] = {0, 0, 1, 3, 50, 1000};
  const float top_ps[] = {1.0f, 1.0f, 0.05f, 0.5f, 0.9f, 0.99f};
  const float min_ps[] = {0.0f, 0.0f, 0.01f, 0.2f, 0.9f};
  const float temps[] = {0.3f, 1.0f, 2.5f};
  const float scales[] = {0.05f, 1.0f, 4.0f};
  int cases = 0;
  for (int v : vocab_sizes) {
    for (int trial = 0; trial < 24; ++trial) {
      SamplingParams p;
      p.temperature = temps[rng() % 3];
      p.top_k = top_ks[rng() % 6];
      p.top_p = top_ps[rng() % 6];
      p.min_p = min_ps[rng() % 5];
      p.seed = rng();
      auto logits = random_logits(v, rng, scales[rng() % 3]);
      if (trial % 4 == 0) logits[rng() % v] = std::numeric_limits<float>::quiet_NaN();
      if (trial % 5 == 0) logits[rng() % v] = -kInf;
      std::vector<float> clean = logits;  // the reference sees non-finite logits as absent
      for (auto& x : clean)
        if (!std::isfinite(x)) x = -1e30f;
      const RefSet ref = reference_set(clean, p.temperature, p.top_k, p.top_p, p.min_p);
      Sampler s(p, v);
      std::vector<float> buf;
      for (int d = 0; d < 50; ++d) {
        buf = logits;
        const int id = s.sample(buf.data());
        ASSERT_TRUE(ref.keep[id] || ref.doubtful[id])
            << "vocab " << v << " T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
            << " min_p " << p.min_p << ": drew id " << id << " with p " << ref.p[id];
      }
      ++cases;
    }
  }
  EXPECT_EQ(cases, 96);
}

TEST(SamplingRandom, FilterCombinationsMatchReferenceFrequencies) {
  // Small vocabulary, all filters at once: frequencies follow the renormalised reference.
  std::mt19937 rng(5);
  const int draws = 20000;
  int checked = 0;
  for (int trial = 0; trial < 12; ++trial) {
    SamplingParams p;
    p.temperature = trial % 3 == 0 ? 0.6f : 1.4f;
    p.top_k = trial % 2 ? 6 : 0;
    p.top_p = trial % 4 < 2 ? 0.8f : 0.95f;
    p.min_p = trial % 3 == 2 ? 0.05f : 0.0f;
    p.seed = 1000 + trial;
    auto logits = random_logits(8, rng, 1.5f);
    const RefSet ref = reference_set(logits, p.temperature, p.top_k, p.top_p, p.min_p);
    if (std::find(ref.doubtful.begin(), ref.doubtful.end(), true) != ref.doubtful.end()) continue;
    const int kept = static_cast<int>(std::count(ref.keep.begin(), ref.keep.end(), true));
    Sampler s(p, 8);
    const auto counts = histogram(s, logits, draws);
    for (int i = 0; i < 8; ++i)
      if (!ref.keep[i]) {
        EXPECT_EQ(counts[i], 0) << "trial " << trial << " id " << i;
      }
    if (kept > 1) {
      EXPECT_LT(chi_square(counts, ref.p, draws), chi2_crit(std::min(kept - 1, 6))) << "trial " << trial;
    }
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(SamplingKernels, FastExpIsAccurate) {
  double worst = 0;
  for (float x = -86.0f; x <= 88.0f; x += 0.0137f) {
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(fast_expf(x) - ref) / ref);
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(fast_expf(0.0f), 1.0f);
  EXPECT_EQ(fast_expf(-0.0f), 1.0f);
  EXPECT_EQ(fast_expf(-87.0f), 0.0f);
  EXPECT_EQ(fast_expf(-kInf), 0.0f);
  EXPECT_EQ(fast_expf(kNaN), 0.0f);
  EXPECT_FLOAT_EQ(fast_expf(1000.0f), std::exp(88.0f));
}

TEST(SamplingKernels, DenseLoopsMatchScalarReferences) {
  std::mt19937 rng(31);
  for (int n : {1, 7, 8, 9, 255, 256, 257, 1000, 4099}) {
    auto x = random_logits(n, rng, 3.0f);
    if (n > 5) {
      x[3] = kNaN;
      x[n - 2] = kInf;  // +inf is not a finite maximum
      x[1] = -kInf;
    }
    float mx = -kInf;
    int arg = -1;
    for (int i = 0; i < n; ++i)
      if (std::isfinite(x[i]) && x[i] > mx) mx = x[i], arg = i;
    EXPECT_EQ(finite_max(x.data(), n), mx);
    EXPECT_EQ(finite_argmax(x.data(), n), arg);
    std::vector<float> w(n);
    std::vector<double> blocks((n + kBlock - 1) / kBlock);
    const double z = exp_weights(x.data(), n, mx, 0.7f, w.data(), blocks.data());
    double zref = 0, bsum = 0;
    for (int i = 0; i < n; ++i) {
      // The argument rounded as the kernel computes it (float), then exp in double.
      const float arg = (x[i] - mx) / 0.7f;
      const double e = std::isfinite(x[i]) ? std::exp(static_cast<double>(arg)) : 0.0;
      EXPECT_NEAR(w[i], e, 3e-7 * e + 1e-30) << i;
      zref += e;
    }
    for (double b : blocks) bsum += b;
    EXPECT_NEAR(z, zref, 1e-6 * zref);
    EXPECT_EQ(z, bsum);
    double lse = 0;
    for (int i = 0; i < n; ++i)
      if (std::isfinite(x[i])) lse += std::exp(static_cast<double>(x[i]) - mx);
    EXPECT_NEAR(log_sum_exp_fast(x.data(), n), mx + std::log(lse), 1e-5);
    // Histogram buckets: every weight lies in [floor(b), floor(b - 1)) of its bucket.
    std::vector<double> mass(kMassBuckets);
    mass_histogram(w.data(), n, mass.data());
    double msum = 0;
    for (double m : mass) msum += m;
    EXPECT_NEAR(msum, z, 1e-6 * z);  // float lanes in exp_weights, double sums here
  }
  // Ties: the lowest index wins, across lanes and the tail.
  std::vector<float> t(21, 1.0f);
  t[13] = t[20] = t[5] = 2.0f;
  EXPECT_EQ(finite_argmax(t.data(), 21), 5);
  std::vector<float> none = {kNaN, -kInf, kInf};
  EXPECT_EQ(finite_argmax(none.data(), 3), -1);
  EXPECT_EQ(finite_max(none.data(), 3), -kInf);
  // Bucket floors decrease and bound their buckets.
  for (int b = 1; b < 40; ++b) {
    const float hi = mass_bucket_floor(b - 1), lo = mass_bucket_floor(b);
    EXPECT_LT(lo, hi);
    std::vector<float> one = {std::nextafter(hi, 0.0f)};
    std::vector<double> m(kMassBuckets);
    mass_histogram(one.data(), 1, m.data());
    EXPECT_GT(m[b], 0.0) << b;
    one[0] = lo;
    std::fill(m.begin(), m.end(), 0.0);
    mass_histogram(one.data(), 1, m.data());
    EXPECT_GT(m[b], 0.0) << b;
  }
}

// ---------------------------------------------------------------- penalties and logit bias

TEST(SamplingPenalties, RepetitionPenaltyFollowsHfFormula) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.3f;
  Sampler s(p, 5);
  const std::vector<int32_t> prompt = {1, 3, 1};
  s.reset(prompt);
  std::vector<float> l = {1.0f, 2.0f, -1.5f, 0.5f, 3.0f};
  s.process_logits(l.data());
  // Seen: 1 (twice, penalised once) and 3, both positive -> divided.
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 2.0f / 1.3f);
  EXPECT_FLOAT_EQ(l[2], -1.5f);
  EXPECT_FLOAT_EQ(l[3], 0.5f / 1.3f);
  EXPECT_FLOAT_EQ(l[4], 3.0f);
  s.accept(2);
  l = {1.0f, 2.0f, -1.5f, 0.5f, 3.0f};
  EXPECT_EQ(s.sample(l.data()), 4);     // sample() writes the processed logits back
  EXPECT_FLOAT_EQ(l[2], -1.5f * 1.3f);  // negative -> multiplied
  EXPECT_FLOAT_EQ(l[1], 2.0f / 1.3f);
}

TEST(SamplingPenalties, PresenceAndFrequencyCountGeneratedTokensOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p, 6);
  const std::vector<int32_t> prompt = {0, 2};
  s.reset(prompt);
  for (int32_t id : {2, 2, 4, 2}) s.accept(id);
  std::vector<float> l = {1.0f, 1.0f, 1.0f, 1.0f, -2.0f, 0.0f};
  s.process_logits(l.data());
  EXPECT_FLOAT_EQ(l[0], 1.0f);  // prompt only: untouched
  EXPECT_FLOAT_EQ(l[1], 1.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f - (0.25f * 3 + 0.5f));  // generated 3 times
  EXPECT_FLOAT_EQ(l[3], 1.0f);
  EXPECT_FLOAT_EQ(l[4], -2.0f - (0.25f * 1 + 0.5f));  // generated once
  EXPECT_FLOAT_EQ(l[5], 0.0f);
  // Negative penalties encourage repetition.
  p.presence_penalty = -1.0f;
  p.frequency_penalty = -2.0f;
  Sampler s2(p, 6);
  s2.reset(prompt);
  s2.accept(5);
  s2.accept(5);
  l = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f};
  EXPECT_EQ(s2.sample(l.data()), 5);
  EXPECT_FLOAT_EQ(l[5], 0.0f - (-2.0f * 2 + -1.0f));
}

TEST(SamplingPenalties, OrderIsBiasThenRepetitionThenAdditive) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logit_bias = {{1, 1.0f}, {3, -0.25f}};
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.1f;
  Sampler s(p, 4);
  const std::vector<int32_t> prompt = {3};
  s.reset(prompt);
  s.accept(1);
  s.accept(1);
  std::vector<float> l = {0.0f, -0.5f, 0.25f, 0.75f};
  s.process_logits(l.data());
  EXPECT_FLOAT_EQ(l[0], 0.0f);
  // id 1: bias -> 0.5 (now positive) -> /2 -> 0.25 -> minus (0.1*2 + 0.5).
  EXPECT_FLOAT_EQ(l[1], (-0.5f + 1.0f) / 2.0f - (0.1f * 2 + 0.5f));
  EXPECT_FLOAT_EQ(l[2], 0.25f);
  // id 3 (prompt only): bias -> 0.5 -> /2.
  EXPECT_FLOAT_EQ(l[3], (0.75f - 0.25f) / 2.0f);
}

TEST(SamplingPenalties, LogitBiasChangesTheGreedyChoice) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logit_bias = {{0, 100.0f}, {2, -100.0f}};
  Sampler s(p, 3);
  std::vector<float> l = {-5.0f, 1.0f, 50.0f};
  EXPECT_EQ(s.sample(l.data()), 0);
  EXPECT_FLOAT_EQ(l[0], 95.0f);
  EXPECT_FLOAT_EQ(l[2], -50.0f);
}

TEST(SamplingPenalties, WindowCoversLastNTokensOfPromptAndGenerated) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 1.0f;
  p.penalty_last_n = 3;
  Sampler s(p, 8);
  const std::vector<int32_t> prompt = {0, 1, 2, 3};  // window: {1, 2, 3}
  s.reset(prompt);
  std::vector<float> l(8, 1.0f);
  s.process_logits(l.data());
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 0.5f);
  EXPECT_FLOAT_EQ(l[3], 0.5f);
  for (int32_t id : {5, 5, 6}) s.accept(id);  // window: {5, 5, 6}
  l.assign(8, 1.0f);
  s.process_logits(l.data());
  for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(l[i], 1.0f) << i;
  EXPECT_FLOAT_EQ(l[5], 0.5f - 2.0f);
  EXPECT_FLOAT_EQ(l[6], 0.5f - 1.0f);
  s.accept(7);  // window: {5, 6, 7}: one 5 left the window
  l.assign(8, 1.0f);
  s.process_logits(l.data());
  EXPECT_FLOAT_EQ(l[5], 0.5f - 1.0f);
  EXPECT_FLOAT_EQ(l[7], 0.5f - 1.0f);

  // Long runs keep the counts right (compared with counting the window here).
  PenaltyTracker t(50, 7);
  std::mt19937 rng(4);
  std::vector<int32_t> hist = {1, 2, 3};
  t.reset(hist);
  std::vector<bool> gen(3, false);
  for (int i = 0; i < 10000; ++i) {
    const int32_t id = static_cast<int32_t>(rng() % 50);
    t.accept(id);
    hist.push_back(id);
    gen.push_back(true);
  }
  for (int32_t id = 0; id < 50; ++id) {
    int all = 0;
    for (size_t i = hist.size() - 7; i < hist.size(); ++i) all += hist[i] == id;
    EXPECT_EQ(t.count_all(id), all);
    EXPECT_EQ(t.count_generated(id), all);
  }
}

TEST(SamplingPenalties, ZeroWindowDisablesAndResetForgets) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  p.penalty_last_n = 0;
  Sampler s(p, 3);
  const std::vector<int32_t> prompt = {0, 1, 2};
  s.reset(prompt);
  std::vector<float> l = {1.0f, 2.0f, 3.0f};
  s.process_logits(l.data());
  EXPECT_EQ(l, (std::vector<float>{1.0f, 2.0f, 3.0f}));

  p.penalty_last_n = -1;
  Sampler s2(p, 3);
  s2.reset(prompt);
  s2.accept(0);
  s2.reset({});
  s2.process_logits(l.data());
  EXPECT_EQ(l, (std::vector<float>{1.0f, 2.0f, 3.0f}));
}

TEST(SamplingPenalties, OutOfRangeIdsAreErrors) {
  SamplingParams p;
  p.repetition_penalty = 1.1f;
  Sampler s(p, 10);
  const std::vector<int32_t> bad = {1, 10};
  EXPECT_THROW(s.reset(bad), Error);
  EXPECT_THROW(s.accept(-1), Error);
  EXPECT_THROW(s.accept(10), Error);
  Sampler plain(SamplingParams{}, 10);  // penalties off: still checked
  EXPECT_THROW(plain.reset(bad), Error);
  EXPECT_THROW(plain.accept(10), Error);
}

// ---------------------------------------------------------------- logprobs

TEST(SamplingLogprobs, RawLogSoftmaxOfChosenAndTopAlternatives) {
  const std::vector<float> raw = {1.0f, 2.0f, 3.0f, 0.0f, 3.0f};
  double z = 0;
  for (float x : raw) z += std::exp(static_cast<double>(x));
  auto lp = [&](int i) { return static_cast<float>(raw[i] - std::log(z)); };

  SamplingParams p;
  p.temperature = 0.0f;
  p.top_logprobs = 3;
  p.logit_bias = {{0, 10.0f}};  // changes the choice but not the reported (raw) logprobs
  Sampler s(p, 5);
  auto l = raw;
  EXPECT_EQ(s.sample(l.data()), 0);
  const auto& r = s.last_logprobs();
  EXPECT_EQ(r.chosen.id, 0);
  EXPECT_NEAR(r.chosen.logprob, lp(0), 1e-5);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].id, 2);  // tie with 4: lower id first
  EXPECT_EQ(r.top[1].id, 4);
  EXPECT_EQ(r.top[2].id, 1);
  for (const auto& t : r.top) EXPECT_NEAR(t.logprob, lp(t.id), 1e-5);

  // Free functions: -inf and NaN are skipped; top_n above the finite count lists only finite ones.
  const std::vector<float> odd = {-kInf, 0.0f, kNaN, std::log(3.0f)};
  const float lse = log_sum_exp(odd.data(), 4);
  EXPECT_NEAR(lse, std::log(4.0f), 1e-6);
  std::vector<TokenLogprob> out;
  top_logprobs(odd.data(), 4, 5, lse, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].id, 3);
  EXPECT_NEAR(out[0].logprob, std::log(0.75f), 1e-6);
  EXPECT_EQ(out[1].id, 1);
  EXPECT_NEAR(out[1].logprob, std::log(0.25f), 1e-6);
  const std::vector<float> none = {-kInf, kNaN};
  EXPECT_EQ(log_sum_exp(none.data(), 2), -kInf);
}

TEST(SamplingLogprobs, TopListMatchesFullSortOnLargeVocab) {
  std::mt19937 rng(9);
  auto v = random_logits(32000, rng);
  v[100] = v[200] = 50.0f;  // a tie at the top
  std::vector<int> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  std::vector<TokenLogprob> out;
  out.reserve(20);
  top_logprobs(v.data(), static_cast<int>(v.size()), 20, 0.0f, out);
  ASSERT_EQ(out.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(out[i].id, order[i]) << i;
    EXPECT_EQ(out[i].logprob, v[order[i]]);
  }
  // Without logprobs requested nothing is reported.
  Sampler s(SamplingParams{}, 32000);
  s.sample(v.data());
  EXPECT_EQ(s.last_logprobs().chosen.id, -1);
}

// ---------------------------------------------------------------- stop strings

namespace {

struct StreamResult {
  std::vector<std::string> outputs;
  std::string text;  // all outputs (+ flush when not stopped)
  bool stopped = false;
  int index = -1;
};

StreamResult stream(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  StreamResult r;
  std::string consumed;
  for (const auto& piece : pieces) {
    auto o = m.push(piece);
    r.outputs.push_back(o.text);
    r.text += o.text;
    if (o.stopped) {
      r.stopped = true;
      break;
    }
    consumed += piece;
    // Invariant: emitted + held == everything pushed, and less than a whole stop string is held.
    EXPECT_EQ(r.text + m.held(), consumed);
    EXPECT_LT(m.held().size(), std::max<size_t>(1, m.max_stop_length()));
  }
  if (!r.stopped) r.text += m.flush();
  r.index = m.matched_index();
  return r;
}

// Naive reference: the first end position at which any stop string ends; longest stop on ties.
std::pair<std::string, int> reference_stop(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    int best = -1;
    for (size_t k = 0; k < stops.size(); ++k) {
      const auto& s = stops[k];
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (best < 0 || s.size() > stops[best].size()))
        best = static_cast<int>(k);
    }
    if (best >= 0) return {text.substr(0, end - stops[best].size()), best};
  }
  return {text, -1};
}

}  // namespace

TEST(StopMatcher, PassThroughWithoutStops) {
  auto r = stream({}, {"Hello", " wor", "ld"});
  EXPECT_EQ(r.outputs, (std::vector<std::string>{"Hello", " wor", "ld"}));
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "Hello world");
}

TEST(StopMatcher, StopInsideOnePiece) {
  auto r = stream({"STOP"}, {"Hello STOP world"});
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "Hello ");
  EXPECT_EQ(r.index, 0);
}

TEST(StopMatcher, StopSpanningPiecesIsHeldBackThenDropped) {
  auto r = stream({"STOP"}, {"Hel", "lo S", "TO", "P more", "never seen"});
  EXPECT_EQ(r.outputs, (std::vector<std::string>{"Hel", "lo ", "", ""}));
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "Hello ");
}

TEST(StopMatcher, FalseStartIsReleased) {
  auto r = stream({"</s>"}, {"a<", "/x", "y</", "s"});
  EXPECT_EQ(r.outputs, (std::vector<std::string>{"a", "</x", "y", ""}));
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "a</xy</s");  // flush releases the held "</s"
}

TEST(StopMatcher, OverlappingPrefixes) {
  // "aab" inside "aaab": the matcher must fall back from "aa" + 'a' to "aa", not to nothing.
  auto r = stream({"aab"}, {"a", "a", "a", "b", "c"});
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "a");
  r = stream({"abab"}, {"xaba", "bab"});
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "x");
}

TEST(StopMatcher, FirstToCompleteWinsLongestOnTies) {
  auto r = stream({"abcd", "bc"}, {"xabcd"});
  EXPECT_EQ(r.text, "xa");
  EXPECT_EQ(r.index, 1);
  r = stream({"bc", "abc"}, {"xab", "c"});
  EXPECT_EQ(r.text, "x");
  EXPECT_EQ(r.index, 1);
}

TEST(StopMatcher, Utf8StopsSplitOnlyAtCharacterBoundaries) {
  const std::string ni_hao = "\xe4\xbd\xa0\xe5\xa5\xbd";         // 你好
  const std::string shi = "\xe4\xb8\x96", jie = "\xe7\x95\x8c";  // 世 界
  auto r = stream({shi + jie}, {ni_hao, shi, jie + "!"});
  EXPECT_EQ(r.outputs, (std::vector<std::string>{ni_hao, "", ""}));
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, ni_hao);

  const std::string smile = "\xf0\x9f\x98\x80";  // 😀
  StopMatcher m({smile + "end"});
  auto o = m.push("ok" + smile + "e");
  EXPECT_EQ(o.text, "ok");
  EXPECT_EQ(m.held(), smile + "e");
  o = m.push("x" + smile);
  EXPECT_EQ(o.text, smile + "ex");
  EXPECT_EQ(m.held(), smile);
  EXPECT_EQ(m.flush(), smile);
  // A stop sharing a lead byte with the text but not the whole character is not held.
  StopMatcher m2({"\xc3\xa9t\xc3\xa9"});                  // été
  EXPECT_EQ(m2.push("caf\xc3\xa8").text, "caf\xc3\xa8");  // è: same lead byte as é
}

TEST(StopMatcher, AfterStopEverythingIsIgnored) {
  StopMatcher m({"##"});
  auto o = m.push("a##b");
  EXPECT_EQ(o.text, "a");
  EXPECT_TRUE(o.stopped);
  o = m.push("more");
  EXPECT_EQ(o.text, "");
  EXPECT_TRUE(o.stopped);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, EmptyStopIsAnError) { EXPECT_THROW(StopMatcher({"a", ""}), Error); }

TEST(StopMatcher, AnySplitGivesTheReferenceResult) {
  std::mt19937 rng(12345);
  const std::string alphabet = "abc";
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops(1 + rng() % 3);
    for (auto& s : stops) {
      s.resize(1 + rng() % 4);
      for (auto& ch : s) ch = alphabet[rng() % alphabet.size()];
    }
    std::string text(rng() % 20, ' ');
    for (auto& ch : text) ch = alphabet[rng() % alphabet.size()];
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t len = std::min(text.size() - i, static_cast<size_t>(rng() % 4));
      pieces.push_back(text.substr(i, len));  // empty pieces included
      i += len;
    }
    const auto [expect_text, expect_index] = reference_stop(stops, text);
    const auto r = stream(stops, pieces);
    ASSERT_EQ(r.text, expect_text) << "trial " << trial << " text '" << text << "'";
    ASSERT_EQ(r.index, expect_index) << "trial " << trial;
    ASSERT_EQ(r.stopped, expect_index >= 0);
  }
}
