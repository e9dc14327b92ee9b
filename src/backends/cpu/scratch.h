// Per-thread scratch buffers for kernels (grown on demand, never shrunk, so the decode loop does not
// allocate after warm-up). Defined in a baseline translation unit so SIMD files need no std containers.
#pragma once

#include <cstddef>

namespace llamarun::cpu {

// Slots let one thread hold several buffers at once.
enum ScratchSlot : int {
  kScratchActivations = 0,
  kScratchWeights = 1,
  kScratchRow = 2,
  kScratchBlockSums = 3,
  kScratchTileWeights = 4,
  kScratchSlots = 5
};

// A 64-byte aligned buffer of at least `bytes` bytes owned by the calling thread. Its content is
// undefined; it stays valid until the same thread asks for the same slot again.
void* thread_scratch(ScratchSlot slot, size_t bytes);

}  // namespace llamarun::cpu
