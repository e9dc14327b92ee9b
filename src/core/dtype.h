// Element types of stored tensors. Quantised types are block formats (GGML layouts):
//   Q8_0: 32 values per block: f16 scale d, 32 x int8 q;               x = d * q            (34 bytes)
//   Q4_0: 32 values per block: f16 scale d, 16 bytes of nibbles;       x = d * (q - 8)      (18 bytes)
//   Q4_1: 32 values per block: f16 scale d, f16 min m, 16 bytes;       x = d * q + m        (20 bytes)
// In the nibble bytes, byte j holds value j in its low nibble and value j + 16 in its high nibble.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace llamarun {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,
  Q4_0,
  Q4_1,
  // GGML's other block formats (layouts below). Q8_K is the activation format of the k-quant dot products.
  Q5_0,
  Q5_1,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  Q8_K,
  IQ4_NL,
  IQ4_XS
};

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);

constexpr int kQuantBlock = 32;   // values per block of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
constexpr int kSuperBlock = 256;  // values per super-block of the k-quants and IQ4_XS

// Q5_0 / Q5_1: 32 values; the 5th bit of value j is bit j of qh (little-endian u32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
// The k-quants: 256 values in 16 (Q2_K, Q3_K, Q6_K) or 8 (Q4_K, Q5_K) sub-blocks with quantised scales.
struct BlockQ2_K {
  uint8_t scales[16];  // low nibble: scale, high nibble: min, per 16-value sub-block
  uint8_t qs[64];      // 2-bit values
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[32];   // high bit of each value
  uint8_t qs[64];      // low 2 bits
  uint8_t scales[12];  // 16 6-bit scales
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins
  uint8_t qs[128];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct BlockQ6_K {
  uint8_t ql[128];  // low 4 bits
  uint8_t qh[64];   // high 2 bits
  int8_t scales[16];
  uint16_t d;
};
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sums of each 16 values of qs
};
// IQ4_NL: 32 values, 4-bit indices into a fixed non-linear table. IQ4_XS: 256 values, 8 sub-blocks of 32
// with 6-bit scales (low 4 bits in scales_l, high 2 bits in scales_h), the same table.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockQ2_K) == 84 &&
              sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 &&
              sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292 && sizeof(BlockIQ4_NL) == 18 &&
              sizeof(BlockIQ4_XS) == 136);

// Number of values per storage block (1 for plain types).
int dtype_block_size(DType t);
// Bytes per storage block.
size_t dtype_block_bytes(DType t);
bool dtype_is_quantized(DType t);
const char* dtype_name(DType t);
// Bytes for a row of n values; n must be a multiple of the block size (checked by callers).
size_t dtype_row_bytes(DType t, int64_t n);

// Dequantise / convert n values (n a multiple of the block size) of type t starting at src to f32.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// Quantise / convert n f32 values into type t (used by tests, converters and random-weight models).
void quantize_row(DType t, const float* src, void* dst, int64_t n);

}  // namespace llamarun
