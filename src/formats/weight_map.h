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

// GGUF metadata values. Arrays of strings/numbers are kept as vectors.
using MetaValue = std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<std::string>,
                               std::vector<int64_t>, std::vector<double>>;

struct WeightMap {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, MetaValue> meta;           // GGUF key/values; empty for safetensors
  std::vector<std::shared_ptr<MappedFile>> files;  // keep the mappings alive
  // Tensor data built while loading (e.g. model-parallel shards joined), owned here.
  std::vector<std::shared_ptr<std::vector<uint8_t>>> buffers;

  const TensorInfo* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
  // Throws Error naming the tensor if absent.
  const TensorInfo& get(const std::string& name) const;
  size_t total_bytes() const;
};

}  // namespace llamarun
