#include "sampling/vocab_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace llamarun {

namespace {

constexpr int kLanes = 8;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline bool finite(float v) { return finite_mask(v) != 0; }

}  // namespace

float finite_max(const float* x, int n) {
  float m[kLanes];
  std::fill(m, m + kLanes, kNegInf);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l];
      m[l] = (finite(v) && v > m[l]) ? v : m[l];
    }
  }
  float r = kNegInf;
  for (int l = 0; l < kLanes; ++l) r = std::max(r, m[l]);
  for (; i < n; ++i) {
    if (finite(x[i]) && x[i] > r) r = x[i];
  }
  return r;
}

int32_t finite_argmax(const float* x, int n) {
  float bv[kLanes];
  int32_t bi[kLanes];
  std::fill(bv, bv + kLanes, kNegInf);
  std::fill(bi, bi + kLanes, -1);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l];
      const bool take = finite(v) && v > bv[l];  // strict: a lane keeps its earliest maximum
      bv[l] = take ? v : bv[l];
      bi[l] = take ? i + l : bi[l];
    }
  }
  float best_v = kNegInf;
  int32_t best_i = -1;
  for (int l = 0; l < kLanes; ++l) {
    if (bi[l] < 0) continue;
    if (best_i < 0 || bv[l] > best_v || (bv[l] == best_v && bi[l] < best_i)) {
      best_v = bv[l];
      best_i = bi[l];
    }
  }
  for (; i < n; ++i) {  // tail indices are above all lane indices: strict '>' keeps the lowest
    if (finite(x[i]) && (best_i < 0 || x[i] > best_v)) {
      best_v = x[i];
      best_i = i;
    }
  }
  return best_i;
}

double exp_weights(const float* __restrict x, int n, float mx, float t, float* __restrict w,
                   double* block_sums) {
  double total = 0.0;
  for (int b = 0, begin = 0; begin < n; ++b, begin += kBlock) {
    const int end = std::min(n, begin + kBlock);
    float acc[kLanes] = {};
    int i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float v = x[i + l];
        const float we = mask_float(fast_expf((v - mx) / t), finite_mask(v));
        w[i + l] = we;
        acc[l] += we;
      }
    }
    float tail = 0.0f;
    for (; i < end; ++i) {
      const float v = x[i];
      w[i] = finite(v) ? fast_expf((v - mx) / t) : 0.0f;
      tail += w[i];
    }
    double s = tail;
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    block_sums[b] = s;
    total += s;
  }
  return total;
}

namespace {
constexpr int kMassShift = 19;
constexpr int32_t kOneBits = 0x3f800000;  // bits of 1.0f
}  // namespace

void mass_histogram(const float* w, int n, double* mass) {
  // Four interleaved copies break the store-to-load chains of consecutive adds to one bucket.
  constexpr int kCopies = 4;
  static_assert(kMassBuckets * kCopies * sizeof(double) <= 64 * 1024);
  double h[kCopies][kMassBuckets] = {};
  auto bucket = [](float v) {
    const int32_t d = (kOneBits - std::bit_cast<int32_t>(v)) >> kMassShift;  // v in [0, 1]: d >= 0
    return std::min(d, kMassBuckets - 1);
  };
  int i = 0;
  for (; i + kCopies <= n; i += kCopies) {
    for (int c = 0; c < kCopies; ++c) h[c][bucket(w[i + c])] += w[i + c];
  }
  for (; i < n; ++i) h[0][bucket(w[i])] += w[i];
  for (int b = 0; b < kMassBuckets; ++b) mass[b] = (h[0][b] + h[1][b]) + (h[2][b] + h[3][b]);
}

float mass_bucket_floor(int b) {
  if (b >= kMassBuckets - 1) return 0.0f;
  return std::bit_cast<float>(kOneBits - ((b + 1) << kMassShift) + 1);
}

double sum_at_least(const float* w, int n, float floor) {
  // w >= 0, so comparing bit patterns as integers orders like the floats (and vectorizes).
  const int32_t fb = std::bit_cast<int32_t>(floor);
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = w[i + l];
      acc[l] += mask_float(v, -static_cast<int32_t>(std::bit_cast<int32_t>(v) >= fb));
    }
  }
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  for (; i < n; ++i) s += std::bit_cast<int32_t>(w[i]) >= fb ? w[i] : 0.0f;
  return s;
}

float log_sum_exp_fast(const float* x, int n) {
  const float mx = finite_max(x, n);
  if (mx == kNegInf) return kNegInf;
  double total = 0.0;
  for (int begin = 0; begin < n; begin += kBlock) {
    const int end = std::min(n, begin + kBlock);
    float acc[kLanes] = {};
    int i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float v = x[i + l];
        acc[l] += mask_float(fast_expf(v - mx), finite_mask(v));
      }
    }
    double s = 0.0;
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    for (; i < end; ++i) s += finite(x[i]) ? fast_expf(x[i] - mx) : 0.0f;
    total += s;
  }
  return mx + static_cast<float>(std::log(total));
}

}  // namespace llamarun
