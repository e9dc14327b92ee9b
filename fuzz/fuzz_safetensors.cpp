// safetensors (the 8-byte length, the JSON header, tensor offsets) and config.json. The input is
// "config.json bytes 0xFF safetensors bytes" (split at the first 0xFF).
#include <unistd.h>

#include "core/error.h"
#include "formats/safetensors.h"
#include "formats/weight_map.h"
#include "fuzz_util.h"
#include "model/config.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  size_t cut = 0;
  while (cut < size && data[cut] != 0xFF) ++cut;
  const std::string config(reinterpret_cast<const char*>(data), cut);
  const size_t rest = cut < size ? cut + 1 : size;
  try {
    config_from_hf_json(config, "config.json");
  } catch (const Error&) {
  }
  const std::string path = fuzz::write_temp("st", data + rest, size - rest);
  try {
    WeightMap wm;
    read_safetensors(path, wm);
  } catch (const Error&) {
  }
  unlink(path.c_str());
  return 0;
}
