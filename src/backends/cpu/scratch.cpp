#include "backends/cpu/scratch.h"

#include <cstdlib>
#include <memory>
#include <new>

namespace llamarun::cpu {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

struct ThreadBuffers {
  std::unique_ptr<void, FreeDeleter> ptr[kScratchSlots];
  size_t size[kScratchSlots] = {};
};

}  // namespace

void* thread_scratch(ScratchSlot slot, size_t bytes) {
  thread_local ThreadBuffers buffers;
  if (bytes > buffers.size[slot] || !buffers.ptr[slot]) {
    size_t want = (bytes + (bytes >> 2) + 4095) & ~size_t(4095);  // 25% headroom, whole pages
    void* p = std::aligned_alloc(64, want);
    if (p == nullptr) throw std::bad_alloc();
    buffers.ptr[slot].reset(p);
    buffers.size[slot] = want;
  }
  return buffers.ptr[slot].get();
}

}  // namespace llamarun::cpu
