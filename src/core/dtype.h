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

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1 };

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

constexpr int kQuantBlock = 32;

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
