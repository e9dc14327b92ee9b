// Measured machine limits, the denominators of `llamarun bench` and the op benchmarks
// (achieved / peak). Each takes a fraction of a second to a few seconds; call them once.
#pragma once

#include <cstddef>

namespace llamarun::cpu {

// How the probes time themselves. kWall: wall clock (the real figure on a dedicated machine).
// kThreadCpu: CPU time of the calling thread, single-threaded only (`threads` must be 1): an estimate
// of one core's peak that holds up while other processes compete for the cores.
enum class PeakClock { kWall, kThreadCpu };

// Read bandwidth in GB/s (1e9 bytes/s): `threads` threads stream-read disjoint parts of a buffer of
// `bytes` bytes (default 1 GiB, far larger than the last-level cache) and sum it with SIMD; best of
// several repetitions. Throws Error if the buffer cannot be allocated.
double measure_read_bandwidth_gbs(int threads, size_t bytes = size_t(1) << 30,
                                  PeakClock clock = PeakClock::kWall);

// f32 FMA peak in GFLOP/s (an FMA counts 2): register-resident loop with many independent
// accumulators on each of `threads` threads, at the best SIMD level available; best of several reps.
double measure_fp32_peak_gflops(int threads, PeakClock clock = PeakClock::kWall);

// bf16 dot-product peak in GFLOP/s (vdpbf16ps: 2 multiply-adds per f32 lane = 4 flops) where
// AVX512_BF16 is available, else 0.
double measure_bf16_peak_gflops(int threads, PeakClock clock = PeakClock::kWall);

// Per-ISA inner loops (machine_peak_*.cpp). Return a value derived from the work so it is not
// optimised away.
float read_sum_scalar(const float* p, size_t n);
float read_sum_avx2(const float* p, size_t n);
float read_sum_avx512(const float* p, size_t n);
// `iters` iterations of a fixed number of independent FMAs; *flops receives the flop count.
float fma_loop_avx2(long iters, double* flops);
float fma_loop_avx512(long iters, double* flops);
float dpbf16_loop_avx512(long iters, double* flops);

}  // namespace llamarun::cpu
