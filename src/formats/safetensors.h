// safetensors reader. A file is: 8-byte little-endian header length N, N bytes of UTF-8 JSON
// (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}}`),
// then the tensor data; offsets are relative to the start of the data. The file is memory-mapped and
// tensors point into the mapping. All checks of shared/ROBUSTNESS.md are enforced: a malformed file
// is an Error naming the file and the tensor/field, never a crash.
#pragma once

#include <string>

#include "formats/weight_map.h"

namespace llamarun {

// Largest JSON header accepted (the reference implementation's limit).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

// Adds the tensors of one safetensors file to `out` (and its mapping to out.files).
// Supported dtypes: F32, F16, BF16, and I32 (AWQ/GPTQ packed int4 words, zero points, group indices),
// which go to out.int_tensors. Each non-empty tensor must start at a file offset that is a
// multiple of its element size (the reference writer guarantees this). A tensor name already present in `out`
// (e.g. from another shard) is an error. `out` is left unchanged if the file is rejected.
void read_safetensors(const std::string& path, WeightMap& out);

}  // namespace llamarun
