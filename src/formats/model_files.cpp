#include "formats/model_files.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/mmap.h"
#include "formats/gguf.h"
#include "formats/hf_int4.h"
#include "formats/safetensors.h"

namespace llamarun {

namespace fs = std::filesystem;

namespace {}  // namespace

WeightMap load_safetensors_index(const std::string& index_path, const std::string& dir) {
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_text_file(index_path));
  } catch (const nlohmann::json::exception& e) {
    fail(index_path, ": not valid JSON: ", e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(index_path, ": missing the 'weight_map' object");
  // shard file -> tensor names it should hold
  std::map<std::string, std::vector<std::string>> shards;
  for (auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail(index_path, ": weight_map entry '", name, "' is not a file name");
    std::string file = shard.get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
        file == "." || file == "..")
      fail(index_path, ": weight_map entry '", name, "' names shard '", file,
           "', which is not a plain file name in the model directory");
    shards[file].push_back(name);
  }
  if (shards.empty()) fail(index_path, ": weight_map is empty");
  WeightMap wm;
  for (auto& [file, names] : shards) {
    std::string shard_path = (fs::path(dir) / file).string();
    if (!file_exists(shard_path))
      fail(index_path, ": shard '", file, "' (holding e.g. '", names.front(), "') does not exist");
    read_safetensors(shard_path, wm);
    for (auto& n : names) {
      const TensorInfo* t = wm.find(n);
      if (!t || t->file != shard_path)
        fail(index_path, ": tensor '", n, "' is listed in shard '", file, "' but that file does not hold it");
    }
  }
  return wm;
}

namespace {

// The safetensors part of load_weights; AWQ/GPTQ repacking is applied by the caller.
WeightMap load_safetensors_weights(const std::string& path) {
  if (!is_directory(path)) {
    if (path.ends_with(".safetensors")) {
      WeightMap wm;
      read_safetensors(path, wm);
      return wm;
    }
    if (path.ends_with(".safetensors.index.json"))
      return load_safetensors_index(path, fs::path(path).parent_path().string());
    fail(path, ": unknown model file type (expected a .gguf or .safetensors file, or a model directory)");
  }
  const fs::path dir(path);
  if (fs::exists(dir / "model.safetensors")) {
    WeightMap wm;
    read_safetensors((dir / "model.safetensors").string(), wm);
    return wm;
  }
  if (fs::exists(dir / "model.safetensors.index.json"))
    return load_safetensors_index((dir / "model.safetensors.index.json").string(), dir.string());
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec) && entry.path().extension() == ".safetensors")
      found.push_back(entry.path().string());
  }
  if (ec) fail(path, ": cannot list directory: ", ec.message());
  if (found.size() == 1) {
    WeightMap wm;
    read_safetensors(found.front(), wm);
    return wm;
  }
  if (found.size() > 1)
    fail(path, ": ", found.size(),
         " .safetensors files but no model.safetensors.index.json saying how they fit");
  fail(path,
       ": no weights found (looked for model.safetensors, model.safetensors.index.json, a single "
       "*.safetensors file; Meta's params.json + consolidated.00.pth load through load_model)");
}

}  // namespace

WeightMap load_weights(const std::string& path) {
  if (!file_exists(path)) fail(path, ": no such file or directory");
  if (!is_directory(path) && (path.ends_with(".gguf") || looks_like_gguf(path))) return read_gguf(path);
  WeightMap wm = load_safetensors_weights(path);
  // AWQ / GPTQ int4 checkpoints: config.json (beside the files) says how; repacked into Q4_1.
  const std::string dir = is_directory(path) ? path : fs::path(path).parent_path().string();
  apply_hf_int4(wm, dir.empty() ? "." : dir);
  return wm;
}

}  // namespace llamarun
