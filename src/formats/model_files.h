// Finds and reads the weight files of a model.
#pragma once

#include <string>

#include "formats/weight_map.h"

namespace llamarun {

// `path` is one of:
//   - a GGUF file (".gguf" extension or GGUF magic) -> read_gguf
//   - a ".safetensors" file -> that one file
//   - a directory holding model.safetensors, or model.safetensors.index.json (its weight_map names
//     the shard of every tensor; each shard is read once and must hold the tensors the index gives
//     it), or exactly one *.safetensors file.
// Safetensors checkpoints whose config.json (in the directory, or beside the file) has an AWQ / GPTQ
// int4 quantization_config are repacked into Q4_1 `.weight` tensors (formats/hf_int4.h).
// Throws Error naming the path (and what was looked for) when nothing usable is found. (Meta checkpoint
// directories are Llama-specific: load_model reads them through model/meta_checkpoint.h.)
WeightMap load_weights(const std::string& path);

// Reads a Hugging Face safetensors index (model.safetensors.index.json) and the shards it names,
// which are resolved relative to `dir`.
WeightMap load_safetensors_index(const std::string& index_path, const std::string& dir);

}  // namespace llamarun
