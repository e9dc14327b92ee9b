// Scalar reference dots for the int8-activation path (qdot.h): plain loops over the format
// definitions (the same layouts as core/dequant_ref.cpp), exact int32 per block, f32 across blocks.
// Parity tests hold the SIMD dots to these.
#include <cmath>
#include <cstring>

#include "backends/cpu/qdot.h"
#include "core/dequant_ref.h"
#include "core/fp16.h"

namespace llamarun::cpu {
namespace {

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float dot_q8_0(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += int(x[b].qs[l]) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi);
  }
  return s;
}

// Nibble l (< 32) of a 16-byte block: byte l low nibble for l < 16, byte l - 16 high nibble after.
inline int nib(const uint8_t* qs, int l) { return l < 16 ? (qs[l] & 15) : (qs[l - 16] >> 4); }

float dot_q4_0(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += (nib(x[b].qs, l) - 8) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi);
  }
  return s;
}

float dot_q4_1(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ4_1*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += nib(x[b].qs, l) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi) + f16_to_f32(x[b].m) * y[b].d * float(y[b].sum);
  }
  return s;
}

float dot_q5_0(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ5_0*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    const uint32_t qh = load_u32(x[b].qh);
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += ((nib(x[b].qs, l) | int((qh >> l) & 1) << 4) - 16) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi);
  }
  return s;
}

float dot_q5_1(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ5_1*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    const uint32_t qh = load_u32(x[b].qh);
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += (nib(x[b].qs, l) | int((qh >> l) & 1) << 4) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi) + f16_to_f32(x[b].m) * y[b].d * float(y[b].sum);
  }
  return s;
}

float dot_iq4_nl(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockIQ4_NL*>(w);
  const auto* y = static_cast<const BlockQ8A32*>(act);
  float s = 0;
  for (int64_t b = 0; b < K / 32; ++b) {
    int sumi = 0;
    for (int l = 0; l < 32; ++l) sumi += int(kIQ4Values[nib(x[b].qs, l)]) * int(y[b].qs[l]);
    s += f16_to_f32(x[b].d) * y[b].d * float(sumi);
  }
  return s;
}

float dot_q2_k(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(act);
  float s = 0;
  for (int64_t i = 0; i < K / 256; ++i) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 16; ++j) {
      int p = 0;
      for (int v = 16 * j; v < 16 * j + 16; ++v) {
        const int h = v / 128, t = (v / 32) % 4, l = v % 32;
        p += ((x[i].qs[h * 32 + l] >> (2 * t)) & 3) * int(y[i].qs[v]);
      }
      sumi += (x[i].scales[j] & 15) * p;
      summ += (x[i].scales[j] >> 4) * int(y[i].bsums[j]);
    }
    s += f16_to_f32(x[i].d) * y[i].d * float(sumi) - f16_to_f32(x[i].dmin) * y[i].d * float(summ);
  }
  return s;
}

float dot_q3_k(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ3_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(act);
  float s = 0;
  for (int64_t i = 0; i < K / 256; ++i) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      int p = 0;
      for (int v = 16 * j; v < 16 * j + 16; ++v) {
        const int h = v / 128, t = (v / 32) % 4, l = v % 32;
        const int lo = (x[i].qs[h * 32 + l] >> (2 * t)) & 3;
        const int hb = (x[i].hmask[l] >> (v / 32)) & 1;
        p += (lo - (hb ? 0 : 4)) * int(y[i].qs[v]);
      }
      sumi += k3_scale(x[i].scales, j) * p;
    }
    s += f16_to_f32(x[i].d) * y[i].d * float(sumi);
  }
  return s;
}

template <bool kFive, typename Block>
float dot_q45_k(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const Block*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(act);
  float s = 0;
  for (int64_t i = 0; i < K / 256; ++i) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k4_scale_min(x[i].scales, j, &sc, &m);
      int p = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (x[i].qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 15;
        if constexpr (kFive) q |= ((x[i].qh[l] >> j) & 1) << 4;
        p += q * int(y[i].qs[32 * j + l]);
      }
      sumi += sc * p;
      summ += m * (int(y[i].bsums[2 * j]) + int(y[i].bsums[2 * j + 1]));
    }
    s += f16_to_f32(x[i].d) * y[i].d * float(sumi) - f16_to_f32(x[i].dmin) * y[i].d * float(summ);
  }
  return s;
}

float dot_q6_k(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(act);
  float s = 0;
  for (int64_t i = 0; i < K / 256; ++i) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      int p = 0;
      for (int v = 16 * j; v < 16 * j + 16; ++v) {
        const int h = v / 128, t = (v / 32) % 4, l = v % 32;
        const int lo = (x[i].ql[h * 64 + (t % 2) * 32 + l] >> (4 * (t / 2))) & 15;
        const int hi = (x[i].qh[h * 32 + l] >> (2 * t)) & 3;
        p += ((lo | (hi << 4)) - 32) * int(y[i].qs[v]);
      }
      sumi += int(x[i].scales[j]) * p;
    }
    s += f16_to_f32(x[i].d) * y[i].d * float(sumi);
  }
  return s;
}

float dot_iq4_xs(int64_t K, const void* w, const void* act) {
  const auto* x = static_cast<const BlockIQ4_XS*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(act);
  float s = 0;
  for (int64_t i = 0; i < K / 256; ++i) {
    int sumi = 0;
    for (int j = 0; j < 8; ++j) {
      const int ls = ((x[i].scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((x[i].scales_h >> (2 * j)) & 3) << 4);
      int p = 0;
      for (int l = 0; l < 32; ++l) p += int(kIQ4Values[nib(x[i].qs + 16 * j, l)]) * int(y[i].qs[32 * j + l]);
      sumi += (ls - 32) * p;
    }
    s += f16_to_f32(x[i].d) * y[i].d * float(sumi);
  }
  return s;
}

QDotFn scalar_one(DType w) {
  switch (w) {
    case DType::Q8_0:
      return dot_q8_0;
    case DType::Q4_0:
      return dot_q4_0;
    case DType::Q4_1:
      return dot_q4_1;
    case DType::Q5_0:
      return dot_q5_0;
    case DType::Q5_1:
      return dot_q5_1;
    case DType::IQ4_NL:
      return dot_iq4_nl;
    case DType::Q2_K:
      return dot_q2_k;
    case DType::Q3_K:
      return dot_q3_k;
    case DType::Q4_K:
      return dot_q45_k<false, BlockQ4_K>;
    case DType::Q5_K:
      return dot_q45_k<true, BlockQ5_K>;
    case DType::Q6_K:
      return dot_q6_k;
    case DType::IQ4_XS:
      return dot_iq4_xs;
    default:
      return nullptr;
  }
}

}  // namespace

QDot qdot_scalar(DType w) { return QDot{scalar_one(w), nullptr, QTile{}, QTile{}}; }

}  // namespace llamarun::cpu
