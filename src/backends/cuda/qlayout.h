// The GPU layout of quantized weights (GGML block types Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) and its
// decoders, shared by the CUDA kernels (qgemv.cu) and the host, which repacks GGML blocks into it at load
// and checks the decoders against the CPU reference dequantizers (tests/test_qlayout.cpp, a CPU test).
//
// Every type is decoded in units of 32 consecutive values; one GPU thread decodes one unit into 8 ints of
// 4 int8 quants each (values 0..15 of the unit in q[0..3], 16..31 in q[4..7], in value order), a scale
// per 16 values a[2] and an offset b (value = a * q + b). A warp reads the units u = lane, lane + 32, ...
// of a row, so the layout puts each unit's quants where a warp's 16-byte loads are contiguous (512 bytes
// per load instruction, no sector read twice):
//   - 4-bit types (Q4_0, Q4_1, Q4_K, Q5_K's low bits, Q6_K's low bits): 16 bytes per unit at 16 u, byte i
//     holding value i in its low nibble and value 16 + i in its high nibble (Q4_0's own order; the k-quants
//     are reordered on the host);
//   - 8-bit (Q8_0): per group of 32 units, the first 16 bytes of each unit, then the second 16 (qx_off);
//   - Q5_K's fifth bits: one word per unit (byte b, bit i: value 4 i + b; bit 4 + i: value 16 + 4 i + b);
//     Q6_K's two high bits: two words per unit (values 0..15, then 16..31; byte b, bits 2i..2i+1: value
//     4 i + b of that half);
//   - the scales ("header"): Q8_0 d, Q4_0 d, Q4_1 (d, m) per unit; Q4_K / Q5_K the block's first 16 bytes
//     as in GGML (d, dmin, 12 bytes of 6-bit scales and mins) per 8 units; Q6_K its 16 int8 scales per
//     block (two per unit), then the blocks' fp16 d.
// A matrix stores every row's payload (rows x nb x payload bytes), then every row's header; within a row
// the regions above follow each other. Bytes are those of the GGUF file: only their order changes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/fp16.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define LLAMARUN_HD __host__ __device__ __forceinline__
#else
#define LLAMARUN_HD inline
#endif
#if defined(__CUDA_ARCH__)
#define LLAMARUN_UNROLL _Pragma("unroll")
#else
#define LLAMARUN_UNROLL
#endif

namespace llamarun::qgpu {

constexpr uint32_t kLow4 = 0x0F0F0F0Fu;

struct W4 {
  uint32_t x, y, z, w;
};

// Loads from the weights (read-only for the kernel's lifetime: the non-coherent path; 16-byte loads skip
// L1, being read once). Not volatile, so the compiler may issue several units' loads before their math.
LLAMARUN_HD W4 ld16(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  W4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
#else
  W4 r;
  std::memcpy(&r, p, 16);
  return r;
#endif
}
LLAMARUN_HD uint32_t ld4(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned int*>(p));
#else
  uint32_t r;
  std::memcpy(&r, p, 4);
  return r;
#endif
}
LLAMARUN_HD uint32_t ld2(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned short*>(p));
#else
  uint16_t r;
  std::memcpy(&r, p, 2);
  return r;
#endif
}
LLAMARUN_HD float h2f(uint32_t bits16) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16 & 0xffffu)));
#else
  return f16_to_f32(uint16_t(bits16 & 0xffffu));
#endif
}

// Byte offset of half h (16 bytes) of unit u among a row's `units` 32-byte units, grouped 32 at a time
// (the last group may be shorter): first halves of the group's units, then its second halves. Used for
// Q8_0 quants and for the int8 activations the GEMV multiplies them with.
LLAMARUN_HD int qx_off(int u, int units, int h) {
  const int g = u & ~31;
  const int n = units - g < 32 ? units - g : 32;
  return 32 * g + 16 * n * h + 16 * (u - g);
}

