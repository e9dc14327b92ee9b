// GGUF: the header, metadata and tensor table reader, then what the loader derives from the
// metadata (the model config, the embedded tokenizer, the chat template).
#include <unistd.h>

#include "core/error.h"
#include "formats/gguf.h"
#include "fuzz_util.h"
#include "model/config.h"
#include "tokenizer/chat_template.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_temp("gguf", data, size);
  try {
    WeightMap wm = read_gguf(path);
    try {
      config_from_gguf(wm, path);
    } catch (const Error&) {
    }
    try {
      auto tok = tokenizer_from_gguf(wm);
      auto ids = tok->encode("Hello <s> world 🦙", true);
      tok->decode(ids);
    } catch (const Error&) {
    }
    try {
      gguf_chat_template(wm);
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  unlink(path.c_str());
  return 0;
}
