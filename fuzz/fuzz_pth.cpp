// PyTorch .pth (Meta checkpoints): the zip directory reader and the restricted unpickler, on bytes in memory.
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/pth.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  try {
    const std::vector<PthTensor> tensors = parse_pth(std::span<const uint8_t>(data, size), "fuzz.pth");
    // Every tensor must lie inside the input: touch its first and last byte.
    volatile uint8_t sink = 0;
    for (const PthTensor& t : tensors)
      if (t.nbytes > 0) {
        const auto* p = static_cast<const uint8_t*>(t.data);
        sink = sink ^ p[0] ^ p[t.nbytes - 1];
      }
    (void)sink;
  } catch (const Error&) {
  }
  return 0;
}