// 16 bytes of nibbles -> q[0..3] low nibbles (values 0..15), q[4..7] high nibbles (values 16..31).
LLAMARUN_HD void nibbles(const W4& v, int* q) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  LLAMARUN_UNROLL
  for (int i = 0; i < 4; ++i) {
    q[i] = int(w[i] & kLow4);
    q[4 + i] = int((w[i] >> 4) & kLow4);
  }
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 scale bytes (words s0, s1, s2), without
// indexing an array by j (which would put the words in local memory).
LLAMARUN_HD void k4_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, int& sc, int& m) {
  const int sh = 8 * (j & 3);
  const uint32_t b0 = (s0 >> sh) & 0xffu, b1 = (s1 >> sh) & 0xffu, b2 = (s2 >> sh) & 0xffu;
  if (j < 4) {
    sc = int(b0 & 63);
    m = int(b1 & 63);
  } else {
    sc = int((b2 & 0x0f) | ((b0 >> 6) << 4));
    m = int((b2 >> 4) | ((b1 >> 6) << 4));
  }
}

// Dec<QT>::run(payload row, header row, units per row, unit u, q[8], a[2], b) = decode(load(...)): load
// reads the unit's bytes and its scales (Raw: the quants still packed, the scales as floats), decode
// unpacks the quants, so that a kernel can hold several units' loads in few registers. kOneScale: a[0] ==
// a[1] always (one scale per unit), so a GEMV sums the unit's 32 products in one dp4a chain.
template <DType QT>
struct Dec;
template <typename D>
struct DecRun {
  LLAMARUN_HD static void run(const uint8_t* p, const uint8_t* h, int units, int u, int* q, float* a,
                              float& b) {
    D::decode(D::load(p, h, units, u), q, a, b);
  }
};

template <>
struct Dec<DType::Q8_0> : DecRun<Dec<DType::Q8_0>> {
  static constexpr int kBlock = 32, kPayload = 32, kHeader = 2;
  static constexpr bool kOneScale = true;  // a[0] == a[1]
  struct Raw {
    W4 v0, v1;
    float d;
  };
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int units, int u) {
    return {ld16(p + qx_off(u, units, 0)), ld16(p + qx_off(u, units, 1)), h2f(ld2(h + 2 * u))};
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) {
    q[0] = int(r.v0.x), q[1] = int(r.v0.y), q[2] = int(r.v0.z), q[3] = int(r.v0.w);
    q[4] = int(r.v1.x), q[5] = int(r.v1.y), q[6] = int(r.v1.z), q[7] = int(r.v1.w);
    a[0] = a[1] = r.d;
    b = 0.f;
  }
};

// Q4_0 / Q4_1 / Q4_K / Q5_K as loaded: the unit's nibbles, its scale and offset (value = a * q + b), and
// Q5_K's fifth bits.
struct Raw4 {
  W4 v;
  float a, b;
  uint32_t hb;
};
LLAMARUN_HD void decode4(const Raw4& r, bool five, int* q, float* a, float& b) {
  nibbles(r.v, q);
  if (five) {
    LLAMARUN_UNROLL
    for (int i = 0; i < 4; ++i) {
      q[i] |= int(((r.hb >> i) & 0x01010101u) << 4);
      q[4 + i] |= int(((r.hb >> (4 + i)) & 0x01010101u) << 4);
    }
  }
  a[0] = a[1] = r.a;
  b = r.b;
}

template <>
struct Dec<DType::Q4_0> : DecRun<Dec<DType::Q4_0>> {
  static constexpr int kBlock = 32, kPayload = 16, kHeader = 2;
  static constexpr bool kOneScale = true;
  using Raw = Raw4;
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int, int u) {
    const float d = h2f(ld2(h + 2 * u));
    return {ld16(p + 16 * u), d, -8.f * d, 0u};
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) { decode4(r, false, q, a, b); }
};

template <>
struct Dec<DType::Q4_1> : DecRun<Dec<DType::Q4_1>> {
  static constexpr int kBlock = 32, kPayload = 16, kHeader = 4;
  static constexpr bool kOneScale = true;
  using Raw = Raw4;
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int, int u) {
    const uint32_t dm = ld4(h + 4 * u);
    return {ld16(p + 16 * u), h2f(dm), h2f(dm >> 16), 0u};
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) { decode4(r, false, q, a, b); }
};

// Q4_K (kFive false) / Q5_K: value = d * sc_j * q - dmin * m_j for sub-block j = u % 8 of block u / 8.
template <bool kFive>
LLAMARUN_HD Raw4 load_k45(const uint8_t* p, const uint8_t* h, int units, int u) {
  Raw4 r;
  r.v = ld16(p + 16 * u);
  r.hb = kFive ? ld4(p + 16 * units + 4 * u) : 0u;
  const W4 hd = ld16(h + 16 * (u >> 3));
  int sc, m;
  k4_scale_min(hd.y, hd.z, hd.w, u & 7, sc, m);
  r.a = h2f(hd.x) * float(sc);
  r.b = -h2f(hd.x >> 16) * float(m);
  return r;
}

