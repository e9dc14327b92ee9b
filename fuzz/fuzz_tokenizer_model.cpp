// tokenizer.model (a sentencepiece ModelProto, protobuf): parse, build, encode and decode.
#include "core/error.h"
#include "fuzz_util.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  try {
    auto tok =
        tokenizer_from_spm_proto(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.model");
    for (bool special : {false, true}) {
      auto ids = tok->encode("Hello, world! <s> </s> [INST] 123 \xe4\xbd\xa0 \xff", special);
      tok->decode(ids);
    }
    tok->decode({0, 1, 2, tok->vocab_size() - 1, tok->vocab_size(), -1});
  } catch (const Error&) {
  }
  return 0;
}
