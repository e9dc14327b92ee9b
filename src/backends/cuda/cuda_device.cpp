#include "backends/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "backends/cuda/cuda_check.h"
#include "core/error.h"

namespace llamarun::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" / "no device" state
    return 0;
  }
  return n;
}

bool cuda_available() { return device_count() > 0; }

namespace {
void check_index(int index, const std::string& spec) {
  int n = device_count();
  if (n == 0) fail("device '", spec, "': no CUDA GPU is available (cudaGetDeviceCount found none)");
  if (index < 0 || index >= n)
    fail("device '", spec, "': CUDA device index ", index, " is out of range; ", n, " device",
         n == 1 ? "" : "s", " present (valid: cuda:0", n > 1 ? detail::concat("..cuda:", n - 1) : "", ")");
}
}  // namespace

int parse_device(const std::string& spec) {
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 && spec.size() <= 9) {
    index = 0;
    for (size_t i = 5; i < spec.size(); ++i) {
      if (spec[i] < '0' || spec[i] > '9')
        fail("device '", spec, "': expected 'cuda' or 'cuda:N' with N a number");
      index = index * 10 + (spec[i] - '0');
    }
  } else {
    fail("device '", spec, "': expected 'cuda' or 'cuda:N' with N a number");
  }
  check_index(index, spec);
  return index;
}

void set_device(int index) {
  check_index(index, detail::concat("cuda:", index));
  LLAMARUN_CUDA_CHECK(cudaSetDevice(index));
}

DeviceInfo device_info(int index) {
  check_index(index, detail::concat("cuda:", index));
  cudaDeviceProp p{};
  LLAMARUN_CUDA_CHECK(cudaGetDeviceProperties(&p, index));
  DeviceInfo d;
  d.name = p.name;
  d.index = index;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.total_memory = p.totalGlobalMem;
  d.l2_bytes = size_t(p.l2CacheSize);
  d.smem_optin = p.sharedMemPerBlockOptin;
  int mem_clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, index) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index) == cudaSuccess) {
    d.peak_bw_gbs = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  }
  cudaGetLastError();
  return d;
}

MemInfo mem_info() {
  MemInfo m;
  LLAMARUN_CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
  return m;
}

std::string format_bytes(size_t bytes) {
  char buf[64];
  double b = double(bytes);
  if (b >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  else if (b >= 1e3)
    std::snprintf(buf, sizeof buf, "%.2f kB", b / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

void require_fits(size_t bytes, const std::string& what, size_t reserve) {
  MemInfo m = mem_info();
  if (bytes + reserve > m.free)
    fail(what, " needs ", format_bytes(bytes),
         reserve ? detail::concat(" (+", format_bytes(reserve), " reserve)") : "", " of GPU memory but only ",
         format_bytes(m.free), " of ", format_bytes(m.total),
         " is free (cudaMemGetInfo); use a smaller model, max context or dtype");
}

DeviceAllocator::~DeviceAllocator() { free_all(); }

void* DeviceAllocator::alloc(size_t bytes, const std::string& what) {
  if (bytes == 0) bytes = 256;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    cudaGetLastError();
    fail("cudaMalloc for ", what, " failed (", cudaGetErrorName(err), "): needed ", format_bytes(bytes), ", ",
         format_bytes(fr), " of ", format_bytes(tot), " free; ", format_bytes(allocated_),
         " already allocated by this model");
  }
  sizes_[p] = bytes;
  allocated_ += bytes;
  if (allocated_ > peak_) peak_ = allocated_;
  return p;
}

void DeviceAllocator::free(void* p) {
  if (!p) return;
  auto it = sizes_.find(p);
  if (it == sizes_.end()) fail("DeviceAllocator::free: pointer not owned by this allocator");
  allocated_ -= it->second;
  sizes_.erase(it);
  cudaFree(p);  // errors here are not actionable (called from destructors)
}

void DeviceAllocator::free_all() {
  for (auto& [p, n] : sizes_) cudaFree(p);
  sizes_.clear();
  allocated_ = 0;
}

}  // namespace llamarun::cuda
