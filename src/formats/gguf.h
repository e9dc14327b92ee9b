// GGUF reader (versions 2 and 3, little-endian). The file is memory-mapped; tensor data is used in
// place. Every field is bounds- and overflow-checked (see shared/ROBUSTNESS.md): a malformed file is
// an Error naming the file and the offending key/tensor/value, never a crash.
//
// Metadata values land in WeightMap::meta as:
//   uint8/int8/uint16/int16/uint32/int32/int64 -> int64_t;  uint64 -> uint64_t
//   float32/float64 -> double;  bool -> bool;  string -> std::string
//   array of strings -> vector<string>; array of integers/bools -> vector<int64_t>
//   (uint64 elements above INT64_MAX are an error); array of floats -> vector<double>
// Nested arrays are rejected.
//
// Tensors: supported GGML types are F32(0), F16(1), Q4_0(2), Q4_1(3), Q8_0(8), BF16(30). Shapes are
// reversed from GGUF's innermost-first `ne` into outermost-first order (TensorInfo convention).
// Tensor data must start on its natural alignment (4 bytes for F32, 2 for the others), which any
// general.alignment >= 4 guarantees.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/weight_map.h"

namespace llamarun {

// Limits enforced by the reader.
constexpr size_t kGgufMaxTensorName = 256;  // bytes; llama.cpp itself writes at most 63
constexpr uint32_t kGgufMaxDims = 4;
constexpr uint64_t kGgufDefaultAlignment = 32;

// Reads a GGUF file: metadata into `meta`, tensors into `tensors`, the mapping into `files`.
// Throws Error (naming `path`) on any malformed or unsupported content.
WeightMap read_gguf(const std::string& path);

// True if the file starts with the GGUF magic (false if it cannot be read).
bool looks_like_gguf(const std::string& path);

// Typed metadata access. Each returns `def` when the key is absent and throws Error naming the key,
// the expected type and the actual type when it is present with another type.
// meta_int accepts any integer (int64_t, or uint64_t that fits in int64_t).
int64_t meta_int(const WeightMap& wm, const std::string& key, int64_t def);
// meta_float accepts floats and integers.
double meta_float(const WeightMap& wm, const std::string& key, double def);
bool meta_bool(const WeightMap& wm, const std::string& key, bool def);
std::string meta_str(const WeightMap& wm, const std::string& key, const std::string& def);
// Pointers into the map (nullptr when the key is absent); throw Error on a wrong type.
const std::vector<std::string>* meta_strs(const WeightMap& wm, const std::string& key);
const std::vector<int64_t>* meta_ints(const WeightMap& wm, const std::string& key);
// Float arrays; an array of integers is NOT accepted (e.g. tokenizer scores must be floats).
const std::vector<double>* meta_floats(const WeightMap& wm, const std::string& key);
bool meta_has(const WeightMap& wm, const std::string& key);
// Name of the type held by a MetaValue ("int", "uint64", "float", "bool", "string", "string array",
// "integer array", "float array"), for messages.
const char* meta_type_name(const MetaValue& v);

}  // namespace llamarun
