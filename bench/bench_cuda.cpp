// llamarun_bench_cuda: llama-bench style throughput of the CUDA backend, reported against the device's
// own ceilings measured in the same run (device-to-device copy bandwidth, large cuBLASLt GEMM).
//
//   llamarun_bench_cuda [--preset|--random-weights llama2-7b] [--dtype f16|bf16] [--reps 5] [--pp 512]
//                       [--tg 128] [--depths 0,512,4096] [--device cuda:0] [--json out.json] [--no-graph]
//                       [--no-fast] [--token-copy] [--decode-batches 2,4,8] [--paged-attn] [--qgemv]
//
// Everything runs through CudaLlama::forward_paged (the serving forward) over a paged KV pool, one sequence
// with a shuffled block table of 16-position blocks. pp<N>: one forward of N prompt tokens (one chunk; tok/s
// and achieved TFLOP/s). tg<N>@d: N greedy decode steps after a context of d tokens, one forward of one
// decode row per token (the batch-1 fast path; --no-fast: the general varlen path), the token read back by
// the host (tok/s, effective GB/s = (weights + KV cache read per token) / time per token, and that as a %
// of the measured copy bandwidth). --decode-batches: decode steps of B sequences at once at the largest
// depth (the general path). Repetitions: median, min and max.
// --paged-attn: instead of the GEMM ceiling and the model, times paged_attention (the batched-serving
// decode attention) for the Llama-2-7B attention shape (nh = nkv = 32, hd 128, pages of 16 positions) at
// 64 sequences x 512 positions and 256 x 256, every row a decode row at the last position, over shuffled
// block tables; reports the effective GB/s of K + V read and its % of the copy bandwidth.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_llama.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/clock.h"
#include "core/error.h"

using namespace llamarun;
using json = nlohmann::json;

namespace {

struct Stats {
  double median = 0, min = 0, max = 0;
  std::vector<double> all;
};
Stats stats_of(std::vector<double> v) {
  Stats s;
  s.all = v;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}
json to_json(const Stats& s) {
  return json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"all", s.all}};
}

// Times `fn` (enqueued on `stream`) with CUDA events: returns seconds per call for each repetition.
template <typename F>
std::vector<double> time_events(F fn, int warmup, int reps, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  LLAMARUN_CUDA_CHECK(cudaEventCreate(&a));
  LLAMARUN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> out;
  for (int r = 0; r < reps; ++r) {
    LLAMARUN_CUDA_CHECK(cudaEventRecord(a, stream));
    fn();
    LLAMARUN_CUDA_CHECK(cudaEventRecord(b, stream));
    LLAMARUN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LLAMARUN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    out.push_back(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return out;
}

struct Args {
  std::string preset = "llama2-7b", device = "cuda:0", json_path, dtype = "f16";
  int reps = 5, pp = 512, tg = 128;
  std::vector<int> depths = {0, 512, 4096};
  bool graph = true, fast = true, token_direct = true, parts = true;
  bool qgemv = false;        // --qgemv: the quantized GEMVs alone (see bench_qgemv)
  std::vector<int> batches;  // --decode-batches: decode steps of B sequences at once (the general path)
  bool paged_attn = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) fail("option ", k, " needs a value");
      return argv[++i];
    };
    if (k == "--preset" || k == "--random-weights")
      a.preset = val();
    else if (k == "--device")
      a.device = val();
    else if (k == "--json")
      a.json_path = val();
    else if (k == "--dtype")
      a.dtype = val();
    else if (k == "--reps")
      a.reps = std::stoi(val());
    else if (k == "--pp")
      a.pp = std::stoi(val());
    else if (k == "--tg")
      a.tg = std::stoi(val());
    else if (k == "--no-graph")
      a.graph = false;
    else if (k == "--no-fast")
      a.fast = false;
    else if (k == "--token-copy")
      a.token_direct = false;
    else if (k == "--decode-batches") {
      std::string v = val();
      for (size_t p = 0; p <= v.size();) {
        size_t q = v.find(',', p);
        if (q == std::string::npos) q = v.size();
        if (q > p) a.batches.push_back(std::stoi(v.substr(p, q - p)));
        p = q + 1;
      }
    } else if (k == "--no-parts")
      a.parts = false;
    else if (k == "--qgemv")
      a.qgemv = true;
    else if (k == "--paged-attn")
      a.paged_attn = true;
    else if (k == "--depths") {
      a.depths.clear();
      std::string s = val();
      size_t p = 0;
      while (p <= s.size()) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        if (q > p) a.depths.push_back(std::stoi(s.substr(p, q - p)));
        p = q + 1;
      }
    } else if (k == "--help" || k == "-h") {
      std::printf(
          "usage: llamarun_bench_cuda [--preset llama2-7b|tiny] [--dtype f16|bf16] [--reps N] [--pp N] "
          "[--tg N] [--depths a,b,c] [--device cuda:N] [--json FILE] [--no-graph] [--no-fast] [--token-copy] "
          "[--no-parts] "
          "[--decode-batches a,b,c] [--paged-attn] [--qgemv]\n");
      std::exit(0);
    } else {
      fail("unknown option '", k, "' (try --help)");
    }
  }
  if (a.reps < 1) fail("--reps must be >= 1");
  if (a.dtype != "f16" && a.dtype != "bf16") fail("--dtype must be f16 or bf16");
  return a;
}

