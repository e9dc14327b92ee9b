// llamarun bench: llama-bench style prompt-processing (pp) and generation (tg) speed, through the serving
// Engine (as `generate` and `serve` run), set against the machine's read bandwidth and FLOP peak measured in
// the same run.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "backends/cpu/machine_peak.h"
#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "core/progress.h"
#include "engine/generate.h"
#include "model/quantize_model.h"
#include "model/random_model.h"
#include "ops/matmul.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_step_model.h"
#endif

namespace llamarun::cli {

namespace {

struct Stats {
  double median = 0, min = 0, max = 0;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stats s;
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

// Bytes of the matrices one decode step streams (every linear weight and the LM head).
size_t streamed_weight_bytes(const LlamaWeights& w) {
  auto b = [](const WeightView& v) { return v.row_bytes() * size_t(v.rows); };
  size_t n = b(w.lm_head);
  for (auto& L : w.layers) n += b(L.wq) + b(L.wk) + b(L.wv) + b(L.wo) + b(L.w_gate) + b(L.w_up) + b(L.w_down);
  return n;
}

// The rest of the weight bytes one decode step reads: the RMSNorm weights and one embedding row.
size_t streamed_small_weight_bytes(const LlamaWeights& w) {
  auto b = [](const WeightView& v) { return v.row_bytes() * size_t(v.rows); };
  size_t n = b(w.out_norm) + w.tok_embd.row_bytes();
  for (auto& L : w.layers) n += b(L.attn_norm) + b(L.ffn_norm);
  return n;
}

// Multiply-adds x2 per token of the linear layers (embedding excluded, LM head included).
double linear_flops_per_token(const LlamaConfig& c) {
  double D = c.hidden_size, F = c.intermediate_size, QD = double(c.num_heads) * c.head_dim,
         KD = double(c.num_kv_heads) * c.head_dim;
  double per_layer = D * QD + 2 * D * KD + QD * D + 3 * D * F;
  return 2.0 * (c.num_layers * per_layer + D * c.vocab_size);
}

// The request shapes of one bench run, fitted to the model's context: pp prompt tokens (one step) and tg
// decode steps after a prompt of `depth` tokens (at least one).
struct Shape {
  int pp = 512, tg = 64, depth = 0;
  int ctx = 0;  // the engine's context: the longest request
};

// Fits pp, tg and depth to max_position, saying on stderr what was lowered. A pp request needs pp + 1
// positions (the sampled token), a tg request max(depth, 1) + tg + 1.
Shape fit_shape(int pp, int tg, int depth, int max_position) {
  Shape s{pp, tg, depth, 0};
  if (s.pp + 1 > max_position) {
    s.pp = max_position - 1;
    std::fprintf(stderr, "bench: --pp %d does not fit the model's %d positions; measuring pp%d\n", pp,
                 max_position, s.pp);
  }
  if (s.tg + 2 > max_position) {
    s.tg = max_position - 2;
    std::fprintf(stderr, "bench: --tg %d does not fit the model's %d positions; measuring tg%d\n", tg,
                 max_position, s.tg);
  }
  if (std::max(s.depth, 1) + s.tg + 1 > max_position) {
    s.depth = max_position - s.tg - 1;
    std::fprintf(stderr,
                 "bench: depth %d + tg %d does not fit the model's %d positions; measuring tg%d at depth %d "
                 "(the last decode step writes position %d)\n",
                 depth, s.tg, max_position, s.tg, s.depth, s.depth + s.tg - 1);
  }
  if (s.pp < 1 || s.tg < 1 || s.depth < 0)
    fail("bench: the model's ", max_position, " positions are too few");
  s.ctx = std::max(s.pp + 1, std::max(s.depth, 1) + s.tg + 1);
  return s;
}

struct Timings {
  Stats pp, tg;
};

// pp: one request of pp tokens and max_tokens 1, computed in one step (max_batch_tokens >= pp), timed
// from submit to its token. tg: greedy decode of tg tokens (ignore_eos) after a prompt of depth tokens,
// timed from the first generated token. Prefix caching is off, so every repetition computes its prompt.
Timings run_bench(Engine& engine, const Shape& sh, int reps, int vocab) {
  std::mt19937 rng(7);
  std::vector<int32_t> ids(size_t(std::max(sh.pp, std::max(sh.depth, 1))));
  for (auto& t : ids) t = int32_t(rng() % uint32_t(vocab));
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.ignore_eos = true;
  SamplingParams p = greedy;
  p.max_tokens = 2;
  generate(engine, std::vector<int32_t>(ids.begin(), ids.begin() + std::min(sh.pp, 16)), p);  // warm-up
  std::vector<double> pp_tps, tg_tps;
  // Progress on stderr (a terminal only), counted per request.
  Progress bar("bench tokens", uint64_t(reps) * uint64_t(sh.pp + sh.tg), Progress::Unit::kCount);
  const std::vector<int32_t> pp_prompt(ids.begin(), ids.begin() + sh.pp);
  p.max_tokens = 1;
  for (int r = 0; r < reps; ++r) {
    pp_tps.push_back(sh.pp / generate(engine, pp_prompt, p).prompt_seconds);
    bar.add(uint64_t(sh.pp));
  }
  const std::vector<int32_t> tg_prompt(ids.begin(), ids.begin() + std::max(sh.depth, 1));
  p.max_tokens = sh.tg + 1;
  for (int r = 0; r < reps; ++r) {
    const GenerationResult g = generate(engine, tg_prompt, p);
    if (int(g.token_ids.size()) != sh.tg + 1)
      fail("bench: the tg request ended after ", g.token_ids.size(), " tokens (", g.finish_reason, ")");
    tg_tps.push_back(sh.tg / g.gen_seconds);
    bar.add(uint64_t(sh.tg));
  }
  bar.finish();
  return {stats(pp_tps), stats(tg_tps)};
}

EngineConfig bench_engine_config(const Shape& sh) {
  EngineConfig ec;
  ec.batch_invariant = false;  // the blocked GEMM: faster prefill
  ec.enable_prefix_caching = false;
  ec.max_batch_tokens = std::max(sh.pp, 512);
  ec.max_num_seqs = 1;
  return ec;
}

// bench --device cuda: pp and tg on the GPU through the engine with the CUDA backend (model file or random
// weights).
int bench_cuda(const Args& args, const std::string& device) {
#ifndef LLAMARUN_WITH_CUDA
  fail("--device ", device, ": this build has no CUDA backend; rebuild with -DLLAMARUN_CUDA=ON");
#else
  const int reps = int(args.integer("--reps", 3));
  const int pp0 = int(args.integer("--pp", 512)), tg0 = int(args.integer("--tg", 64)),
            depth0 = int(args.integer("--depth", 0));
  if (pp0 < 1 || tg0 < 1 || depth0 < 0 || reps < 1) fail("--pp, --tg, --reps must be >= 1 and --depth >= 0");
  CudaLlamaOptions co;
  cuda_options_from(args, device, &co);
  std::unique_ptr<Model> m;
  std::string model_name;
  const std::string dt = args.str("--dtype", args.has("--random-weights") ? "f16" : "auto");
  Shape sh;
  std::unique_ptr<StepModel> backend;
  if (args.has("--random-weights")) {
    if (dt != "f16" && dt != "bf16") fail("--dtype ", dt, " with --device ", device, ": use f16 or bf16");
    co.dtype = dt == "bf16" ? DType::BF16 : DType::F16;
    m = std::make_unique<Model>();
    m->cfg = random_model_preset(args.str("--random-weights"));
    // Random weights have no trained context: make room for the requested shape.
    m->cfg.max_position = std::max({m->cfg.max_position, pp0 + 1, std::max(depth0, 1) + tg0 + 1});
    sh = fit_shape(pp0, tg0, depth0, m->cfg.max_position);
    co.max_context = sh.ctx;
    co.paged_max_tokens = bench_engine_config(sh).max_batch_tokens;  // the engine's batch limits
    co.paged_max_seqs = bench_engine_config(sh).max_num_seqs;
    const std::string q = host_quantize_from(args);
    if (q.empty()) {
      backend = make_cuda_step_model(m->cfg, 1, co);  // generated on the GPU (FP8: quantized there)
      model_name = "random:" + args.str("--random-weights") + ":" + dt + (co.fp8_weights ? ":fp8" : "");
    } else {  // random host weights quantized under the mixing rules, uploaded as a file's would be
      const QuantScheme scheme = parse_quant_scheme(q);
      const LlamaConfig rc = m->cfg;
      m = make_random_model(rc, DType::F32, 1, 1, &scheme);
      backend = make_cuda_step_model(*m, co);
      model_name = "random:" + args.str("--random-weights") + ":" + scheme.name;
    }
  } else {
    LoadOptions lo;
    lo.max_batch = 1;
    lo.load_tokenizer = false;
    lo.quantize = host_quantize_from(args);
    m = load_model(model_path_from(args), lo);
    sh = fit_shape(pp0, tg0, depth0, m->cfg.max_position);
    const bool bf16_embd = m->llama->weights().tok_embd.dtype == DType::BF16;  // as bound by the validator
    co.dtype = dt == "bf16" || (dt == "auto" && bf16_embd) ? DType::BF16 : DType::F16;
    co.max_context = sh.ctx;
    co.paged_max_tokens = bench_engine_config(sh).max_batch_tokens;  // the engine's batch limits
    co.paged_max_seqs = bench_engine_config(sh).max_num_seqs;
    backend = make_cuda_step_model(*m, co);
    model_name = m->path;
  }
  auto engine = make_engine(args, *m, device, sh.ctx, bench_engine_config(sh), std::move(backend));
  const LlamaConfig& c = m->cfg;
  const Timings t = run_bench(*engine, sh, reps, c.vocab_size);
  const Stats &pps = t.pp, &tgs = t.tg;
  const BackendStats bs = engine->backend_stats();
  const double wbytes = double(bs.weight_bytes_per_token);
  const double kv = double(bs.kv_bytes_per_position) * (sh.depth + sh.tg / 2.0);
  const double tg_gbs = tgs.median * (wbytes + kv) / 1e9;
  const double attn_flops = 4.0 * c.num_layers * c.num_heads * c.head_dim * (sh.pp / 2.0);
  const double pp_tflops = pps.median * (linear_flops_per_token(c) + attn_flops) / 1e12;
  const double load_gbs = bs.load_seconds > 0 ? bs.load_bytes / bs.load_seconds / 1e9 : 0;
  nlohmann::json j{{"model", model_name},
                   {"device", device},
                   {"gpu", engine->backend_name()},
                   {"dtype", dtype_name(co.dtype)},
                   {"weight_bytes_streamed_per_token", wbytes},
                   {"load", {{"seconds", bs.load_seconds}, {"bytes", bs.load_bytes}, {"gb_per_s", load_gbs}}},
                   {"memory",
                    {{"weights_bytes", bs.device_weight_bytes},
                     {"kv_bytes", bs.device_kv_bytes},
                     {"total_bytes", bs.device_bytes},
                     {"peak_bytes", bs.device_peak_bytes}}},
                   {"pp",
                    {{"tokens", sh.pp},
                     {"tok_per_s_median", pps.median},
                     {"tok_per_s_min", pps.min},
                     {"tok_per_s_max", pps.max},
                     {"tflops", pp_tflops}}},
                   {"tg",
                    {{"tokens", sh.tg},
                     {"depth", sh.depth},
                     {"tok_per_s_median", tgs.median},
                     {"tok_per_s_min", tgs.min},
                     {"tok_per_s_max", tgs.max},
                     {"gbs", tg_gbs}}},
                   {"reps", reps}};
  if (args.has("--json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s | %s | %s | %.2f GB streamed per token\n", model_name.c_str(),
              engine->backend_name().c_str(), dtype_name(co.dtype), wbytes / 1e9);
  std::printf("memory: weights %.2f GB, KV %.2f GB, peak %.2f GB | load %.2f s (%.1f GB/s)\n",
              bs.device_weight_bytes / 1e9, bs.device_kv_bytes / 1e9, bs.device_peak_bytes / 1e9,
              bs.load_seconds, load_gbs);
  std::printf("pp%-5d %9.1f tok/s (min %.1f, max %.1f) | %.1f TFLOP/s\n", sh.pp, pps.median, pps.min, pps.max,
              pp_tflops);
  std::printf("tg%-5d %9.1f tok/s (min %.1f, max %.1f) at depth %d | %.1f GB/s (weights + KV)\n", sh.tg,
              tgs.median, tgs.min, tgs.max, sh.depth, tg_gbs);
  std::printf("(device ceilings, graph/PDL ablations: llamarun_bench_cuda)\n");
  return 0;
#endif
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  Args args(
      "bench",
      "Measure prompt processing (pp) and generation (tg) speed through the serving engine, with the\n"
      "machine's read bandwidth and FLOP peak measured in the same run (CPU). Reports medians over\n"
      "repetitions. pp: one step of the whole prompt; tg: greedy decode after a prompt of --depth tokens.",
      {{"--model", "-m", true, "model directory or GGUF file", "the default model"},
       {"--random-weights", "", true,
        "use a random model of a preset shape: tiny, smollm2-135m, llama-1b, llama2-7b", ""},
       {"--dtype", "", true, "weight dtype for --random-weights: f32, f16, bf16, q8_0, q4_0, q4_1", "bf16"},
       {"--pp", "", true, "prompt tokens for the pp test", "512"},
       {"--tg", "", true, "tokens generated in the tg test", "64"},
       {"--depth", "", true,
        "context already in the KV cache before tg (lowered, with a note, to fit the model)", "0"},
       {"--reps", "-r", true, "repetitions", "3"},
       {"--gpu-quant", "", false, "--device cuda: keep quantized weights quantized on the GPU (the default)",
        ""},
       kv_cache_dtype_opt(),
       fp8_weight_scale_opt(),
       {"--gpu-fp8-fused", "", false,
        "with --quantize fp8: quantize the FP8 GEMMs' inputs inside RMSNorm / SiLU-mul instead of in "
        "separate kernels (experimental: not yet measured on a GPU)",
        ""},
       {"--gpu-dequant", "", false,
        "--device cuda: dequantize quantized weights to fp16 / bf16 at load (see llamarun generate --help)",
        ""},
       {"--gpu-quant-staged", "", false,
        "with --gpu-quant: every GEMV block quantizes its input itself instead of one kernel per projection "
        "(ablation)",
        ""},
       {"--gpu-quant-no-pdl", "", false,
        "with --gpu-quant: the batch-1 decode's kernels without programmatic dependent launch (ablation)",
        ""},
       {"--gpu-quant-no-occ4", "", false,
        "with --gpu-quant: the batch-1 GEMV with the compiler's registers (2 blocks per SM) instead of 64 (4 "
        "blocks; ablation)",
        ""},
       {"--gpu-quant-q8-once", "", false,
        "with --gpu-quant: Q8_0 projections of the batch-1 path read an input quantized once, as the others "
        "do, instead of staging it in every block (ablation)",
        ""},
       {"--gpu-quant-resident", "", false,
        "with --gpu-quant: GEMVs reading an input quantized once run as one resident wave of blocks whose "
        "warps stream rows (ablation)",
        ""},
       {"--gpu-quant-x-smem", "", false,
        "with --gpu-quant: those GEMVs copy the quantized input into shared memory per block (ablation)", ""},
       {"--gpu-quant-decode-at-load", "", false,
        "with --gpu-quant: the batch-1 GEMV unpacks the quants as it loads them, as before 2026-12-07 "
        "(ablation)",
        ""},
       {"--gpu-quant-dequant-unstaged", "", false,
        "with --gpu-quant: prefill's dequantization stores each lane's unit directly instead of staging a "
        "block's output in shared memory (ablation)",
        ""},
       {"--gpu-quant-dequant-ahead", "", false,
        "with --gpu-quant: prefill dequantizes the next weight on a side stream while the current GEMM runs "
        "(experimental)",
        ""},
       {"--gpu-quant-rows", "", true,
        "with --gpu-quant: rows per warp of the batch-1 GEMV reading an input quantized once (1, 2 or 4; 0: "
        "by each projection's shape)",
        "0"},
       {"--threads", "-t", true, "CPU threads", "all cores"},
       {"--act", "", true,
        "CPU activation precision: auto (Q8_0 / Q4_0 / Q4_1 decode on int8-quantized activations, as "
        "llama.cpp) or f32 (f32 activations wherever a type has that path)",
        "auto"},
       {"--device", "", true,
        "cpu, cuda or cuda:N (GPU: fp16 weights, or bf16 with --dtype bf16; device ceilings and ablations: "
        "llamarun_bench_cuda)",
        "cpu"},
       {"--quantize", "", true,
        "quantize the weights at load (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q4_1, ...; with --random-weights "
        "the random f32 values are quantized under the same rules)",
        "off"},
       {"--json", "", false, "print one JSON object", ""}});
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  const std::string device = device_from(args);
  if (is_cuda_device(device)) return bench_cuda(args, device);
  if (args.has("--threads")) {
    long long t = args.integer("--threads", 1);
    if (t < 1 || t > 1024) fail("--threads must be between 1 and 1024");
    omp_set_num_threads(int(t));
  }
  const int pp0 = int(args.integer("--pp", 512)), tg0 = int(args.integer("--tg", 64)),
            depth0 = int(args.integer("--depth", 0)), reps = int(args.integer("--reps", 3));
  if (pp0 < 1 || tg0 < 1 || depth0 < 0 || reps < 1) fail("--pp, --tg, --reps must be >= 1 and --depth >= 0");
  const int threads = omp_get_max_threads();
  const std::string act = args.str("--act", "auto");
  if (act != "auto" && act != "f32") fail("--act on the CPU: auto or f32, not '", act, "'");

  std::unique_ptr<Model> m;
  std::string model_name;
  if (args.has("--random-weights")) {
    const std::string dt = args.str("--dtype", "bf16");
    DType d = dt == "f32"    ? DType::F32
              : dt == "f16"  ? DType::F16
              : dt == "bf16" ? DType::BF16
              : dt == "q8_0" ? DType::Q8_0
              : dt == "q4_0" ? DType::Q4_0
              : dt == "q4_1" ? DType::Q4_1
                             : (fail("--dtype: unknown dtype '", dt, "'"), DType::F32);
    LlamaConfig rc = random_model_preset(args.str("--random-weights"));
    rc.max_position = std::max({rc.max_position, pp0 + 1, std::max(depth0, 1) + tg0 + 1});
    const std::string q = host_quantize_from(args);
    if (!q.empty() && args.has("--dtype"))
      fail("--dtype and --quantize exclude each other with --random-weights");
    const QuantScheme scheme = q.empty() ? QuantScheme{} : parse_quant_scheme(q);
    m = make_random_model(rc, d, 1, std::min(pp0, 512), q.empty() ? nullptr : &scheme);
    m->llama->options().int8_activations = act != "f32";  // as load_model sets it for a file
    model_name = "random:" + args.str("--random-weights") + ":" + (q.empty() ? dt : scheme.name);
  } else {
    LoadOptions lo;
    lo.max_batch = std::min(pp0, 512);
    lo.load_tokenizer = false;
    lo.quantize = host_quantize_from(args);
    lo.activations = act;
    m = load_model(model_path_from(args), lo);
    model_name = m->path;
  }
  const LlamaConfig& c = m->cfg;
  const Shape sh = fit_shape(pp0, tg0, depth0, c.max_position);
  const int pp = sh.pp, tg = sh.tg, depth = sh.depth;

  std::fprintf(stderr, "bench: measuring machine limits (%d threads, SIMD %s)...\n", threads,
               simd_level_name());
  const double bw = cpu::measure_read_bandwidth_gbs(threads);
  const double f32_peak = cpu::measure_fp32_peak_gflops(threads);
  const double bf16_peak = cpu::measure_bf16_peak_gflops(threads);

  auto engine = make_engine(args, *m, "cpu", sh.ctx, bench_engine_config(sh));
  const Timings t = run_bench(*engine, sh, reps, c.vocab_size);
  const Stats &pps = t.pp, &tgs = t.tg;
  // Bytes one decode step streams: every matrix (at its stored, possibly quantised size), the norms, one
  // embedding row, and the f32 K and V of the positions attended to (depth + tg/2 on average over the run).
  const size_t wbytes = streamed_weight_bytes(m->llama->weights());
  const size_t small_bytes = streamed_small_weight_bytes(m->llama->weights());
  const double kv_bytes_per_tok =
      2.0 * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(float) * (depth + tg / 2.0);
  const double tok_bytes = double(wbytes + small_bytes) + kv_bytes_per_tok;
  const double tg_gbs = tgs.median * tok_bytes / 1e9;
  const double attn_flops = 4.0 * c.num_layers * c.num_heads * c.head_dim * (pp / 2.0);
  const double pp_gflops = pps.median * (linear_flops_per_token(c) + attn_flops) / 1e9;
  const bool bf16_w = m->llama->weights().layers[0].wq.dtype == DType::BF16 && bf16_peak > 0;
  const double flop_peak = bf16_w ? bf16_peak : f32_peak;

  nlohmann::json j{
      {"model", model_name},
      {"threads", threads},
      {"simd", simd_level_name()},
      {"weight_bytes_streamed_per_token", wbytes},
      {"bytes_streamed_per_token",
       {{"matrices", wbytes},
        {"norms_and_embedding_row", small_bytes},
        {"kv_mean", kv_bytes_per_tok},
        {"total", tok_bytes}}},
      {"machine",
       {{"read_bandwidth_gbs", bw}, {"fp32_peak_gflops", f32_peak}, {"bf16_peak_gflops", bf16_peak}}},
      {"pp",
       {{"tokens", pp},
        {"tok_per_s_median", pps.median},
        {"tok_per_s_min", pps.min},
        {"tok_per_s_max", pps.max},
        {"gflops", pp_gflops},
        {"peak_used", bf16_w ? "bf16" : "fp32"},
        {"pct_of_peak", 100 * pp_gflops / flop_peak}}},
      {"tg",
       {{"tokens", tg},
        {"depth", depth},
        {"tok_per_s_median", tgs.median},
        {"tok_per_s_min", tgs.min},
        {"tok_per_s_max", tgs.max},
        {"gbs", tg_gbs},
        {"pct_of_read_bandwidth", 100 * tg_gbs / bw}}},
      {"reps", reps}};
  if (args.has("--json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf(
      "model %s | %d threads | SIMD %s | %.4f GB streamed per token (matrices %.4f + norms/embedding row "
      "%.6f + KV %.4f)\n",
      model_name.c_str(), threads, simd_level_name(), tok_bytes / 1e9, wbytes / 1e9, small_bytes / 1e9,
      kv_bytes_per_tok / 1e9);
  std::printf("machine: read bandwidth %.1f GB/s | fp32 peak %.1f GFLOP/s | bf16 peak %.1f GFLOP/s\n", bw,
              f32_peak, bf16_peak);
  std::printf("pp%-5d %8.2f tok/s (min %.2f, max %.2f) | %.1f GFLOP/s = %.1f%% of %s peak\n", pp, pps.median,
              pps.min, pps.max, pp_gflops, 100 * pp_gflops / flop_peak, bf16_w ? "bf16" : "fp32");
  std::printf("tg%-5d %8.2f tok/s (min %.2f, max %.2f) at depth %d | %.1f GB/s = %.1f%% of read bandwidth\n",
              tg, tgs.median, tgs.min, tgs.max, depth, tg_gbs, 100 * tg_gbs / bw);
  return 0;
}

}  // namespace llamarun::cli