template <>
struct Dec<DType::Q4_K> : DecRun<Dec<DType::Q4_K>> {
  static constexpr int kBlock = 256, kPayload = 128, kHeader = 16;
  static constexpr bool kOneScale = true;
  using Raw = Raw4;
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int units, int u) {
    return load_k45<false>(p, h, units, u);
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) { decode4(r, false, q, a, b); }
};
template <>
struct Dec<DType::Q5_K> : DecRun<Dec<DType::Q5_K>> {
  static constexpr int kBlock = 256, kPayload = 160, kHeader = 16;
  static constexpr bool kOneScale = true;
  using Raw = Raw4;
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int units, int u) {
    return load_k45<true>(p, h, units, u);
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) { decode4(r, true, q, a, b); }
};

// Q6_K: value = d * sc[n / 16] * (q - 32), q 6 bits: the low 4 in the nibbles, the high 2 in two words.
template <>
struct Dec<DType::Q6_K> : DecRun<Dec<DType::Q6_K>> {
  static constexpr int kBlock = 256, kPayload = 192, kHeader = 18;
  static constexpr bool kOneScale = false;  // a scale per 16 values
  struct Raw {
    W4 lo;
    uint32_t h0, h1;
    float a0, a1;
  };
  LLAMARUN_HD static Raw load(const uint8_t* p, const uint8_t* h, int units, int u) {
    const uint8_t* hp = p + 16 * units + 8 * u;
    const uint32_t sc = ld2(h + 2 * u);
    const float d = h2f(ld2(h + 2 * units + 2 * (u >> 3)));
    return {ld16(p + 16 * u), ld4(hp), ld4(hp + 4), d * float(int8_t(sc & 0xffu)),
            d * float(int8_t(sc >> 8))};
  }
  LLAMARUN_HD static void decode(const Raw& r, int* q, float* a, float& b) {
    const uint32_t w[4] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w};
    // (v | 0x80) - 32, then flip bit 7 back: v - 32 per byte for v in [0, 64), without borrows between bytes.
    auto sub32 = [](uint32_t v) { return int(((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u); };
    LLAMARUN_UNROLL
    for (int i = 0; i < 4; ++i) {
      q[i] = sub32((w[i] & kLow4) | (((r.h0 >> (2 * i)) & 0x03030303u) << 4));
      q[4 + i] = sub32(((w[i] >> 4) & kLow4) | (((r.h1 >> (2 * i)) & 0x03030303u) << 4));
    }
    a[0] = r.a0;
    a[1] = r.a1;
    b = 0.f;
  }
};

template <DType QT>
struct QTag {
  static constexpr DType kType = QT;
};
// Calls f(QTag<t>{}) for a type t with a GPU layout; false for any other type.
template <typename F>
bool with_qtype(DType t, F&& f) {
  switch (t) {
    case DType::Q8_0:
      return f(QTag<DType::Q8_0>{}), true;
    case DType::Q4_0:
      return f(QTag<DType::Q4_0>{}), true;
    case DType::Q4_1:
      return f(QTag<DType::Q4_1>{}), true;
    case DType::Q4_K:
      return f(QTag<DType::Q4_K>{}), true;
    case DType::Q5_K:
      return f(QTag<DType::Q5_K>{}), true;
    case DType::Q6_K:
      return f(QTag<DType::Q6_K>{}), true;
    default:
      return false;
  }
}

// ---- host: GGML blocks -> the layout ----

// The unsigned stored quant of value n (0..255) of a k-quant block: Q4_K 4 bits, Q5_K 5, Q6_K 6.
inline int kquant_value(DType t, const uint8_t* blk, int n) {
  if (t == DType::Q6_K) {
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int hh = n / 128, r = n % 128, tq = r / 32, l = r % 32;
    const uint8_t lb = ql[64 * hh + 32 * (tq & 1) + l];
    const int low = tq >= 2 ? lb >> 4 : lb & 0xF;
    return low | (((qh[32 * hh + l] >> (2 * tq)) & 3) << 4);
  }
  const bool five = t == DType::Q5_K;
  const uint8_t* qs = blk + (five ? 48 : 16);
  const int c = n / 64, hf = (n / 32) & 1, l = n % 32;
  int v = (qs[32 * c + l] >> (4 * hf)) & 0xF;
  if (five) v |= ((blk[16 + l] >> (n / 32)) & 1) << 4;
  return v;
}

// One row of cols values: GGML blocks src -> its payload row p and header row h.
inline void pack_row(DType t, const uint8_t* src, int64_t cols, uint8_t* p, uint8_t* h) {
  const int units = int(cols / 32);
  switch (t) {
    case DType::Q8_0:
      for (int u = 0; u < units; ++u, src += 34) {
        std::memcpy(h + 2 * u, src, 2);
        std::memcpy(p + qx_off(u, units, 0), src + 2, 16);
        std::memcpy(p + qx_off(u, units, 1), src + 18, 16);
      }
      return;
    case DType::Q4_0:
    case DType::Q4_1: {
      const int hb = t == DType::Q4_0 ? 2 : 4;
      for (int u = 0; u < units; ++u, src += hb + 16) {
        std::memcpy(h + hb * u, src, size_t(hb));
        std::memcpy(p + 16 * u, src + hb, 16);
      }
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: {
      const int bb = t == DType::Q4_K ? 144 : t == DType::Q5_K ? 176 : 210;
      for (int k = 0; k < units / 8; ++k, src += bb) {
        int v[256];
        for (int n = 0; n < 256; ++n) v[n] = kquant_value(t, src, n);
        for (int s = 0; s < 8; ++s) {
          const int u = 8 * k + s;
          const int* vs = v + 32 * s;
          for (int i = 0; i < 16; ++i) p[16 * u + i] = uint8_t((vs[i] & 0xF) | ((vs[16 + i] & 0xF) << 4));
          if (t == DType::Q5_K) {
            uint32_t w = 0;
            for (int b = 0; b < 4; ++b)
              for (int i = 0; i < 4; ++i)
                w |= uint32_t((vs[4 * i + b] >> 4) & 1) << (8 * b + i) |
                     uint32_t((vs[16 + 4 * i + b] >> 4) & 1) << (8 * b + 4 + i);
            std::memcpy(p + 16 * units + 4 * u, &w, 4);
          } else if (t == DType::Q6_K) {
            uint32_t w[2] = {0, 0};
            for (int half = 0; half < 2; ++half)
              for (int b = 0; b < 4; ++b)
                for (int i = 0; i < 4; ++i)
                  w[half] |= uint32_t(vs[16 * half + 4 * i + b] >> 4) << (8 * b + 2 * i);
            std::memcpy(p + 16 * units + 8 * u, w, 8);
          }
        }
        if (t == DType::Q6_K) {
          std::memcpy(h + 16 * k, src + 192, 16);
          std::memcpy(h + 2 * units + 2 * k, src + 208, 2);
        } else {
          std::memcpy(h + 16 * k, src, 16);
        }
      }
      return;
    }
    default:
      fail("qgpu::pack_row: ", dtype_name(t), " has no GPU layout");
  }
}

// Bytes per block in the payload and header regions, or false for a type without GPU kernels.
inline bool block_bytes(DType t, int* payload, int* header) {
  return with_qtype(t, [&](auto tag) {
    using D = Dec<decltype(tag)::kType>;
    if (payload) *payload = D::kPayload;
    if (header) *header = D::kHeader;
  });
}

// rows x cols GGML blocks -> the payload rows (rows x nb x payload bytes) and header rows.
inline void pack_rows(DType t, const void* src, int64_t rows, int64_t cols, void* payload, void* header) {
  int pb = 0, hb = 0;
  if (!block_bytes(t, &pb, &hb)) fail("qgpu::pack_rows: ", dtype_name(t), " has no GPU layout");
  const int64_t nb = cols / dtype_block_size(t);
  const size_t srow = dtype_row_bytes(t, cols);
  for (int64_t r = 0; r < rows; ++r)
    pack_row(t, static_cast<const uint8_t*>(src) + size_t(r) * srow, cols,
             static_cast<uint8_t*>(payload) + size_t(r * nb) * pb,
             static_cast<uint8_t*>(header) + size_t(r * nb) * hb);
}

}  // namespace llamarun::qgpu
