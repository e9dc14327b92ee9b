// Scalar reference dequantisers for GGML's block formats beyond Q8_0/Q4_0/Q4_1 (layouts in dtype.h).
// Plain loops written from the format definitions, checked against the `gguf` Python package's
// dequantisers (tests/fixtures/quant/quant_blocks.json, tools/make_quant_vectors.py). Each takes n
// values, n a multiple of the type's block size (32 or 256), and writes n floats.
#pragma once

#include <cstdint>
#include <cstring>

namespace llamarun {

void dequantize_row_q5_0(const void* src, float* dst, int64_t n);
void dequantize_row_q5_1(const void* src, float* dst, int64_t n);
void dequantize_row_q2_k(const void* src, float* dst, int64_t n);
void dequantize_row_q3_k(const void* src, float* dst, int64_t n);
void dequantize_row_q4_k(const void* src, float* dst, int64_t n);
void dequantize_row_q5_k(const void* src, float* dst, int64_t n);
void dequantize_row_q6_k(const void* src, float* dst, int64_t n);
void dequantize_row_q8_k(const void* src, float* dst, int64_t n);
void dequantize_row_iq4_nl(const void* src, float* dst, int64_t n);
void dequantize_row_iq4_xs(const void* src, float* dst, int64_t n);

// The 16 values of IQ4_NL / IQ4_XS indices.
extern const int8_t kIQ4Values[16];

// Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
inline void k4_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The same for all eight sub-blocks at once, with word operations (for the SIMD kernels): out[0..8) the
// scales, out[8..16) the mins. Byte j < 4 of a word holds sub-block j's 6 bits; for j >= 4 the low / high
// nibble of byte j + 4, with bits 4-5 the top 2 bits of byte j - 4 (scales) / j (mins).
inline void k4_scales_mins(const uint8_t* s, uint8_t out[16]) {
  uint32_t w[3];
  std::memcpy(w, s, 12);
  const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, b45 = 0x30303030u;  // (b >> 6) << 4 == (b >> 2) & 0x30
  const uint32_t r[4] = {w[0] & lo6, (w[2] & lo4) | ((w[0] >> 2) & b45), w[1] & lo6,
                         ((w[2] >> 4) & lo4) | ((w[1] >> 2) & b45)};
  std::memcpy(out, r, 16);
}

// Q3_K: the signed scale (-32..31) of 16-value sub-block j (0..15) from the 12 packed bytes.
inline int k3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
  const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

}  // namespace llamarun
