// The common result of every model-file reader: named tensors pointing into mmap'ed files, plus the
// file-level metadata (GGUF key/values) needed to build a model config and a tokenizer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/mmap.h"

namespace llamarun {

// A stored tensor. `shape` is outermost-first, as in PyTorch: a Linear weight is {out, in} and each
// of its `out` rows is `in` contiguous values (dtype_row_bytes(dtype, in) bytes). GGUF readers
// reverse GGUF's innermost-first `ne` order into this convention.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // into a mapped file, never owned
  size_t nbytes = 0;
  std::string file;  // which file it came from, for error messages

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// An integer tensor of a safetensors file (dtype I32): the packed int4 words, zero points and group
// indices of AWQ / GPTQ checkpoints. Not a model weight: formats/hf_int4.h repacks these into Q4_1
// `.weight` tensors at load and removes them; one left over is an error.
struct IntTensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  const int32_t* data = nullptr;  // into a mapped file, never owned
  size_t nbytes = 0;
  std::string file;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// GGUF metadata values. Arrays of strings/numbers are kept as vectors.
using MetaValue = std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<std::string>,
                               std::vector<int64_t>, std::vector<double>>;

struct WeightMap {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, MetaValue> meta;           // GGUF key/values; empty for safetensors
  std::vector<std::shared_ptr<MappedFile>> files;  // keep the mappings alive
  // Tensor data built while loading (e.g. model-parallel shards joined), owned here.
  std::vector<std::shared_ptr<std::vector<uint8_t>>> buffers;
  // I32 tensors (safetensors only), see IntTensorInfo.
  std::map<std::string, IntTensorInfo> int_tensors;
  // "awq" or "gptq" when the int4 matrices of such a checkpoint were repacked into Q4_1 at load
  // (formats/hf_int4.h); empty otherwise.
  std::string repacked_from;

  const TensorInfo* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
  // Throws Error naming the tensor if absent.
  const TensorInfo& get(const std::string& name) const;
  size_t total_bytes() const;
};

}  // namespace llamarun
