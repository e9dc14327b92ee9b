// Op microbenchmarks against the machine's measured limits:
//  - gemv (decode, M = 1 and 4): weight bytes/s against the measured read bandwidth. The weights
//    cycle through copies totalling >= 256 MiB so they come from DRAM, not the last-level cache.
//  - gemm (prefill, M = 512, N = K = 2048): FLOP/s against the measured f32 FMA peak, or the bf16
//    dot peak for the bf16-activation path.
//  - the small ops of the forward pass.
// Peaks are measured at start-up in the same run (all OpenMP threads) and printed; each benchmark
// runs 5 repetitions and reports mean/median/stddev. LLAMARUN_BENCH_BW_MIB sets the bandwidth
// probe's buffer (default 1024).
// LLAMARUN_BENCH_CPU_TIME=1 (with OMP_NUM_THREADS=1): peaks and rates use the thread's CPU time instead
// of the wall clock: one core's figures, robust while other processes load the machine.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/machine_peak.h"
#include "backends/cpu/simd_level.h"
#include "core/dtype.h"
#include "ops/matmul.h"

using namespace llamarun;
using cpu::SimdLevel;

namespace {

struct Peaks {
  double read_gbs = 0, fp32_gflops = 0, bf16_gflops = 0;
};
Peaks g_peaks;            // measured once in main, before any benchmark runs
bool g_cpu_time = false;  // LLAMARUN_BENCH_CPU_TIME

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// `copies` copies of one random N x K matrix of dtype t, back to back.
struct WeightPool {
  DType dtype;
  int64_t N, K;
  int copies;
  size_t matrix_bytes;
  std::vector<uint8_t> bytes;
  WeightView view(int i) const { return WeightView{dtype, N, K, bytes.data() + size_t(i) * matrix_bytes}; }
};

// Types without a quantiser here (the k-quants, IQ4_*, Q5_*): random bytes with finite f16 scales
// (speed does not depend on the values). Returns false for the types quantize_row handles.
bool random_blocks(DType t, uint8_t* dst, size_t bytes, std::mt19937& rng) {
  std::vector<int> f16_offsets;
  switch (t) {
    case DType::Q5_0:
    case DType::IQ4_NL:
    case DType::IQ4_XS:
      f16_offsets = {0};
      break;
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      f16_offsets = {0, 2};
      break;
    case DType::Q2_K:
      f16_offsets = {80, 82};
      break;
    case DType::Q3_K:
      f16_offsets = {108};
      break;
    case DType::Q6_K:
      f16_offsets = {208};
      break;
    default:
      return false;
  }
  for (size_t i = 0; i < bytes; ++i) dst[i] = uint8_t(rng());
  const size_t bb = dtype_block_bytes(t);
  const uint16_t scale = 0x2000;  // f16 0.0078125
  for (size_t b = 0; b < bytes / bb; ++b)
    for (int off : f16_offsets) std::memcpy(dst + b * bb + size_t(off), &scale, 2);
  return true;
}

// Keeps only the most recently used pool alive, to bound memory.
const WeightPool& get_pool(DType t, int64_t N, int64_t K, size_t min_total_bytes) {
  static std::unique_ptr<WeightPool> pool;
  const size_t mb = dtype_row_bytes(t, K) * size_t(N);
  const int copies = std::max(1, int((min_total_bytes + mb - 1) / mb));
  if (pool && pool->dtype == t && pool->N == N && pool->K == K && pool->copies >= copies) return *pool;
  pool.reset();
  auto p = std::make_unique<WeightPool>(WeightPool{t, N, K, copies, mb, {}});
  p->bytes.resize(mb * size_t(copies));
  const std::vector<float> src = randn(size_t(K), 42);
  std::vector<float> row(static_cast<size_t>(K));
  std::mt19937 rng(7);
  for (int64_t n = 0; n < N; ++n) {  // rows: a shuffled, rescaled base row (quantising is the slow part)
    const float s = 0.5f + float(rng() % 1000) * 1e-3f;
    const size_t off = rng() % size_t(K);
    for (int64_t k = 0; k < K; ++k) row[size_t(k)] = s * src[(size_t(k) + off) % size_t(K)];
    uint8_t* dst = p->bytes.data() + size_t(n) * dtype_row_bytes(t, K);
    if (!random_blocks(t, dst, dtype_row_bytes(t, K), rng)) quantize_row(t, row.data(), dst, K);
  }
  for (int c = 1; c < copies; ++c) std::memcpy(p->bytes.data() + size_t(c) * mb, p->bytes.data(), mb);
  pool = std::move(p);
  return *pool;
}

void BM_Gemv(benchmark::State& state, DType t, SimdLevel level, int64_t M, int64_t N, int64_t K,
             bool int8_act = false) {
  const WeightPool& pool = get_pool(t, N, K, size_t(256) << 20);
  const std::vector<float> x = randn(size_t(M * K), 1);
  std::vector<float> y(size_t(M * N));
  MatmulOptions opt;
  opt.int8_activations = int8_act;
  int i = 0;
  for (auto _ : state) {
    matmul_at_level(level, pool.view(i), x.data(), M, y.data(), opt);
    i = (i + 1) % pool.copies;
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = double(pool.matrix_bytes), flops = 2.0 * double(M * N * K);
  using C = benchmark::Counter;
  state.counters["weight_B/s"] = C(bytes, C::kIsIterationInvariantRate, C::kIs1000);
  state.counters["FLOP/s"] = C(flops, C::kIsIterationInvariantRate, C::kIs1000);
  state.counters["frac_of_read_bw"] = C(bytes / (g_peaks.read_gbs * 1e9), C::kIsIterationInvariantRate);
}

void BM_Gemm(benchmark::State& state, DType t, SimdLevel level, bool bf16_act, int64_t M, int64_t N,
             int64_t K, bool batch_invariant = false, bool int8 = false) {
  const WeightPool& pool = get_pool(t, N, K, 0);
  const std::vector<float> x = randn(size_t(M * K), 1);
  std::vector<float> y(size_t(M * N));
  MatmulOptions opt;
  opt.bf16_activations = bf16_act;
  opt.batch_invariant = batch_invariant;
  opt.int8_activations = int8;
  for (auto _ : state) {
    matmul_at_level(level, pool.view(0), x.data(), M, y.data(), opt);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * double(M * N * K);
  const bool bf_path = bf16_act && t == DType::BF16 && level == SimdLevel::kAvx512Bf16;
  const double peak = bf_path ? g_peaks.bf16_gflops : g_peaks.fp32_gflops;
  using C = benchmark::Counter;
  state.counters["FLOP/s"] = C(flops, C::kIsIterationInvariantRate, C::kIs1000);
  state.counters[bf_path ? "frac_of_bf16_peak" : "frac_of_fp32_peak"] =
      C(flops / (peak * 1e9), C::kIsIterationInvariantRate);
}

void BM_SiluMul(benchmark::State& state, SimdLevel level, int64_t n) {
  const std::vector<float> g = randn(size_t(n), 1), u = randn(size_t(n), 2);
  std::vector<float> y(static_cast<size_t>(n));
  const cpu::CpuKernels& k = cpu::kernels_for(level);
  for (auto _ : state) {
    k.silu_mul(g.data(), u.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
}

void BM_Dot(benchmark::State& state, SimdLevel level, int64_t n) {
  const std::vector<float> a = randn(size_t(n), 1), b = randn(size_t(n), 2);
  const cpu::CpuKernels& k = cpu::kernels_for(level);
  for (auto _ : state) benchmark::DoNotOptimize(k.dot(a.data(), b.data(), n));
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
}

const DType kDtypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1};

void register_all() {
  const SimdLevel top = cpu::active_simd_level();  // LLAMARUN_SIMD may lower it
  std::vector<SimdLevel> levels;  // SIMD levels worth comparing: avx2 .. top (+ scalar for gemv)
  for (int l = 0; l <= int(top); ++l)
    if (SimdLevel(l) != SimdLevel::kAvx512Bf16) levels.push_back(SimdLevel(l));
  auto reg = [](const std::string& name, auto fn) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), fn);
    if (!g_cpu_time) b->UseRealTime();
    return b->Unit(benchmark::kMicrosecond)->Repetitions(5)->ReportAggregatesOnly(true)->MinTime(0.2);
  };
  for (DType t : kDtypes)
    for (int64_t M : {1, 4})
      for (SimdLevel l : levels) {
        const std::string name = std::string("gemv/") + dtype_name(t) + "/M=" + std::to_string(M) +
                                 "/N=4096/K=4096/" + cpu::simd_level_str(l);
        reg(name, [=](benchmark::State& s) { BM_Gemv(s, t, l, M, 4096, 4096); });
      }
  // Decode shapes of the default model (SmolLM2-135M: hidden 576, MLP 1536, vocab 49152), best level.
  const int64_t smol_shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
  for (DType t : {DType::Q4_1, DType::Q8_0, DType::BF16})
    for (const auto& nk : smol_shapes) {
      const int64_t N = nk[0], K = nk[1];
      const std::string name = std::string("gemv/") + dtype_name(t) + "/M=1/N=" + std::to_string(N) +
                               "/K=" + std::to_string(K) + "/" + cpu::simd_level_str(top);
      reg(name, [=](benchmark::State& s) { BM_Gemv(s, t, top, 1, N, K); });
    }
  for (DType t : kDtypes)
    for (SimdLevel l : levels) {
      if (l == SimdLevel::kScalar) continue;
      const std::string name =
          std::string("gemm/") + dtype_name(t) + "/M=512/N=2048/K=2048/" + cpu::simd_level_str(l);
      reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, l, false, 512, 2048, 2048); });
    }
  if (top == SimdLevel::kAvx512Bf16) {
    reg("gemm/bf16/M=512/N=2048/K=2048/avx512bf16-bf16act",
        [](benchmark::State& s) { BM_Gemm(s, DType::BF16, SimdLevel::kAvx512Bf16, true, 512, 2048, 2048); });
    reg("gemm/bf16/M=64/N=2048/K=2048/avx512bf16-bf16act",
        [](benchmark::State& s) { BM_Gemm(s, DType::BF16, SimdLevel::kAvx512Bf16, true, 64, 2048, 2048); });
  }
  for (DType t : {DType::F32, DType::Q4_1}) {
    const std::string name =
        std::string("gemm/") + dtype_name(t) + "/M=64/N=2048/K=2048/" + cpu::simd_level_str(top);
    reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 64, 2048, 2048); });
  }
  // Block types on the int8-activation path (and Q8_0/Q4_0/Q4_1 for comparison), best level:
  // decode (M = 1, 4) and prefill (M = 512) shapes with K a multiple of 256.
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL, DType::Q2_K,
                  DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS}) {
    for (int64_t M : {1, 4}) {
      const std::string name = std::string("qgemv/") + dtype_name(t) + "/M=" + std::to_string(M) +
                               "/N=2048/K=2048/" + cpu::simd_level_str(top);
      reg(name, [=](benchmark::State& s) { BM_Gemv(s, t, top, M, 2048, 2048); });
      // Q8_0 / Q4_0 / Q4_1 on int8 activations, as models run them by default (the others have only that).
      if (t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1)
        reg(name + "/int8", [=](benchmark::State& s) { BM_Gemv(s, t, top, M, 2048, 2048, true); });
    }
    const std::string name =
        std::string("qgemm/") + dtype_name(t) + "/M=512/N=2048/K=2048/" + cpu::simd_level_str(top);
    reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, 2048, 2048); });
    // With MatmulOptions::batch_invariant, as the model runs it.
    reg(name + "/invariant", [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, 2048, 2048, true); });
    if (t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1)  // int8 activations, as models run them
      reg(name + "/int8",
          [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, 2048, 2048, false, true); });
  }
  // Batches of 4k + 3 rows below the AVX-512 int8 tile's 16 (decode batches of 7 and 11, a 15-row prefill
  // chunk): Q8_0 / Q4_0 / Q4_1 on f32 activations (the GEMM, or the GEMV up to 8 rows) against int8
  // (qdot_uses_int8's choice: the 4-row dots, then the 3 rows left).
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1})
    for (int64_t M : {7, 11, 15}) {
      const std::string name = std::string("qgemm/") + dtype_name(t) + "/M=" + std::to_string(M) +
                               "/N=2048/K=2048/" + cpu::simd_level_str(top);
      reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, M, 2048, 2048); });
      reg(name + "/int8",
          [=](benchmark::State& s) { BM_Gemm(s, t, top, false, M, 2048, 2048, false, true); });
    }
  // Prefill at the default model's shapes (hidden 576, MLP 1536), batch-invariant as the model runs.
  for (DType t : {DType::Q8_0, DType::Q5_0, DType::Q6_K}) {
    const int64_t N = t == DType::Q6_K ? 576 : 1536, K = t == DType::Q6_K ? 1536 : 576;
    const std::string name = std::string("qgemm/") + dtype_name(t) + "/M=512/N=" + std::to_string(N) +
                             "/K=" + std::to_string(K) + "/" + cpu::simd_level_str(top) + "/invariant";
    reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, N, K, true); });
  }
  // The same shapes in free order, as `llamarun bench` / `generate` run prefill (the tiles of the 32-value
  // block types are used only there): the types of the default model's Q4_K_M / IQ4_XS / Q5_K_M mixes.
  for (DType t : {DType::Q5_0, DType::Q5_1, DType::IQ4_NL, DType::Q4_K, DType::Q6_K, DType::IQ4_XS}) {
    const bool super = dtype_block_size(t) == 256;
    const int64_t N = super ? 576 : 1536, K = super ? 1536 : 576;
    const std::string name = std::string("qgemm/") + dtype_name(t) + "/M=512/N=" + std::to_string(N) +
                             "/K=" + std::to_string(K) + "/" + cpu::simd_level_str(top);
    reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, N, K, false); });
  }
  // A 1B model's MLP down projection (K = 8192), free order: the k-quants' tiles over long rows.
  for (DType t : {DType::Q4_K, DType::Q6_K}) {
    const std::string name =
        std::string("qgemm/") + dtype_name(t) + "/M=512/N=2048/K=8192/" + cpu::simd_level_str(top);
    reg(name, [=](benchmark::State& s) { BM_Gemm(s, t, top, false, 512, 2048, 8192, false); });
  }
  for (SimdLevel l : {SimdLevel::kScalar, top}) {
    const std::string suffix = std::string("/") + cpu::simd_level_str(l);
    reg("silu_mul/n=5632" + suffix, [=](benchmark::State& s) { BM_SiluMul(s, l, 5632); });
    reg("dot/n=64" + suffix, [=](benchmark::State& s) { BM_Dot(s, l, 64); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const int threads = omp_get_max_threads();
  size_t bw_mib = 1024;
  if (const char* e = std::getenv("LLAMARUN_BENCH_BW_MIB")) bw_mib = size_t(std::strtoull(e, nullptr, 10));
  if (const char* e = std::getenv("LLAMARUN_BENCH_CPU_TIME")) g_cpu_time = std::strcmp(e, "1") == 0;
  if (g_cpu_time && threads != 1) {
    std::fprintf(stderr, "LLAMARUN_BENCH_CPU_TIME=1 needs OMP_NUM_THREADS=1 (got %d threads)\n", threads);
    return 2;
  }
  const cpu::PeakClock clock = g_cpu_time ? cpu::PeakClock::kThreadCpu : cpu::PeakClock::kWall;
  g_peaks.read_gbs = cpu::measure_read_bandwidth_gbs(threads, bw_mib << 20, clock);
  g_peaks.fp32_gflops = cpu::measure_fp32_peak_gflops(threads, clock);
  g_peaks.bf16_gflops = cpu::measure_bf16_peak_gflops(threads, clock);
  std::printf(
      "machine peaks (%d threads, SIMD %s, %s): read bandwidth %.2f GB/s, fp32 FMA %.1f GFLOP/s, bf16 dot "
      "%.1f "
      "GFLOP/s\n",
      threads, cpu::simd_level_str(cpu::detected_simd_level()), g_cpu_time ? "thread CPU time" : "wall clock",
      g_peaks.read_gbs, g_peaks.fp32_gflops, g_peaks.bf16_gflops);
  std::fflush(stdout);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", g_peaks.read_gbs);
  benchmark::AddCustomContext("peak_read_GBps", buf);
  std::snprintf(buf, sizeof buf, "%.1f", g_peaks.fp32_gflops);
  benchmark::AddCustomContext("peak_fp32_GFLOPs", buf);
  std::snprintf(buf, sizeof buf, "%.1f", g_peaks.bf16_gflops);
  benchmark::AddCustomContext("peak_bf16_GFLOPs", buf);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