// --paged-attn: paged_attention at the Llama-2-7B attention shape, batches of decode rows (see the top).
void bench_paged_attention(DType dt, const Args& args, double copy_gbs, cudaStream_t stream, json& J) {
  const int nh = 32, nkv = 32, hd = 128, bs = 16;
  const float scale = 1.f / std::sqrt(float(hd));
  struct Case {
    int batch, ctx;
  } cases[] = {{64, 512}, {256, 256}};
  json pj = json::array();
  std::mt19937 rng(7);
  for (Case c : cases) {
    const int blocks_per_seq = (c.ctx + bs - 1) / bs, num_blocks = c.batch * blocks_per_seq;
    const size_t pool_elems = size_t(num_blocks) * nkv * bs * hd, q_elems = size_t(c.batch) * nh * hd;
    std::vector<int32_t> tables(num_blocks), seq(c.batch), pos(c.batch, c.ctx - 1);
    std::iota(tables.begin(), tables.end(), 0);
    std::shuffle(tables.begin(), tables.end(), rng);  // sequence s owns tables[s * blocks_per_seq ..]
    std::iota(seq.begin(), seq.end(), 0);
    void *kp, *vp, *q, *o;
    int32_t *dtab, *dseq, *dpos;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&kp, pool_elems * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&vp, pool_elems * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&q, q_elems * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&o, q_elems * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&dtab, tables.size() * 4));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&dseq, seq.size() * 4));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&dpos, pos.size() * 4));
    LLAMARUN_CUDA_CHECK(cudaMemcpy(dtab, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    LLAMARUN_CUDA_CHECK(cudaMemcpy(dseq, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice));
    LLAMARUN_CUDA_CHECK(cudaMemcpy(dpos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
    cuda::fill_random(dt, kp, int64_t(pool_elems), 1.f, 41, stream);
    cuda::fill_random(dt, vp, int64_t(pool_elems), 1.f, 42, stream);
    cuda::fill_random(dt, q, int64_t(q_elems), 1.f, 43, stream);
    auto t = time_events(
        [&] {
          cuda::paged_attention(dt, q, kp, vp, dtab, blocks_per_seq, dseq, dpos, c.batch, nh, nkv, hd, bs,
                                scale, o, stream);
        },
        3, std::max(20, args.reps), stream);
    cudaFree(kp);
    cudaFree(vp);
    cudaFree(q);
    cudaFree(o);
    cudaFree(dtab);
    cudaFree(dseq);
    cudaFree(dpos);
    const double kv_bytes = 2.0 * c.batch * c.ctx * nkv * hd * 2;  // K + V, 2-byte values
    std::vector<double> us, gbs;
    for (double s : t) {
      us.push_back(s * 1e6);
      gbs.push_back(kv_bytes / s / 1e9);
    }
    Stats su = stats_of(us), sg = stats_of(gbs);
    pj.push_back({{"batch", c.batch},
                  {"context", c.ctx},
                  {"nh", nh},
                  {"nkv", nkv},
                  {"head_dim", hd},
                  {"block_size", bs},
                  {"dtype", args.dtype},
                  {"kv_bytes", kv_bytes},
                  {"us", to_json(su)},
                  {"effective_gbs", to_json(sg)},
                  {"pct_of_copy_bw", 100.0 * sg.median / copy_gbs}});
    std::printf(
        "paged attn b%-3d x ctx%-4d %s  %8.1f us   [%.1f .. %.1f]  %.0f GB/s of K+V (%.1f%% of copy)\n",
        c.batch, c.ctx, args.dtype.c_str(), su.median, su.min, su.max, sg.median,
        100.0 * sg.median / copy_gbs);
  }
  J["paged_attention"] = pj;
}

// --qgemv: the quantized decode GEMV (qgemv.cu) alone at the Llama-2-7B projection shapes, M = 1, for
// Q4_K, Q6_K, Q8_0 and Q4_0 weights (random blocks), on 4 rotating weight copies (more than L2 holds), every
// kernel launched with programmatic dependent launch as the decode step does: "staged", each block applying
// the RMSNorm and quantizing x itself, against "x once", qquantize_x then the GEMV (both kernels timed),
// each also with the GEMV compiled for 4 blocks per SM ("occ4"), as GB/s of weight bytes against the copy
// bandwidth.
void bench_qgemv(DType dt, double copy_gbs, cudaStream_t stream, json& J) {
  struct Shape {
    const char* name;
    int N, K;
  } shapes[] = {{"qkv", 12288, 4096}, {"o", 4096, 4096}, {"gate_up", 22016, 4096}, {"down", 4096, 11008}};
  const DType types[] = {DType::Q4_K, DType::Q6_K, DType::Q8_0, DType::Q4_0};
  const char* variants[] = {"staged",
                            "x_once",
                            "staged_occ4",
                            "x_once_occ4",
                            "x_once_occ4_res",
                            "x_once_occ4_dal",
                            "x_once_occ4_res_smem",
                            "rows2",
                            "rows4"};
  constexpr int kVariants = int(sizeof(variants) / sizeof(variants[0]));
  void *x, *y, *nw, *xq;
  LLAMARUN_CUDA_CHECK(cudaMalloc(&x, size_t(2) * 11008 * 2));
  LLAMARUN_CUDA_CHECK(cudaMalloc(&y, size_t(22016) * 4));
  LLAMARUN_CUDA_CHECK(cudaMalloc(&nw, size_t(11008) * 2));
  LLAMARUN_CUDA_CHECK(cudaMalloc(&xq, cuda::qx_bytes(8, 11008)));
  cuda::fill_random(dt, x, 2 * 11008, 1.f, 21, stream);
  cuda::fill_random(dt, nw, 11008, 1.f, 22, stream);
  json qj = json::array();
  for (DType t : types) {
    for (const Shape& sh : shapes) {
      const size_t bytes = cuda::qmatrix_bytes(t, sh.N, sh.K);
      cuda::QMatrix w[4];
      for (int c = 0; c < 4; ++c) {
        void* p;
        LLAMARUN_CUDA_CHECK(cudaMalloc(&p, bytes));
        // Random bytes: the fp16 scales become arbitrary values, which costs the kernel nothing more.
        cuda::fill_random(DType::F16, p, int64_t(bytes / 2), 0.05f, 50 + c, stream);
        w[c] = {t, p, sh.N, sh.K};
      }
      json row = {{"type", dtype_name(t)}, {"shape", sh.name}, {"N", sh.N}, {"K", sh.K}, {"bytes", bytes}};
      std::printf("  qgemv %-5s %-8s N=%-6d K=%-6d", dtype_name(t), sh.name, sh.N, sh.K);
      for (int v = 0; v < kVariants; ++v) {
        const bool once = v & 1 || v >= 4;
        cuda::QGemvFusion f;
        f.prologue = cuda::GemvPrologue::kRmsNorm;
        f.norm_weight = nw;
        f.eps = 1e-5f;
        f.occupancy4 = v >= 2;
        f.resident = v == 4 || v == 6;
        f.decode_at_load = v == 5;
        f.x_smem = v == 6;
        f.rows_per_warp = v == 7 ? 2 : v == 8 ? 4 : 0;
        int it = 0;
        auto tv = time_events(
            [&] {
              for (int c = 0; c < 4; ++c) {
                cuda::QGemvFusion g = f;
                if (once) {
                  cuda::qquantize_x(dt, x, 1, sh.K, f, xq, stream, true);
                  g.xq8 = xq;
                  g.prologue = cuda::GemvPrologue::kNone;
                }
                cuda::qgemv(dt, w[(it + c) % 4], x, y, 1, g, stream, true);
              }
              ++it;
            },
            3, 20, stream);
        const double us = stats_of(tv).median / 4 * 1e6, gbs = bytes / us / 1e3;
        row[std::string(variants[v]) + "_us"] = us;
        row[std::string(variants[v]) + "_gbs"] = gbs;
        std::printf("  %s %6.2f us %5.0f GB/s (%4.1f%%)", variants[v], us, gbs, 100 * gbs / copy_gbs);
      }
      std::printf("\n");
      for (auto& c : w) cudaFree(const_cast<void*>(c.data));
      qj.push_back(row);
    }
  }
  cudaFree(x);
  cudaFree(y);
  cudaFree(nw);
  cudaFree(xq);
  J["qgemv"] = qj;
}

// With --qgemv: the dequantization that feeds prefill's GEMM (qdequant: each quantized matrix into an
// act scratch) at the 7B shapes, each thread storing its unit directly against the output staged in
// shared memory, as GB/s of bytes read plus written.
void bench_qdequant(DType dt, double copy_gbs, cudaStream_t stream, json& J) {
  struct Shape {
    const char* name;
    int N, K;
  } shapes[] = {{"qkv", 12288, 4096}, {"gate_up", 22016, 4096}, {"down", 4096, 11008}};
  json dj = json::array();
  void* dst;
  LLAMARUN_CUDA_CHECK(cudaMalloc(&dst, size_t(22016) * 4096 * 2));
  for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q8_0}) {
    for (const Shape& sh : shapes) {
      const size_t bytes = cuda::qmatrix_bytes(t, sh.N, sh.K);
      void* p;
      LLAMARUN_CUDA_CHECK(cudaMalloc(&p, bytes));
      cuda::fill_random(DType::F16, p, int64_t(bytes / 2), 0.05f, 60, stream);
      const cuda::QMatrix w{t, p, sh.N, sh.K};
      const double moved = double(bytes) + double(sh.N) * sh.K * 2;
      json row = {{"type", dtype_name(t)}, {"shape", sh.name}, {"N", sh.N}, {"K", sh.K}};
      std::printf("  qdequant %-5s %-8s", dtype_name(t), sh.name);
      for (bool staged : {false, true}) {
        auto tv = time_events([&] { cuda::qdequant(dt, w, dst, stream, staged); }, 3, 20, stream);
        const double us = stats_of(tv).median * 1e6, gbs = moved / us / 1e3;
        row[staged ? "staged_us" : "direct_us"] = us;
        std::printf("  %s %7.2f us %5.0f GB/s (%4.1f%%)", staged ? "staged" : "direct", us, gbs,
                    100 * gbs / copy_gbs);
      }
      std::printf("\n");
      cudaFree(p);
      dj.push_back(row);
    }
  }
  cudaFree(dst);
  J["qdequant"] = dj;
}

