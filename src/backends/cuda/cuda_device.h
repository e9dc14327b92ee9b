// CUDA device selection, device properties and device-memory accounting. Plain C++ header: it can be
// included from code built without CUDA headers (the implementation needs the CUDA runtime).
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>

namespace llamarun::cuda {

// Number of CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
bool cuda_available();

// Parses a device spec: "cuda" -> 0, "cuda:N" -> N. Throws Error for a malformed spec, when no GPU is
// present, or when N is out of range (the message says how many devices exist).
int parse_device(const std::string& spec);
// Makes `index` the current device of this thread (checked as parse_device does).
void set_device(int index);

struct DeviceInfo {
  std::string name;
  int index = 0;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t total_memory = 0;  // bytes
  size_t l2_bytes = 0;
  size_t smem_optin = 0;   // largest dynamic shared memory a block can opt into
  double peak_bw_gbs = 0;  // from memory clock and bus width (a datasheet-style lead, not measured)
};
DeviceInfo device_info(int index);

struct MemInfo {
  size_t free = 0, total = 0;  // bytes, from cudaMemGetInfo on the current device
};
MemInfo mem_info();

// "13.48 GB" style, decimal units.
std::string format_bytes(size_t bytes);

// Throws Error "<what> needs X but only Y of Z is free on the GPU" when `bytes` (+ reserve) exceed the
// current device's free memory.
void require_fits(size_t bytes, const std::string& what, size_t reserve = 0);

// Owns device allocations and counts them: bytes in use and the peak. Frees everything it still owns
// on destruction. Not thread-safe (one per model runner).
class DeviceAllocator {
 public:
  DeviceAllocator() = default;
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // cudaMalloc; on failure throws Error naming `what`, the bytes asked for and the free memory.
  void* alloc(size_t bytes, const std::string& what);
  template <typename T>
  T* alloc_n(size_t n, const std::string& what) {
    return static_cast<T*>(alloc(n * sizeof(T), what));
  }
  void free(void* p);
  void free_all();

  size_t allocated() const { return allocated_; }
  size_t peak() const { return peak_; }

 private:
  std::unordered_map<void*, size_t> sizes_;
  size_t allocated_ = 0;
  size_t peak_ = 0;
};

}  // namespace llamarun::cuda
