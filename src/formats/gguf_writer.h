// GGUF v3 writer: metadata key/values (typed as GGUF stores them), tensor infos and tensor data, each
// tensor's data starting on `general.alignment` (default 32) from the data section's start, which itself
// starts on that alignment. The file is written to PATH.tmp and renamed over PATH once complete, so an
// error never leaves a truncated GGUF behind.
//
// Tensor data is produced on demand, one tensor at a time in the order the tensors were added
// (`write`'s callback), so a quantiser never holds more than one converted tensor in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llamarun {

// GGUF metadata value type ids (the file format's own numbering).
enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12
};

// One metadata entry: its type and its value's bytes exactly as GGUF encodes them after the type field
// (for an array: element type u32, count u64, elements).
struct GgufKV {
  std::string key;
  GgufValueType type = GgufValueType::U32;
  std::vector<uint8_t> value;
};

// The GGML tensor type id of a DType (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q2_K 10,
// Q3_K 11, Q4_K 12, Q5_K 13, Q6_K 14, Q8_K 15, IQ4_NL 20, IQ4_XS 23, BF16 30).
uint32_t ggml_type_id(DType t);

// The metadata of a GGUF file with each value's type and bytes kept verbatim (the reader's WeightMap
// widens integer types; a copy must keep them, since llama.cpp checks them). Throws Error naming the
// file and key on malformed content.
std::vector<GgufKV> read_gguf_kvs(const std::string& path);

class GgufWriter {
 public:
  // Adds or replaces a key (keeps the first insertion's position).
  void set(GgufKV kv);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_str(const std::string& key, const std::string& v);
  void set_strs(const std::string& key, const std::vector<std::string>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  bool has(const std::string& key) const;
  void erase(const std::string& key);

  // Declares a tensor. `shape` is outermost-first (TensorInfo's convention; reversed into GGUF's `ne`);
  // its innermost dimension must be a multiple of the type's block size. Throws Error naming the tensor.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  size_t tensor_count() const { return tensors_.size(); }

  // Writes the file. `fill(i, dst, nbytes)` must write tensor i's nbytes bytes of data into dst.
  void write(const std::string& path, const std::function<void(size_t, uint8_t*, size_t)>& fill) const;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes;
  };
  uint64_t alignment() const;
  std::vector<GgufKV> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace llamarun
