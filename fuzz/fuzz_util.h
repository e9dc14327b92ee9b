// Shared helpers for the libFuzzer targets (fuzz/README.md).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llamarun::fuzz {

// Writes the input to a per-process file in /dev/shm (or /tmp): the GGUF and safetensors readers
// take paths (they map files).
inline std::string write_temp(const std::string& tag, const uint8_t* data, size_t size) {
  const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : "/tmp/";
  const std::string path = dir + "llamarun_fuzz_" + std::to_string(getpid()) + "_" + tag;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

// SmolLM2's tokenizer from the repository's fixtures (loaded once).
inline const Tokenizer& smollm2() {
  static std::unique_ptr<Tokenizer> tok = load_tokenizer_file(
      std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/tokenizer/smollm2_tokenizer.json");
  return *tok;
}

// Splits the input at 0xFF bytes (never in UTF-8) into fields.
inline std::vector<std::string> split_fields(const uint8_t* data, size_t size) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0xFF)
      out.emplace_back();
    else
      out.back() += char(data[i]);
  }
  return out;
}

}  // namespace llamarun::fuzz
