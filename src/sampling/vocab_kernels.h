// Dense loops over a vocabulary-sized logit row, written so that GCC vectorizes them at the
// baseline ISA without -ffast-math: reductions are split into explicit lanes (a fixed summation
// order, so results are deterministic), and exp is a branch-free polynomial.
#pragma once

#include <bit>
#include <cstdint>

namespace llamarun {

// exp(x) for float: relative error below 2e-7 for x in [-86, 88]; exactly 1 at 0; 0 for x < -86
// (so no subnormals), for -inf and for NaN. Inputs above 88 are clamped to 88.
inline float fast_expf(float x) {
  // Range tests and selects on the bit pattern with integer masks: no float compares and no
  // branches, so loops using this vectorize under the default -ftrapping-math.
  // dead: x < -86, -inf or NaN. high: x > 88 (clamped).
  const int32_t i = std::bit_cast<int32_t>(x);
  const int32_t dead =
      -static_cast<int32_t>((static_cast<uint32_t>(i) > std::bit_cast<uint32_t>(-86.0f)) | (i > 0x7f800000));
  const int32_t high = -static_cast<int32_t>(i > std::bit_cast<int32_t>(88.0f));
  x = std::bit_cast<float>(((i & ~high) | (std::bit_cast<int32_t>(88.0f) & high)) & ~dead);
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float kn = x * kLog2e + kShift;
  const float fn = kn - kShift;
  const int32_t n = std::bit_cast<int32_t>(kn) - std::bit_cast<int32_t>(kShift);
  const float r = (x - fn * kLn2Hi) - fn * kLn2Lo;  // |r| <= ln2 / 2
  // e^r by its Taylor series to r^7 (truncation error < 1.4e-8 on |r| <= 0.347).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t y = std::bit_cast<int32_t>(p) + (n << 23);  // p * 2^n
  return std::bit_cast<float>(y & ~dead);
}

// All ones for finite v, 0 for +-inf and NaN (exponent bits all ones); see fast_expf.
inline int32_t finite_mask(float v) {
  return -static_cast<int32_t>((std::bit_cast<uint32_t>(v) & 0x7f800000u) != 0x7f800000u);
}
// v when mask is all ones, +0 when it is 0.
inline float mask_float(float v, int32_t mask) {
  return std::bit_cast<float>(std::bit_cast<int32_t>(v) & mask);
}

// Largest finite value of x[0..n); -inf when none is finite.
float finite_max(const float* x, int n);

// Index of the largest finite value of x[0..n), lowest index on ties; -1 when none is finite.
int32_t finite_argmax(const float* x, int n);

// w[i] = fast_expf((x[i] - mx) / t) for finite x[i], else 0. block_sums[b] = sum of
// w[b*kBlock .. (b+1)*kBlock) (the last block may be shorter); it needs ceil(n / kBlock) entries.
// Returns the sum of the block sums, in block order (double).
constexpr int kBlock = 256;
double exp_weights(const float* x, int n, float mx, float t, float* w, double* block_sums);

// Mass histogram of weights w[0..n) in (0, 1] (zeros are ignored): bucket b holds the weights whose
// bit pattern lies in (bits(1) - (b + 1) * 2^19, bits(1) - b * 2^19], i.e. 16 buckets per halving
// (each about 4.4% wide); the last bucket also takes everything smaller.
// mass: [kMassBuckets]. Returns nothing; mass[b] is the sum of those weights.
constexpr int kMassBuckets = 1024;
void mass_histogram(const float* w, int n, double* mass);
// Smallest weight that falls in bucket b or a better one (0 for the last bucket).
float mass_bucket_floor(int b);

// Sum of the weights w[0..n) (>= 0) that are >= floor, in lanes (fixed order).
double sum_at_least(const float* w, int n, float floor);

// log(sum exp(x[i])) over finite x (uses fast_expf); -inf when none is finite.
float log_sum_exp_fast(const float* x, int n);

}  // namespace llamarun
