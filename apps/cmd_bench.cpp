// llamarun bench: llama-bench style prompt-processing (pp) and generation (tg) speed, set against
// the machine's read bandwidth and FLOP peak measured in the same run.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "backends/cpu/machine_peak.h"
#include "common.h"
#include "commands.h"
#include "core/error.h"
#include "model/random_model.h"
#include "ops/matmul.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_llama.h"
#endif

namespace llamarun::cli {

namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

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

// Multiply-adds x2 per token of the linear layers (embedding excluded, LM head included).
double linear_flops_per_token(const LlamaConfig& c) {
  double D = c.hidden_size, F = c.intermediate_size, QD = double(c.num_heads) * c.head_dim,
         KD = double(c.num_kv_heads) * c.head_dim;
  double per_layer = D * QD + 2 * D * KD + QD * D + 3 * D * F;
  return 2.0 * (c.num_layers * per_layer + D * c.vocab_size);
}

// bench --device cuda: pp and tg on the GPU through CudaLlama (model file or random weights).
int bench_cuda(const Args& args, const std::string& device) {
#ifndef LLAMARUN_WITH_CUDA
  fail("--device ", device, ": this build has no CUDA backend; rebuild with -DLLAMARUN_CUDA=ON");
#else
  const int pp = int(args.integer("--pp", 512)), tg = int(args.integer("--tg", 64)),
            depth = int(args.integer("--depth", 0)), reps = int(args.integer("--reps", 3));
  if (pp < 1 || tg < 1 || depth < 0 || reps < 1) fail("--pp, --tg, --reps must be >= 1 and --depth >= 0");
  CudaLlamaOptions co;
  co.device = device;
  co.max_context = std::max(pp, depth + tg) + 1;
  std::unique_ptr<CudaLlama> gpu;
  std::unique_ptr<Model> m;
  std::string model_name;
  const std::string dt = args.str("--dtype", args.has("--random-weights") ? "f16" : "auto");
  if (args.has("--random-weights")) {
    if (dt != "f16" && dt != "bf16") fail("--dtype ", dt, " with --device ", device, ": use f16 or bf16");
    co.dtype = dt == "bf16" ? DType::BF16 : DType::F16;
    LlamaConfig c = random_model_preset(args.str("--random-weights"));
    if (co.max_context > c.max_position) c.max_position = co.max_context;
    gpu = std::make_unique<CudaLlama>(c, 1, co);
    model_name = "random:" + args.str("--random-weights") + ":" + dt;
  } else {
    LoadOptions lo;
    lo.max_batch = 1;
    lo.load_tokenizer = false;
    m = load_model(args.str("--model", default_model_path()), lo);
    if (co.max_context > m->cfg.max_position)
      fail("bench needs a context of ", co.max_context, " tokens but the model allows ", m->cfg.max_position);
    const TensorInfo* e = m->weights->find(m->gguf ? "token_embd.weight" : "model.embed_tokens.weight");
    co.dtype = dt == "bf16" || (dt == "auto" && e && e->dtype == DType::BF16) ? DType::BF16 : DType::F16;
    gpu = std::make_unique<CudaLlama>(m->cfg, *m->weights, co);
    model_name = m->path;
  }
  const LlamaConfig& c = gpu->config();
  std::mt19937 rng(7);
  std::vector<int32_t> ids(std::max(pp, depth + tg));
  for (auto& t : ids) t = int32_t(rng() % uint32_t(c.vocab_size));
  gpu->prefill(ids.data(), std::min(pp, 16));  // warm-up (plans, graph capture below)
  gpu->decode_step(ids[0]);
  std::vector<double> pp_tps, tg_tps;
  for (int r = 0; r < reps; ++r) {
    gpu->reset();
    double t0 = now_s();
    gpu->prefill(ids.data(), pp);  // returns after the logits are on the host
    pp_tps.push_back(pp / (now_s() - t0));
  }
  for (int r = 0; r < reps; ++r) {
    gpu->reset();
    if (depth > 0) gpu->prefill(ids.data(), depth);
    double t0 = now_s();
    for (int i = 0; i < tg; ++i) gpu->decode_step(ids[depth + i]);
    tg_tps.push_back(tg / (now_s() - t0));
  }
  Stats pps = stats(pp_tps), tgs = stats(tg_tps);
  const double wbytes = double(gpu->weight_bytes_per_token());
  const double kv = double(gpu->kv_bytes_per_token(depth + tg / 2));
  const double tg_gbs = tgs.median * (wbytes + kv) / 1e9;
  const double attn_flops = 4.0 * c.num_layers * c.num_heads * c.head_dim * (pp / 2.0);
  const double pp_tflops = pps.median * (linear_flops_per_token(c) + attn_flops) / 1e12;
  nlohmann::json j{{"model", model_name},
                   {"device", device},
                   {"gpu", gpu->device_name()},
                   {"dtype", dtype_name(gpu->dtype())},
                   {"weight_bytes_streamed_per_token", wbytes},
                   {"pp", {{"tokens", pp}, {"tok_per_s_median", pps.median}, {"tok_per_s_min", pps.min},
                           {"tok_per_s_max", pps.max}, {"tflops", pp_tflops}}},
                   {"tg", {{"tokens", tg}, {"depth", depth}, {"tok_per_s_median", tgs.median},
                           {"tok_per_s_min", tgs.min}, {"tok_per_s_max", tgs.max}, {"gbs", tg_gbs}}},
                   {"reps", reps}};
  if (args.has("--json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s | %s (%s) | %s | %.2f GB streamed per token\n", model_name.c_str(), device.c_str(),
              gpu->device_name().c_str(), dtype_name(gpu->dtype()), wbytes / 1e9);
  std::printf("pp%-5d %9.1f tok/s (min %.1f, max %.1f) | %.1f TFLOP/s\n", pp, pps.median, pps.min, pps.max,
              pp_tflops);
  std::printf("tg%-5d %9.1f tok/s (min %.1f, max %.1f) at depth %d | %.1f GB/s (weights + KV)\n", tg, tgs.median,
              tgs.min, tgs.max, depth, tg_gbs);
  std::printf("(device ceilings, graph/PDL ablations: llamarun_bench_cuda)\n");
  return 0;
#endif
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  Args args("bench",
            "Measure prompt processing (pp) and generation (tg) speed on the CPU, with the machine's read\n"
            "bandwidth and FLOP peak measured in the same run. Reports medians over repetitions.",
            {{"--model", "-m", true, "model directory or GGUF file", "the default model"},
             {"--random-weights", "", true, "use a random model of a preset shape: tiny, smollm2-135m, llama-1b, llama2-7b", ""},
             {"--dtype", "", true, "weight dtype for --random-weights: f32, f16, bf16, q8_0, q4_0, q4_1", "bf16"},
             {"--pp", "", true, "prompt tokens for the pp test", "512"},
             {"--tg", "", true, "tokens generated in the tg test", "64"},
             {"--depth", "", true, "context already in the KV cache before tg", "0"},
             {"--reps", "-r", true, "repetitions", "3"},
             {"--threads", "-t", true, "CPU threads", "all cores"},
             {"--device", "", true,
              "cpu, cuda or cuda:N (GPU: fp16 weights, or bf16 with --dtype bf16; device ceilings and ablations: "
              "llamarun_bench_cuda)",
              "cpu"},
             {"--quantize", "", true, "quantize the weights at load (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q4_1, ...)", "off"},
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
  const int pp = int(args.integer("--pp", 512)), tg = int(args.integer("--tg", 64)),
            depth = int(args.integer("--depth", 0)), reps = int(args.integer("--reps", 3));
  if (pp < 1 || tg < 1 || depth < 0 || reps < 1) fail("--pp, --tg, --reps must be >= 1 and --depth >= 0");
  const int threads = omp_get_max_threads();

  std::unique_ptr<Model> m;
  std::string model_name;
  if (args.has("--random-weights")) {
    const std::string dt = args.str("--dtype", "bf16");
    DType d = dt == "f32" ? DType::F32 : dt == "f16" ? DType::F16 : dt == "bf16" ? DType::BF16
            : dt == "q8_0" ? DType::Q8_0 : dt == "q4_0" ? DType::Q4_0 : dt == "q4_1" ? DType::Q4_1
            : (fail("--dtype: unknown dtype '", dt, "'"), DType::F32);
    m = make_random_model(random_model_preset(args.str("--random-weights")), d, 1, std::min(pp, 512));
    model_name = "random:" + args.str("--random-weights") + ":" + dt;
  } else {
    LoadOptions lo;
    lo.max_batch = std::min(pp, 512);
    lo.load_tokenizer = false;
    lo.quantize = args.str("--quantize", "");
    m = load_model(args.str("--model", default_model_path()), lo);
    model_name = m->path;
  }
  const LlamaConfig& c = m->cfg;
  const int ctx = std::max(pp, depth + tg) + 1;
  if (ctx > c.max_position) fail("bench needs a context of ", ctx, " tokens but the model allows ", c.max_position);

  std::fprintf(stderr, "bench: measuring machine limits (%d threads, SIMD %s)...\n", threads, simd_level_name());
  const double bw = cpu::measure_read_bandwidth_gbs(threads);
  const double f32_peak = cpu::measure_fp32_peak_gflops(threads);
  const double bf16_peak = cpu::measure_bf16_peak_gflops(threads);

  KVCache kv = m->llama->make_cache(ctx);
  std::vector<float> logits(size_t(std::min(pp, 512)) * c.vocab_size);
  std::mt19937 rng(7);
  std::vector<int32_t> ids(std::max(pp, depth + tg));
  for (auto& t : ids) t = int32_t(rng() % uint32_t(c.vocab_size));

  // Warm-up: page the weights in.
  m->llama->forward(ids.data(), 1, 0, kv, logits.data());

  std::vector<double> pp_tps, tg_tps;
  for (int r = 0; r < reps; ++r) {
    double t0 = now_s();
    for (int p = 0; p < pp; p += m->llama->max_batch()) {
      int n = std::min(m->llama->max_batch(), pp - p);
      m->llama->forward(ids.data() + p, n, p, kv, logits.data());
    }
    pp_tps.push_back(pp / (now_s() - t0));
  }
  for (int r = 0; r < reps; ++r) {
    // Fill the cache to `depth` (untimed), then time tg single-token steps.
    for (int p = 0; p < depth; p += m->llama->max_batch()) {
      int n = std::min(m->llama->max_batch(), depth - p);
      m->llama->forward(ids.data() + p, n, p, kv, logits.data());
    }
    double t0 = now_s();
    for (int i = 0; i < tg; ++i) m->llama->forward(&ids[depth + i], 1, depth + i, kv, logits.data());
    tg_tps.push_back(tg / (now_s() - t0));
  }
  Stats pps = stats(pp_tps), tgs = stats(tg_tps);
  const size_t wbytes = streamed_weight_bytes(m->llama->weights());
  const double kv_bytes_per_tok = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(float) * (depth + tg / 2.0);
  const double tg_gbs = tgs.median * (wbytes + kv_bytes_per_tok) / 1e9;
  const double attn_flops = 4.0 * c.num_layers * c.num_heads * c.head_dim * (pp / 2.0);
  const double pp_gflops = pps.median * (linear_flops_per_token(c) + attn_flops) / 1e9;
  const bool bf16_w = m->llama->weights().layers[0].wq.dtype == DType::BF16 && bf16_peak > 0;
  const double flop_peak = bf16_w ? bf16_peak : f32_peak;

  nlohmann::json j{{"model", model_name},
                   {"threads", threads},
                   {"simd", simd_level_name()},
                   {"weight_bytes_streamed_per_token", wbytes},
                   {"machine", {{"read_bandwidth_gbs", bw}, {"fp32_peak_gflops", f32_peak}, {"bf16_peak_gflops", bf16_peak}}},
                   {"pp", {{"tokens", pp}, {"tok_per_s_median", pps.median}, {"tok_per_s_min", pps.min},
                           {"tok_per_s_max", pps.max}, {"gflops", pp_gflops},
                           {"peak_used", bf16_w ? "bf16" : "fp32"}, {"pct_of_peak", 100 * pp_gflops / flop_peak}}},
                   {"tg", {{"tokens", tg}, {"depth", depth}, {"tok_per_s_median", tgs.median}, {"tok_per_s_min", tgs.min},
                           {"tok_per_s_max", tgs.max}, {"gbs", tg_gbs}, {"pct_of_read_bandwidth", 100 * tg_gbs / bw}}},
                   {"reps", reps}};
  if (args.has("--json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s | %d threads | SIMD %s | %.2f GB streamed per token\n", model_name.c_str(), threads,
              simd_level_name(), wbytes / 1e9);
  std::printf("machine: read bandwidth %.1f GB/s | fp32 peak %.1f GFLOP/s | bf16 peak %.1f GFLOP/s\n", bw, f32_peak,
              bf16_peak);
  std::printf("pp%-5d %8.2f tok/s (min %.2f, max %.2f) | %.1f GFLOP/s = %.1f%% of %s peak\n", pp, pps.median, pps.min,
              pps.max, pp_gflops, 100 * pp_gflops / flop_peak, bf16_w ? "bf16" : "fp32");
  std::printf("tg%-5d %8.2f tok/s (min %.2f, max %.2f) at depth %d | %.1f GB/s = %.1f%% of read bandwidth\n", tg,
              tgs.median, tgs.min, tgs.max, depth, tg_gbs, 100 * tg_gbs / bw);
  return 0;
}

}  // namespace llamarun::cli
