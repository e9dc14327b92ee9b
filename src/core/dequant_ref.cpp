#include "core/dequant_ref.h"

#include <cstring>

#include "core/dtype.h"
#include "core/fp16.h"

namespace llamarun {

const int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
}  // namespace

void dequantize_row_q5_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQuantBlock; ++i, dst += 32) {
    const float d = f16_to_f32(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 32; ++j) {
      const int lo = j < 16 ? (b[i].qs[j] & 0x0f) : (b[i].qs[j - 16] >> 4);
      dst[j] = d * float((lo | int((qh >> j) & 1) << 4) - 16);
    }
  }
}

void dequantize_row_q5_1(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQuantBlock; ++i, dst += 32) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 32; ++j) {
      const int lo = j < 16 ? (b[i].qs[j] & 0x0f) : (b[i].qs[j - 16] >> 4);
      dst[j] = d * float(lo | int((qh >> j) & 1) << 4) + m;
    }
  }
}

// Q2_K: value v = h * 128 + s * 32 + l (h < 2, s < 4, l < 32) is bits 2s..2s+1 of qs[h * 32 + l];
// 16-value sub-block v / 16 has scale d * (scales & 15) and min dmin * (scales >> 4).
void dequantize_row_q2_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int v = 0; v < 256; ++v) {
      const int h = v / 128, s = (v / 32) % 4, l = v % 32;
      const int q = (b[i].qs[h * 32 + l] >> (2 * s)) & 3;
      const uint8_t sc = b[i].scales[v / 16];
      dst[v] = d * float(sc & 15) * float(q) - dmin * float(sc >> 4);
    }
  }
}

// Q3_K: low 2 bits as Q2_K; the high bit of value v is bit v / 32 of hmask[v % 32], and a clear
// high bit subtracts 4. Scales: 16 signed 6-bit values (k3_scale).
void dequantize_row_q3_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d);
    for (int v = 0; v < 256; ++v) {
      const int h = v / 128, s = (v / 32) % 4, l = v % 32;
      const int lo = (b[i].qs[h * 32 + l] >> (2 * s)) & 3;
      const int hb = (b[i].hmask[l] >> (v / 32)) & 1;
      dst[v] = d * float(k3_scale(b[i].scales, v / 16)) * float(lo - (hb ? 0 : 4));
    }
  }
}

// Q4_K: value v = c * 64 + s * 32 + l is nibble s of qs[c * 32 + l]; 32-value sub-block j = v / 32
// has scale d * sc_j and min dmin * m_j.
void dequantize_row_q4_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int v = 0; v < 256; ++v) {
      const int j = v / 32, c = v / 64, s = j % 2, l = v % 32;
      int sc, m;
      k4_scale_min(b[i].scales, j, &sc, &m);
      const int q = (b[i].qs[c * 32 + l] >> (4 * s)) & 15;
      dst[v] = d * float(sc) * float(q) - dmin * float(m);
    }
  }
}

// Q5_K: Q4_K plus the 5th bit of value v: bit v / 32 of qh[v % 32].
void dequantize_row_q5_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int v = 0; v < 256; ++v) {
      const int j = v / 32, c = v / 64, s = j % 2, l = v % 32;
      int sc, m;
      k4_scale_min(b[i].scales, j, &sc, &m);
      const int q = ((b[i].qs[c * 32 + l] >> (4 * s)) & 15) | (((b[i].qh[l] >> j) & 1) << 4);
      dst[v] = d * float(sc) * float(q) - dmin * float(m);
    }
  }
}

// Q6_K: value v = h * 128 + t * 32 + l (t < 4, l < 32): low 4 bits are nibble t / 2 of
// ql[h * 64 + (t % 2) * 32 + l], high 2 bits are bits 2t..2t+1 of qh[h * 32 + l]; q - 32 times
// d * scales[v / 16].
void dequantize_row_q6_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d);
    for (int v = 0; v < 256; ++v) {
      const int h = v / 128, t = (v / 32) % 4, l = v % 32;
      const int lo = (b[i].ql[h * 64 + (t % 2) * 32 + l] >> (4 * (t / 2))) & 15;
      const int hi = (b[i].qh[h * 32 + l] >> (2 * t)) & 3;
      dst[v] = d * float(b[i].scales[v / 16]) * float((lo | (hi << 4)) - 32);
    }
  }
}

void dequantize_row_q8_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256)
    for (int v = 0; v < 256; ++v) dst[v] = b[i].d * float(b[i].qs[v]);
}

void dequantize_row_iq4_nl(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_NL*>(src);
  for (int64_t i = 0; i < n / kQuantBlock; ++i, dst += 32) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * float(kIQ4Values[b[i].qs[j] & 15]);
      dst[j + 16] = d * float(kIQ4Values[b[i].qs[j] >> 4]);
    }
  }
}

// IQ4_XS: 8 sub-blocks of 32 (each laid out as IQ4_NL's 16 bytes) with scale
// d * ((low nibble of scales_l) | (2 bits of scales_h) << 4) - 32.
void dequantize_row_iq4_xs(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / kSuperBlock; ++i, dst += 256) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 8; ++j) {
      const int ls = ((b[i].scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((b[i].scales_h >> (2 * j)) & 3) << 4);
      const float dl = d * float(ls - 32);
      const uint8_t* q = b[i].qs + 16 * j;
      for (int l = 0; l < 16; ++l) {
        dst[32 * j + l] = dl * float(kIQ4Values[q[l] & 15]);
        dst[32 * j + l + 16] = dl * float(kIQ4Values[q[l] >> 4]);
      }
    }
  }
}

}  // namespace llamarun
