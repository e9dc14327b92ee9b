#include "core/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/fp16.h"

namespace llamarun {

namespace {

// Round to nearest, ties to even (the default FP rounding mode), as GGML's nearest_int does.
inline int rint_even(float v) { return int(std::nearbyint(v)); }

constexpr float kTinyGroup = 1e-15f;  // below this a group's largest magnitude counts as all-zero

// Q5_0 / Q5_1 share the packing: low nibbles of values j and j + 16 in qs[j], 5th bits in qh (bit j).
void pack_5bit(const uint8_t q[32], uint8_t qs[16], uint8_t qh_bytes[4]) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
    qh |= uint32_t(q[j] >> 4) << j;
    qh |= uint32_t(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, 4);
}

// Asymmetric fit of n values to x ~= scale * l - off, l in [0, nmax], off >= 0, minimising the weighted
// squared error. Tries scale = (max - min) / nmax and then the grid of inverse scales
// (nmax + lo + step * k) / (max - bias), k = 0..steps, each refined by a least-squares solve for
// (scale, off) with the levels it rounds to. Writes the levels to `levels`, returns scale, sets *off.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* levels, float* off, float lo,
                    float step, int steps) {
  float mn = x[0], mx = x[0], sw = 0, swx = 0;
  for (int i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sw += w[i];
    swx += w[i] * x[i];
  }
  mn = std::min(mn, 0.f);  // the offset only ever lowers the range's bottom to or below zero
  if (mx == mn) {
    std::fill(levels, levels + n, uint8_t(0));
    *off = -mn;
    return 0.f;
  }
  auto error_of = [&](float scale, float bias, const uint8_t* l) {
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float d = scale * float(l[i]) + bias - x[i];
      e += w[i] * (d * d);
    }
    return e;
  };
  float inv = float(nmax) / (mx - mn);
  float best_scale = 1.f / inv, best_bias = mn;
  for (int i = 0; i < n; ++i) levels[i] = uint8_t(std::clamp(rint_even(inv * (x[i] - mn)), 0, nmax));
  float best = error_of(best_scale, best_bias, levels);
  uint8_t trial[32];
  // As in GGML, each candidate grid is anchored at the best bias found so far (not the data minimum):
  // llama.cpp's files depend on that order, and matching it keeps our output bit-identical to theirs.
  for (int k = 0; k <= steps; ++k) {
    inv = (lo + step * float(k) + float(nmax)) / (mx - best_bias);
    float sl = 0, sll = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      int l = std::clamp(rint_even(inv * (x[i] - best_bias)), 0, nmax);
      trial[i] = uint8_t(l);
      sl += w[i] * float(l);
      sll += w[i] * float(l) * float(l);
      sxl += w[i] * float(l) * x[i];
    }
    const float det = sw * sll - sl * sl;
    if (det <= 0) continue;
    float scale = (sw * sxl - swx * sl) / det;
    float bias = (sll * swx - sl * sxl) / det;
    if (bias > 0) {  // the offset must stay non-negative: refit the scale alone through zero
      bias = 0;
      scale = sxl / sll;
    }
    const float e = error_of(scale, bias, trial);
    if (e < best) {
      std::copy(trial, trial + n, levels);
      best = e;
      best_scale = scale;
      best_bias = bias;
    }
  }
  *off = -best_bias;
  return best_scale;
}