// Writes the JSON report (--json) and releases the stream; the exit code.
int finish(const Args& args, const json& J, cudaStream_t stream) {
  if (!args.json_path.empty()) {
    std::ofstream f(args.json_path);
    if (!f) fail("cannot write ", args.json_path);
    f << J.dump(2) << "\n";
    std::printf("wrote %s\n", args.json_path.c_str());
  }
  cudaStreamDestroy(stream);
  return 0;
}

int run(int argc, char** argv) {
  Args args = parse(argc, argv);
  const DType dt = args.dtype == "f16" ? DType::F16 : DType::BF16;
  int dev = cuda::parse_device(args.device);
  cuda::set_device(dev);
  cuda::DeviceInfo di = cuda::device_info(dev);
  std::printf("device: %s (cc %d.%d, %d SMs, %s, L2 %s), commit %s\n", di.name.c_str(), di.cc_major,
              di.cc_minor, di.sm_count, cuda::format_bytes(di.total_memory).c_str(),
              cuda::format_bytes(di.l2_bytes).c_str(), LLAMARUN_GIT_COMMIT);
  json J;
  J["device"] = {{"name", di.name},
                 {"index", dev},
                 {"cc", std::to_string(di.cc_major) + "." + std::to_string(di.cc_minor)},
                 {"sm_count", di.sm_count},
                 {"total_memory", di.total_memory},
                 {"l2_bytes", di.l2_bytes}};
  J["commit"] = LLAMARUN_GIT_COMMIT;
  J["reps"] = args.reps;
  cudaStream_t stream;
  LLAMARUN_CUDA_CHECK(cudaStreamCreate(&stream));
  size_t peak_used = 0;
  auto note_used = [&] {
    cuda::MemInfo m = cuda::mem_info();
    peak_used = std::max(peak_used, m.total - m.free);
  };

  // 1. Ceilings: device-to-device copy and a large GEMM, on random data.
  double copy_gbs = 0, gemm_tflops = 0;
  {
    const size_t bytes = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&a, bytes));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&b, bytes));
    cuda::fill_random(DType::F16, a, int64_t(bytes / 2), 1.f, 1, stream);
    auto t = time_events(
        [&] { LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); }, 3,
        std::max(10, args.reps), stream);
    std::vector<double> gbs;
    for (double s : t) gbs.push_back(2.0 * bytes / s / 1e9);
    Stats st = stats_of(gbs);
    copy_gbs = st.median;
    J["copy_bandwidth_gbs"] = to_json(st);
    note_used();
    cudaFree(a);
    cudaFree(b);
    std::printf("copy D2D (read+write)      %8.1f GB/s  [%.1f .. %.1f]\n", st.median, st.min, st.max);
  }
  if (args.qgemv) {
    bench_qgemv(dt, copy_gbs, stream, J);
    bench_qdequant(dt, copy_gbs, stream, J);
    return finish(args, J, stream);
  }
  if (args.paged_attn) {
    bench_paged_attention(dt, args, copy_gbs, stream, J);
    note_used();
    J["device_peak_used_bytes"] = peak_used;
    return finish(args, J, stream);
  }
  {
    const int n = 8192;
    void *w, *x, *y, *ws;
    size_t mat = size_t(n) * n * 2, wsb = 32u << 20;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&w, mat));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&x, mat));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&y, mat));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&ws, wsb));
    cuda::fill_random(dt, w, int64_t(n) * n, 1.f, 2, stream);
    cuda::fill_random(dt, x, int64_t(n) * n, 1.f, 3, stream);
    {
      cuda::LtGemm lt(ws, wsb);
      auto t = time_events([&] { lt.run(dt, w, x, y, false, n, n, n, stream); }, 3, std::max(10, args.reps),
                           stream);
      std::vector<double> tf;
      for (double s : t) tf.push_back(2.0 * n * n * double(n) / s / 1e12);
      Stats st = stats_of(tf);
      gemm_tflops = st.median;
      J["gemm_8192_tflops"] = to_json(st);
      std::printf("cuBLASLt GEMM 8192^3 %s    %8.1f TFLOP/s [%.1f .. %.1f]\n", args.dtype.c_str(), st.median,
                  st.min, st.max);
    }
    note_used();
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
    cudaFree(ws);
  }

  // 2. The model.
  LlamaConfig cfg = cuda_preset_config(args.preset);
  int max_depth = 0;
  for (int d : args.depths) max_depth = std::max(max_depth, d);
  CudaLlamaOptions opt;
  opt.device = args.device;
  opt.dtype = dt;
  opt.max_context = std::max(args.pp, max_depth + args.tg);
  opt.paged_max_tokens = std::max({args.pp, 512, 1});  // prefill in one chunk; depths in chunks of 512+
  int max_batch = 1;
  for (int b : args.batches) max_batch = std::max(max_batch, b);
  opt.paged_max_seqs = std::max(max_batch, 1);
  opt.paged_graphs = args.graph;
  opt.fast_decode = args.fast;
  opt.fast_token_direct = args.token_direct;
  double t0 = now_seconds();
  CudaLlama model(cfg, 1234, opt);
  // The paged pool: one block table of max_context positions per sequence (blocks of 16, shuffled).
  const int bs = 16, per_seq = (opt.max_context + bs - 1) / bs;
  const int pool_blocks = model.init_paged(bs, per_seq * max_batch, 0);
  double init_s = now_seconds() - t0;
  std::vector<int32_t> blocks(pool_blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(5));
  auto table_of = [&](int s) {
    return std::span<const int32_t>(blocks.data() + size_t(s) * per_seq, size_t(per_seq));
  };
  // One forward of sequence s's tokens ids[0..n) at positions start..start+n-1 (the last one sampled).
  std::vector<float> logits(cfg.vocab_size);
  auto forward_one = [&](int s, const int32_t* ids, int n, int start) {
    BatchInput b;
    for (int i = 0; i < n; ++i) {
      b.tokens.push_back(ids[i]);
      b.positions.push_back(start + i);
      b.seq_index.push_back(0);
    }
    b.block_tables.push_back(table_of(s));
    b.logit_rows.push_back(n - 1);
    const uint8_t want = 0;
    int32_t next = -1;
    model.forward_paged(b, &want, &next, logits.data());
    return next;
  };
  auto prefill = [&](int s, const int32_t* ids, int n) {
    for (int done = 0; done < n; done += opt.paged_max_tokens)
      forward_one(s, ids + done, std::min(opt.paged_max_tokens, n - done), done);
  };
  note_used();
  const size_t wbytes = model.weight_bytes_per_token();
  std::printf("model: %s random weights, %s, %s of weights (%s read per token), init %.2f s\n",
              args.preset.c_str(), args.dtype.c_str(),
              cuda::format_bytes(model.memory_stats().weights).c_str(), cuda::format_bytes(wbytes).c_str(),
              init_s);
  J["model"] = {{"preset", args.preset},
                {"dtype", args.dtype},
                {"weights_bytes", model.memory_stats().weights},
                {"fast_decode", args.fast},
                {"fast_token_direct", args.token_direct},
                {"weight_bytes_per_token", wbytes},
                {"max_context", opt.max_context},
                {"graph", args.graph},
                {"kv_block_size", bs},
                {"init_seconds", init_s}};

  std::vector<int32_t> prompt(std::max(args.pp, max_depth));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 13) % cfg.vocab_size);

  // pp: tokens/s and FLOP/s (2 * matmul weights per token + attention's 4 * L * nh * hd per (query, key)
  // pair).
  {
    const double H = cfg.hidden_size, I = cfg.intermediate_size, hd = cfg.head_dim;
    const double nh = cfg.num_heads, nkv = cfg.num_kv_heads, L = cfg.num_layers, V = cfg.vocab_size;
    double per_tok = 2.0 * L * (H * (nh + 2 * nkv) * hd + nh * hd * H + 3 * H * I);
    double n = args.pp;
    double flops = per_tok * n + 4.0 * L * nh * hd * n * (n + 1) / 2 + 2.0 * V * H;
    forward_one(0, prompt.data(), args.pp, 0);  // warm-up (cuBLASLt heuristics)
    std::vector<double> tps, tfl;
    for (int r = 0; r < args.reps; ++r) {  // one forward: the whole prompt as one chunk of one sequence
      double a = now_seconds();
      forward_one(0, prompt.data(), args.pp, 0);
      double s = now_seconds() - a;
      tps.push_back(n / s);
      tfl.push_back(flops / s / 1e12);
    }
    Stats st = stats_of(tps), sf = stats_of(tfl);
    J["pp"] = {{"tokens", args.pp},
               {"tok_per_s", to_json(st)},
               {"tflops", to_json(sf)},
               {"pct_of_gemm_peak", 100.0 * sf.median / gemm_tflops}};
    std::printf("pp%-4d                     %8.1f tok/s [%.1f .. %.1f]  %.1f TFLOP/s (%.0f%% of GEMM peak)\n",
                args.pp, st.median, st.min, st.max, sf.median, 100.0 * sf.median / gemm_tflops);
    note_used();
  }

  // Prefill parts at M = pp: the layer GEMMs (cuBLASLt) and the (tensor-core) attention, summed over the
  // layers, to see which dominates pp.
  if (args.parts) {
    const int M = args.pp, H = cfg.hidden_size, I = cfg.intermediate_size, hd = cfg.head_dim;
    const int nh = cfg.num_heads, nkv = cfg.num_kv_heads, L = cfg.num_layers;
    const int qkv = (nh + 2 * nkv) * hd, qd = nh * hd;
    struct Shape {
      const char* name;
      int N, K;
    } shapes[] = {{"qkv", qkv, H}, {"o", H, qd}, {"gate_up", 2 * I, H}, {"down", H, I}};
    size_t wmax = 0, kmax = 0, nmax = 0;
    for (auto& sh : shapes) {
      wmax = std::max(wmax, size_t(sh.N) * sh.K);
      kmax = std::max(kmax, size_t(sh.K));
      nmax = std::max(nmax, size_t(sh.N));
    }
    void *w, *x, *y, *ws;
    const size_t wsb = 32u << 20;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&w, wmax * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&x, size_t(M) * kmax * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&y, size_t(M) * nmax * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&ws, wsb));
    cuda::fill_random(dt, w, int64_t(wmax), 0.02f, 11, stream);
    cuda::fill_random(dt, x, int64_t(M) * kmax, 1.f, 12, stream);
    json pj;
    double gemm_ms = 0;
    {
      cuda::LtGemm lt(ws, wsb);
      for (auto& sh : shapes) {
        auto t = time_events([&] { lt.run(dt, w, x, y, false, M, sh.N, sh.K, stream); }, 3, 10, stream);
        Stats st = stats_of(t);
        double tf = 2.0 * M * sh.N * double(sh.K) / st.median / 1e12;
        gemm_ms += st.median * 1e3 * L;
        pj[sh.name] = {{"N", sh.N}, {"K", sh.K}, {"ms", st.median * 1e3}, {"tflops", tf}};
        std::printf("  pp%d gemm %-8s N=%-6d K=%-6d %7.3f ms  %6.1f TFLOP/s\n", M, sh.name, sh.N, sh.K,
                    st.median * 1e3, tf);
      }
    }
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
    cudaFree(ws);
    void *q, *kc, *vc, *o;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&q, size_t(M) * qd * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&o, size_t(M) * qd * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&kc, size_t(M) * nkv * hd * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&vc, size_t(M) * nkv * hd * 2));
    cuda::fill_random(dt, q, int64_t(M) * qd, 1.f, 13, stream);
    cuda::fill_random(dt, kc, int64_t(M) * nkv * hd, 1.f, 14, stream);
    cuda::fill_random(dt, vc, int64_t(M) * nkv * hd, 1.f, 15, stream);
    const float scale = 1.f / std::sqrt(float(hd));
    auto ta = stats_of(
        time_events([&] { cuda::prefill_attention(dt, q, kc, vc, M, 0, nh, nkv, hd, M, scale, o, stream); },
                    3, 10, stream));
    double attn_ms = ta.median * 1e3 * L;
    cudaFree(q);
    cudaFree(o);
    cudaFree(kc);
    cudaFree(vc);
    pj["gemm_ms_all_layers"] = gemm_ms;
    pj["attention_tc_ms_all_layers"] = attn_ms;
    J["pp_parts"] = pj;
    std::printf("  pp%d parts over %d layers: GEMMs %.2f ms, attention %.2f ms (tensor cores)\n", M, L,
                gemm_ms, attn_ms);
  }

  // Decode parts: each GEMV shape alone (M = 1, persistent grid, no PDL), back to back on 4 rotating weight
  // copies (more than L2 holds), as GB/s of weights; their sum per layer against the measured step time.
  if (args.parts) {
    const int H = cfg.hidden_size, I = cfg.intermediate_size, hd = cfg.head_dim;
    const int nh = cfg.num_heads, nkv = cfg.num_kv_heads;
    const int qkv = (nh + 2 * nkv) * hd, qd = nh * hd;
    struct Shape {
      const char* name;
      int N, K;
    } shapes[] = {{"qkv", qkv, H}, {"o", H, qd}, {"gate_up", 2 * I, H}, {"down", H, I}};
    json tj;
    double layer_us = 0;
    void* x;
    void* y;
    LLAMARUN_CUDA_CHECK(cudaMalloc(&x, size_t(2) * I * 2));
    LLAMARUN_CUDA_CHECK(cudaMalloc(&y, size_t(2) * I * 4));
    cuda::fill_random(dt, x, 2 * int64_t(I), 1.f, 21, stream);
    const char* vname[] = {"     ", " wide"};
    for (int var = 0; var < 2; ++var) {
      for (auto& sh : shapes) {
        const size_t bytes = size_t(sh.N) * sh.K * 2;
        void* w[4];
        for (int c = 0; c < 4; ++c) {
          LLAMARUN_CUDA_CHECK(cudaMalloc(&w[c], bytes));
          cuda::fill_random(dt, w[c], int64_t(sh.N) * sh.K, 0.02f, 30 + c, stream);
        }
        cuda::GemvFusion f;
        f.persistent = true;
        f.wide = var == 1;
        int it = 0;
        auto t = time_events(
            [&] {
              for (int c = 0; c < 4; ++c)
                cuda::gemv_fused(dt, w[(it + c) % 4], x, y, false, 1, sh.N, sh.K, f, stream);
              ++it;
            },
            2, 10, stream);
        Stats st = stats_of(t);
        double us = st.median / 4 * 1e6, gbs = bytes / (st.median / 4) / 1e9;
        if (var == 0) layer_us += us;
        tj[std::string(sh.name) + (var == 1 ? "_wide" : "")] = {{"us", us}, {"gbs", gbs}};
        std::printf("  tg gemv %-8s%s N=%-6d K=%-6d %7.2f us  %6.0f GB/s (%.1f%% of copy)\n", sh.name,
                    vname[var], sh.N, sh.K, us, gbs, 100.0 * gbs / copy_gbs);
        for (int c = 0; c < 4; ++c) cudaFree(w[c]);
      }
    }
    cudaFree(x);
    cudaFree(y);
    tj["gemv_sum_per_layer_us"] = layer_us;
    J["tg_parts"] = tj;
    std::printf("  tg GEMVs alone: %.1f us per layer (x %d layers = %.3f ms)\n", layer_us, cfg.num_layers,
                layer_us * cfg.num_layers / 1e3);
  }

  // tg at each depth: the depth's context is prefilled once, then each repetition decodes from it again (one
  // decode row per forward, the greedy token fed back by the host: the batch-1 fast path unless --no-fast).
  json tgj = json::array();
  std::vector<std::string> lines;
  const int64_t fast0 = model.fast_decode_steps();
  for (int d : args.depths) {
    if (d > 0) prefill(0, prompt.data(), d);
    int32_t tok = 1;
    forward_one(0, &tok, 1, d);  // warm-up (graph capture)
    std::vector<double> tps, gbs;
    double bytes = 0;
    for (int i = 0; i < args.tg; ++i) bytes += double(wbytes) + double(model.kv_bytes_per_token(d + i));
    for (int r = 0; r < args.reps; ++r) {
      tok = 1;
      double a = now_seconds();
      for (int i = 0; i < args.tg; ++i) tok = forward_one(0, &tok, 1, d + i);
      double s = now_seconds() - a;
      tps.push_back(args.tg / s);
      gbs.push_back(bytes / s / 1e9);
    }
    Stats st = stats_of(tps), sg = stats_of(gbs);
    tgj.push_back({{"depth", d},
                   {"tokens", args.tg},
                   {"tok_per_s", to_json(st)},
                   {"effective_gbs", to_json(sg)},
                   {"pct_of_copy_bw", 100.0 * sg.median / copy_gbs},
                   {"bytes_per_token", bytes / args.tg},
                   {"ms_per_token", 1e3 / st.median}});
    std::printf(
        "tg%d @ d%-5d               %8.1f tok/s [%.1f .. %.1f]  %.3f ms/tok  %.0f GB/s (%.1f%% of copy)\n",
        args.tg, d, st.median, st.min, st.max, 1e3 / st.median, sg.median, 100.0 * sg.median / copy_gbs);
    note_used();
  }
  J["tg"] = tgj;
  const int64_t fast_steps = model.fast_decode_steps() - fast0;

  // Decode steps of B sequences at once (each B rows, the general varlen path with its bucket graph), at
  // depth max(depths): tokens/s over the batch, and the step time against B steps of one row.
  json bj = json::array();
  for (int B : args.batches) {
    if (B < 1) continue;
    const int d = max_depth;
    for (int sq = 0; sq < B; ++sq)
      if (d > 0) prefill(sq, prompt.data(), d);
    std::vector<int32_t> toks(B, 1), ids(B);
    std::vector<float> lg(size_t(B) * cfg.vocab_size);
    std::vector<uint8_t> want(B, 0);
    auto step = [&](int pos) {
      BatchInput b;
      for (int sq = 0; sq < B; ++sq) {
        b.tokens.push_back(toks[sq]);
        b.positions.push_back(pos);
        b.seq_index.push_back(sq);
        b.logit_rows.push_back(sq);
        b.block_tables.push_back(table_of(sq));
      }
      model.forward_paged(b, want.data(), ids.data(), lg.data());
      toks = ids;
    };
    step(d);  // warm-up (graph capture)
    std::vector<double> sps;
    for (int r = 0; r < args.reps; ++r) {
      std::fill(toks.begin(), toks.end(), 1);
      double a = now_seconds();
      for (int i = 0; i < args.tg; ++i) step(d + i);
      sps.push_back(args.tg / (now_seconds() - a));
    }
    Stats st = stats_of(sps);
    bj.push_back({{"batch", B}, {"depth", d}, {"steps_per_s", to_json(st)}, {"tok_per_s", B * st.median}});
    std::printf("decode batch %-3d @ d%-5d     %8.1f steps/s [%.1f .. %.1f]  %.3f ms/step  %.1f tok/s\n", B,
                d, st.median, st.min, st.max, 1e3 / st.median, B * st.median);
    note_used();
  }
  if (!bj.empty()) J["decode_batches"] = bj;
  J["model"]["pdl_active"] = model.pdl_active();
  J["model"]["fast_decode_steps"] = fast_steps;
  std::printf(
      "decode: one forward_paged per token, graph %s, batch-1 fast path %s (%lld steps), PDL active %s\n",
      args.graph ? "on" : "off", args.fast ? "on" : "off", (long long)fast_steps,
      model.pdl_active() ? "yes" : "no");
  CudaMemoryStats ms = model.memory_stats();
  J["memory"] = {{"model_peak_bytes", ms.peak},
                 {"model_allocated_bytes", ms.allocated},
                 {"weights", ms.weights},
                 {"kv_cache", ms.kv_cache},
                 {"activations", ms.activations},
                 {"workspace", ms.workspace},
                 {"device_peak_used_bytes", peak_used}};
  std::printf("memory: model peak %s (weights %s, KV %s, activations %s), device used peak %s\n",
              cuda::format_bytes(ms.peak).c_str(), cuda::format_bytes(ms.weights).c_str(),
              cuda::format_bytes(ms.kv_cache).c_str(), cuda::format_bytes(ms.activations).c_str(),
              cuda::format_bytes(peak_used).c_str());
  return finish(args, J, stream);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llamarun_bench_cuda: %s\n", e.what());
    return 1;
  }
}
