// The counter-based random number used by GPU sampling, written once for host and device so that
// tests can reproduce the GPU's draws on the CPU.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LLAMARUN_HD __host__ __device__ __forceinline__
#else
#define LLAMARUN_HD inline
#endif

namespace llamarun::cuda {

// splitmix64 finaliser of (seed, counter): a well-mixed 64-bit value.
LLAMARUN_HD uint64_t mix64(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (counter + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits (exact in float).
LLAMARUN_HD float sample_uniform(uint64_t seed, uint64_t counter) {
  return float(mix64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace llamarun::cuda