// Symmetric fit of n values to x ~= scale * l, l in [-nmax, nmax - 1], weights x^2: the starting scale
// maps the largest magnitude to -nmax; the grid (nmax + 0.1 k) / max, k = -9..9, is searched for the
// best least-squares fit. Returns the scale (its sign may be negative); levels get l + nmax.
float fit_scale_sym(int n, int nmax, const float* x, int8_t* levels) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), vmax = x[i];
  if (amax < kTinyGroup) {
    std::fill(levels, levels + n, int8_t(0));
    return 0.f;
  }
  auto sums = [&](float inv, float* sxl, float* sll, int8_t* out) {
    *sxl = 0, *sll = 0;
    for (int i = 0; i < n; ++i) {
      int l = std::clamp(rint_even(inv * x[i]), -nmax, nmax - 1);
      if (out) out[i] = int8_t(l + nmax);
      const float wi = x[i] * x[i];
      *sxl += wi * x[i] * float(l);
      *sll += wi * float(l) * float(l);
    }
  };
  float sxl, sll;
  sums(-float(nmax) / vmax, &sxl, &sll, levels);
  float scale = sll ? sxl / sll : 0.f;
  float best = scale * sxl;  // = sxl^2 / sll: the error reduction of the fit; larger is better
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    const float inv = -(float(nmax) + 0.1f * float(k)) / vmax;
    sums(inv, &sxl, &sll, nullptr);
    if (sll > 0 && sxl * sxl > best * sll) {
      sums(inv, &sxl, &sll, levels);
      scale = sxl / sll;
      best = scale * sxl;
    }
  }
  return scale;
}

// Q4_K / Q5_K scale bytes: pairs 0..3 in the low 6 bits of bytes j (scale) and j + 4 (min); pairs 4..7
// in the nibbles of byte j + 4 with their top 2 bits in the high bits of bytes j - 4 (scale) and j (min).
void pack_scale_min(uint8_t* s, int j, int sc, int mn) {
  if (j < 4) {
    s[j] = uint8_t(sc);
    s[j + 4] = uint8_t(mn);
  } else {
    s[j + 4] = uint8_t((sc & 0xf) | ((mn & 0xf) << 4));
    s[j - 4] |= uint8_t((sc >> 4) << 6);
    s[j] |= uint8_t((mn >> 4) << 6);
  }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fits the 8 sub-blocks of one super-block, writes d, dmin
// and the packed scales, and returns the final levels in L[256].
template <typename Block>
void kquant_asym_superblock(const float* x, Block* y, int nmax, float lo, int steps, uint8_t L[256]) {
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float ss = 0;
    for (int i = 0; i < 32; ++i) ss += xs[i] * xs[i];
    const float rms = std::sqrt(ss / 32);
    for (int i = 0; i < 32; ++i) w[i] = rms + std::fabs(xs[i]);
    scales[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], lo, 0.1f, steps);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(y->scales, 0, sizeof(y->scales));
  for (int j = 0; j < 8; ++j)
    pack_scale_min(y->scales, j, std::min(63, rint_even(inv_scale * scales[j])),
                   std::min(63, rint_even(inv_min * mins[j])));
  y->d = f32_to_f16(max_scale / 63.f);
  y->dmin = f32_to_f16(max_min / 63.f);
  // Re-quantise with the scales as stored (6-bit, times the f16 super-scales).
  const float d = f16_to_f32(y->d), dmin = f16_to_f32(y->dmin);
  for (int j = 0; j < 8; ++j) {
    int sc, mn;
    kquant_scale_min(y->scales, j, &sc, &mn);
    const float ds = d * float(sc);
    if (ds == 0.f) continue;
    const float off = dmin * float(mn);
    for (int i = 0; i < 32; ++i)
      L[32 * j + i] = uint8_t(std::clamp(rint_even((x[32 * j + i] + off) / ds), 0, nmax));
  }
}

}  // namespace

void kquant_scale_min(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void quantize_row_q5_0(const float* src, BlockQ5_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    float amax = 0, vmax = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), vmax = x[j];
    const float d = vmax / -16.f, id = d != 0.f ? 1.f / d : 0.f;
    uint8_t q[32];
    // x * id lies in [-16, 16]: +16.5 then truncation rounds half up, as GGML does.
    for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(31, int(x[j] * id + 16.5f)));
    y[b].d = f32_to_f16(d);
    pack_5bit(q, y[b].qs, y[b].qh);
  }
}

