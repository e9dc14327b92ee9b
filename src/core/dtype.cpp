#include "core/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dequant_ref.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/quantize.h"

namespace llamarun {

int dtype_block_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return 1;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q8_K:
    case DType::IQ4_XS:
      return kSuperBlock;
    default:
      return kQuantBlock;
  }
}

size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::Q8_0:
      return sizeof(BlockQ8_0);
    case DType::Q4_0:
      return sizeof(BlockQ4_0);
    case DType::Q4_1:
      return sizeof(BlockQ4_1);
    case DType::Q5_0:
      return sizeof(BlockQ5_0);
    case DType::Q5_1:
      return sizeof(BlockQ5_1);
    case DType::Q2_K:
      return sizeof(BlockQ2_K);
    case DType::Q3_K:
      return sizeof(BlockQ3_K);
    case DType::Q4_K:
      return sizeof(BlockQ4_K);
    case DType::Q5_K:
      return sizeof(BlockQ5_K);
    case DType::Q6_K:
      return sizeof(BlockQ6_K);
    case DType::Q8_K:
      return sizeof(BlockQ8_K);
    case DType::IQ4_NL:
      return sizeof(BlockIQ4_NL);
    case DType::IQ4_XS:
      return sizeof(BlockIQ4_XS);
  }
  return 0;
}

bool dtype_is_quantized(DType t) { return t != DType::F32 && t != DType::F16 && t != DType::BF16; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F16:
      return "f16";
    case DType::BF16:
      return "bf16";
    case DType::Q8_0:
      return "q8_0";
    case DType::Q4_0:
      return "q4_0";
    case DType::Q4_1:
      return "q4_1";
    case DType::Q5_0:
      return "q5_0";
    case DType::Q5_1:
      return "q5_1";
    case DType::Q2_K:
      return "q2_k";
    case DType::Q3_K:
      return "q3_k";
    case DType::Q4_K:
      return "q4_k";
    case DType::Q5_K:
      return "q5_k";
    case DType::Q6_K:
      return "q6_k";
    case DType::Q8_K:
      return "q8_k";
    case DType::IQ4_NL:
      return "iq4_nl";
    case DType::IQ4_XS:
      return "iq4_xs";
  }
  return "?";
}

size_t dtype_row_bytes(DType t, int64_t n) { return size_t(n / dtype_block_size(t)) * dtype_block_bytes(t); }

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::Q8_0: {
      auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        float d = f16_to_f32(b[i].d);
        for (int j = 0; j < 32; ++j) dst[i * 32 + j] = d * float(b[i].qs[j]);
      }
      return;
    }
    case DType::Q4_0: {
      auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        float d = f16_to_f32(b[i].d);
        for (int j = 0; j < 16; ++j) {
          dst[i * 32 + j] = d * float(int(b[i].qs[j] & 0xf) - 8);
          dst[i * 32 + j + 16] = d * float(int(b[i].qs[j] >> 4) - 8);
        }
      }
      return;
    }
    case DType::Q4_1: {
      auto* b = static_cast<const BlockQ4_1*>(src);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        for (int j = 0; j < 16; ++j) {
          dst[i * 32 + j] = d * float(b[i].qs[j] & 0xf) + m;
          dst[i * 32 + j + 16] = d * float(b[i].qs[j] >> 4) + m;
        }
      }
      return;
    }
    case DType::Q5_0:
      return dequantize_row_q5_0(src, dst, n);
    case DType::Q5_1:
      return dequantize_row_q5_1(src, dst, n);
    case DType::Q2_K:
      return dequantize_row_q2_k(src, dst, n);
    case DType::Q3_K:
      return dequantize_row_q3_k(src, dst, n);
    case DType::Q4_K:
      return dequantize_row_q4_k(src, dst, n);
    case DType::Q5_K:
      return dequantize_row_q5_k(src, dst, n);
    case DType::Q6_K:
      return dequantize_row_q6_k(src, dst, n);
    case DType::Q8_K:
      return dequantize_row_q8_k(src, dst, n);
    case DType::IQ4_NL:
      return dequantize_row_iq4_nl(src, dst, n);
    case DType::IQ4_XS:
      return dequantize_row_iq4_xs(src, dst, n);
  }
  fail("dequantize_row: no dequantiser for ", dtype_name(t));
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::Q8_0: {
      auto* b = static_cast<BlockQ8_0*>(dst);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        const float* x = src + i * 32;
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        float d = amax / 127.f, id = d ? 1.f / d : 0.f;
        b[i].d = f32_to_f16(d);
        for (int j = 0; j < 32; ++j) b[i].qs[j] = int8_t(std::lround(x[j] * id));
      }
      return;
    }
    case DType::Q4_0: {
      auto* b = static_cast<BlockQ4_0*>(dst);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        const float* x = src + i * 32;
        float amax = 0, maxv = 0;
        for (int j = 0; j < 32; ++j)
          if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), maxv = x[j];
        float d = maxv / -8.f, id = d ? 1.f / d : 0.f;
        b[i].d = f32_to_f16(d);
        for (int j = 0; j < 16; ++j) {
          int q0 = std::min(15, int(x[j] * id + 8.5f));
          int q1 = std::min(15, int(x[j + 16] * id + 8.5f));
          b[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
      }
      return;
    }
    case DType::Q4_1: {
      auto* b = static_cast<BlockQ4_1*>(dst);
      for (int64_t i = 0; i < n / kQuantBlock; ++i) {
        const float* x = src + i * 32;
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
        float d = (mx - mn) / 15.f, id = d ? 1.f / d : 0.f;
        b[i].d = f32_to_f16(d);
        b[i].m = f32_to_f16(mn);
        for (int j = 0; j < 16; ++j) {
          int q0 = std::min(15, int((x[j] - mn) * id + 0.5f));
          int q1 = std::min(15, int((x[j + 16] - mn) * id + 0.5f));
          b[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
      }
      return;
    }
    case DType::Q5_0:
      quantize_row_q5_0(src, static_cast<BlockQ5_0*>(dst), n);
      return;
    case DType::Q5_1:
      quantize_row_q5_1(src, static_cast<BlockQ5_1*>(dst), n);
      return;
    case DType::Q4_K:
      quantize_row_q4_k(src, static_cast<BlockQ4_K*>(dst), n);
      return;
    case DType::Q5_K:
      quantize_row_q5_k(src, static_cast<BlockQ5_K*>(dst), n);
      return;
    case DType::Q6_K:
      quantize_row_q6_k(src, static_cast<BlockQ6_K*>(dst), n);
      return;
    default:
      break;
  }
  fail("quantize_row: no quantiser for ", dtype_name(t));
}

}  // namespace llamarun
