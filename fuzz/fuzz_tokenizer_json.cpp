// tokenizer.json (Hugging Face tokenizers): parse, build, then encode and decode a little.
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
        tokenizer_from_hf_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
    for (bool special : {false, true}) {
      auto ids = tok->encode("Hello, world! <s> <|im_start|> 123 \xe4\xbd\xa0\xf0\x9f\xa6\x99 \xff", special);
      tok->decode(ids);
      StreamDecoder sd(*tok);
      for (int32_t id : ids) sd.push(id);
      sd.flush();
    }
    tok->decode({0, 1, 2, tok->vocab_size() - 1, tok->vocab_size(), -1});
  } catch (const Error&) {
  }
  return 0;
}