void quantize_row_q5_1(const float* src, BlockQ5_1* y, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    float mn = x[0], mx = x[0];
    for (int j = 1; j < 32; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
    const float d = (mx - mn) / 31.f, id = d != 0.f ? 1.f / d : 0.f;
    uint8_t q[32];
    for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(31, int((x[j] - mn) * id + 0.5f)));
    y[b].d = f32_to_f16(d);
    y[b].m = f32_to_f16(mn);
    pack_5bit(q, y[b].qs, y[b].qh);
  }
}

void quantize_row_q4_k(const float* src, BlockQ4_K* y, int64_t n) {
  uint8_t L[256];
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    kquant_asym_superblock(x, &y[b], 15, -1.f, 20, L);
    // Each 64 values: 32 bytes, value c + i in the low nibble of byte i, value c + 32 + i in the high one.
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 32; ++i) y[b].qs[32 * c + i] = uint8_t(L[64 * c + i] | (L[64 * c + 32 + i] << 4));
  }
}

void quantize_row_q5_k(const float* src, BlockQ5_K* y, int64_t n) {
  uint8_t L[256];
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    kquant_asym_superblock(x, &y[b], 31, -0.5f, 15, L);
    // Low 4 bits as in Q4_K; the 5th bit of value 64c + i is bit 2c of qh[i], of 64c + 32 + i bit 2c + 1.
    std::memset(y[b].qh, 0, sizeof(y[b].qh));
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 32; ++i) {
        const int lo = L[64 * c + i], hi = L[64 * c + 32 + i];
        y[b].qs[32 * c + i] = uint8_t((lo & 0xf) | ((hi & 0xf) << 4));
        y[b].qh[i] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

void quantize_row_q6_k(const float* src, BlockQ6_K* y, int64_t n) {
  int8_t L[256];
  float scales[16];
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    float amax = 0, vmax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > amax) amax = std::fabs(scales[j]), vmax = scales[j];
    }
    std::memset(&y[b], 0, sizeof(BlockQ6_K));
    if (amax < kTinyGroup) continue;  // all zero (d = 0)
    // The scale of largest magnitude maps to -128; the others to int8 against d = 1 / inv.
    const float inv = -128.f / vmax;
    y[b].d = f32_to_f16(1.f / inv);
    for (int j = 0; j < 16; ++j) y[b].scales[j] = int8_t(std::min(127, rint_even(inv * scales[j])));
    const float d = f16_to_f32(y[b].d);
    for (int j = 0; j < 16; ++j) {
      const float ds = d * float(y[b].scales[j]);
      if (ds == 0.f) continue;  // keeps the levels fit_scale_sym chose (they multiply a zero scale)
      for (int i = 0; i < 16; ++i)
        L[16 * j + i] = int8_t(std::clamp(rint_even(x[16 * j + i] / ds), -32, 31) + 32);
    }
    // Each 128 values h: ql[64h + i] holds values i (low nibble) and 64 + i (high); ql[64h + 32 + i] holds
    // 32 + i and 96 + i; qh[32h + i] holds the top 2 bits of values i, 32 + i, 64 + i, 96 + i.
    for (int h = 0; h < 2; ++h) {
      const int8_t* l = L + 128 * h;
      for (int i = 0; i < 32; ++i) {
        y[b].ql[64 * h + i] = uint8_t((l[i] & 0xf) | ((l[64 + i] & 0xf) << 4));
        y[b].ql[64 * h + 32 + i] = uint8_t((l[32 + i] & 0xf) | ((l[96 + i] & 0xf) << 4));
        y[b].qh[32 * h + i] = uint8_t((l[i] >> 4) | ((l[32 + i] >> 4) << 2) | ((l[64 + i] >> 4) << 4) |
                                      ((l[96 + i] >> 4) << 6));
      }
    }
  }
}

}  // namespace llamarun
