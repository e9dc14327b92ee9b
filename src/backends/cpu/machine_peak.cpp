#include "backends/cpu/machine_peak.h"

#include <omp.h>
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "backends/cpu/simd_level.h"
#include "core/error.h"

namespace llamarun::cpu {
namespace {

double now_s(PeakClock clock) {
  if (clock == PeakClock::kThreadCpu) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_threads(const char* what, int threads, PeakClock clock) {
  LLAMARUN_CHECK(threads >= 1, what, ": threads=", threads, " (need >= 1)");
  LLAMARUN_CHECK(clock == PeakClock::kWall || threads == 1, what, ": thread CPU time needs threads=1, got ",
                 threads);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Best GFLOP/s of `reps` runs of loop(iters) on `threads` threads.
double best_gflops(int threads, PeakClock clock, float (*loop)(long, double*), long iters, int reps) {
  double best = 0;
  float sink = 0;
  for (int rep = 0; rep < reps; ++rep) {
    double flops_total = 0;
    const double t0 = now_s(clock);
#pragma omp parallel num_threads(threads) reduction(+ : flops_total) reduction(+ : sink)
    {
      double f = 0;
      sink += loop(iters, &f);
      flops_total += f;
    }
    const double dt = now_s(clock) - t0;
    if (dt > 0 && flops_total / dt > best) best = flops_total / dt;
  }
  if (sink == 12345.678f) best += 0;  // keeps `sink` alive
  return best * 1e-9;
}

}  // namespace

double measure_read_bandwidth_gbs(int threads, size_t bytes, PeakClock clock) {
  check_threads("measure_read_bandwidth_gbs", threads, clock);
  const size_t n = bytes / sizeof(float) / 64 * 64;
  LLAMARUN_CHECK(n > 0, "measure_read_bandwidth_gbs: buffer of ", bytes, " bytes is too small");
  std::unique_ptr<float, FreeDeleter> buf(static_cast<float*>(std::aligned_alloc(64, n * sizeof(float))));
  LLAMARUN_CHECK(buf != nullptr, "measure_read_bandwidth_gbs: cannot allocate ", bytes, " bytes");
  float* p = buf.get();
  const SimdLevel level = active_simd_level();
  float (*sum)(const float*, size_t) = level >= SimdLevel::kAvx512 ? read_sum_avx512
                                       : level >= SimdLevel::kAvx2 ? read_sum_avx2
                                                                   : read_sum_scalar;
  // First touch by the threads that will read (same static split), so pages are local to them.
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const size_t chunk = n / size_t(nt) / 16 * 16, begin = size_t(t) * chunk;
    const size_t end = t == nt - 1 ? n : begin + chunk;
    for (size_t i = begin; i < end; ++i) p[i] = float(i & 1023) * 1e-3f;
  }
  double best = 0;
  float sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now_s(clock);
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t chunk = n / size_t(nt) / 16 * 16, begin = size_t(t) * chunk;
      const size_t end = t == nt - 1 ? n : begin + chunk;
      sink += sum(p + begin, end - begin);
    }
    const double dt = now_s(clock) - t0;
    const double gbs = double(n) * sizeof(float) / dt * 1e-9;
    if (gbs > best) best = gbs;
  }
  if (sink == 12345.678f) best += 0;
  return best;
}

double measure_fp32_peak_gflops(int threads, PeakClock clock) {
  check_threads("measure_fp32_peak_gflops", threads, clock);
  const SimdLevel level = active_simd_level();
  if (level == SimdLevel::kScalar) {
    // Plain C++ loop (the compiler may use SSE): a rough figure for CPUs without AVX2.
    return best_gflops(
        threads, clock,
        [](long iters, double* flops) {
          float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
          for (long i = 0; i < iters; ++i)
            for (float& v : a) v = v * 0.999999f + 1e-7f;
          *flops = double(iters) * 8 * 2;
          return a[0] + a[7];
        },
        20'000'000, 3);
  }
  double best = best_gflops(threads, clock, fma_loop_avx2, 20'000'000, 5);
  if (level >= SimdLevel::kAvx512) {
    const double b512 = best_gflops(threads, clock, fma_loop_avx512, 10'000'000, 5);
    if (b512 > best) best = b512;
  }
  return best;
}

double measure_bf16_peak_gflops(int threads, PeakClock clock) {
  check_threads("measure_bf16_peak_gflops", threads, clock);
  if (active_simd_level() < SimdLevel::kAvx512Bf16) return 0;
  return best_gflops(threads, clock, dpbf16_loop_avx512, 10'000'000, 5);
}

float read_sum_scalar(const float* p, size_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace llamarun::cpu
