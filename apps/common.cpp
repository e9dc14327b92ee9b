#include "common.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_step_model.h"
#endif

namespace llamarun::cli {

namespace {
// An option's value in lower case (the choice options that take any case: --quantize, --kv-cache-dtype).
std::string lower_value(const Args& args, const std::string& name, const std::string& def) {
  std::string v = args.str(name, def);
  for (char& c : v) c = char(std::tolower(static_cast<unsigned char>(c)));
  return v;
}
}  // namespace

std::vector<OptSpec> model_opts() {
  return {
      {"--model", "-m", true, "model directory (Hugging Face or Meta checkpoint) or GGUF file",
       "the default model"},
      {"--ctx", "-c", true, "context size in tokens", "min(model maximum, 4096)"},
      {"--threads", "-t", true, "CPU threads", "all cores"},
      {"--act", "", true,
       "activation precision. CPU: auto (bf16 rounding for bf16 checkpoints; Q8_0 / Q4_0 / Q4_1 weights "
       "multiply int8-quantized activations in decode, and in prefill on AVX-512 VNNI, as llama.cpp), f32 "
       "(f32 activations wherever a "
       "type has that path) or bf16. "
       "--device cuda: auto (bf16 for bf16 checkpoints, else f16), f16 or bf16",
       "auto"},
      {"--quantize", "", true,
       "quantize the weights at load, in memory: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q5_0, Q5_1, Q4_0, Q4_1, "
       "F16, BF16; fp8 (--device cuda, compute capability 8.9+): E4M3 weights with per-channel scales, "
       "quantized on the GPU",
       "off"},
      {"--gpu-dequant", "", false,
       "--device cuda: dequantize Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K and AWQ / GPTQ weights to fp16 / bf16 "
       "at load (pp512 about 1.7x faster on an H100, and batches over 64 rows; 2-4x the weight memory); by "
       "default they stay quantized on the GPU (decode GEMVs on the blocks)",
       ""},
      {"--gpu-quant", "", false, "--device cuda: keep quantized weights quantized (the default)", ""},
      kv_cache_dtype_opt(),
      fp8_weight_scale_opt()};
}

OptSpec fp8_weight_scale_opt() {
  return {"--fp8-weight-scale", "", true,
          "with --quantize fp8: each weight row's scale is max (max/448) or search (the least squared error "
          "among 16 scales from max/448 to 2 max/448; in a CPU emulation it cut FP8's perplexity cost on the "
          "default model from +2.74% to +1.04%; not yet measured on a GPU)",
          "max"};
}

OptSpec kv_cache_dtype_opt() {
  return {"--kv-cache-dtype", "", true,
          "--device cuda: auto (the activation dtype) or fp8 (E4M3 keys and values, unit scale: twice the "
          "cached positions per GiB, half the bytes for attention to read; single streams lose the fused "
          "batch-1 path)",
          "auto"};
}

bool kv_fp8_requested(const Args& args, const std::string& device) {
  const std::string v = lower_value(args, "--kv-cache-dtype", "auto");
  if (v != "auto" && v != "fp8")
    fail("--kv-cache-dtype '", args.str("--kv-cache-dtype", ""), "': expected auto or fp8");
  if (v == "fp8" && !is_cuda_device(device))
    fail("--kv-cache-dtype fp8: the FP8 KV cache is a GPU format: add --device cuda");
  return v == "fp8";
}

std::vector<OptSpec> sampling_opts(const char* default_temp) {
  return {{"--n-predict", "-n", true, "most tokens to generate", "256"},
          {"--temp", "", true, "temperature; 0 = greedy", default_temp},
          {"--top-k", "", true, "keep the k most likely tokens (0 = off)", "0"},
          {"--top-p", "", true, "nucleus sampling threshold (1 = off)", "1"},
          {"--min-p", "", true, "drop tokens below min_p x the top probability (0 = off)", "0"},
          {"--repeat-penalty", "", true, "repetition penalty, HF semantics (1 = off)", "1"},
          {"--repeat-last-n", "", true, "penalty window in tokens (-1 = all)", "-1"},
          {"--presence-penalty", "", true, "OpenAI presence penalty", "0"},
          {"--frequency-penalty", "", true, "OpenAI frequency penalty", "0"},
          {"--seed", "-s", true, "random seed (same seed, same text)", "random"},
          {"--stop", "", true, "stop string (repeatable)", "", true},
          {"--ignore-eos", "", false, "keep generating after end-of-sequence tokens", ""}};
}

OptSpec device_opt() {
  return {"--device", "", true, "cpu, cuda or cuda:N (cuda needs a build with -DLLAMARUN_CUDA=ON)", "cpu"};
}

bool is_cuda_device(const std::string& d) { return d.rfind("cuda", 0) == 0; }

DType gpu_dtype_from(const Args& args, const Model& model) {
  const std::string act = args.str("--act", "auto");
  if (act == "bf16") return DType::BF16;
  if (act == "f16") return DType::F16;
  if (act != "auto")
    fail("--act ", act, " with --device ", args.str("--device", "cpu"), ": use auto, f16 or bf16");
  // The embedding as bound by bind_llama_weights (model/llama_tensors.h).
  return model.llama && model.llama->weights().tok_embd.dtype == DType::BF16 ? DType::BF16 : DType::F16;
}

std::string device_from(const Args& args) {
  std::string d = args.str("--device", "cpu");
  kv_fp8_requested(args, d);  // a bad value, or fp8 off the GPU: an error before anything loads
  if (d == "cpu") return d;
  bool ok = d == "cuda";
  if (!ok && d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() <= 8) {
    ok = true;
    for (size_t i = 5; i < d.size(); ++i) ok = ok && d[i] >= '0' && d[i] <= '9';
  }
  if (!ok) fail("--device '", d, "': expected cpu, cuda or cuda:N");
#ifndef LLAMARUN_WITH_CUDA
  fail("--device ", d, ": this build has no CUDA backend; rebuild with -DLLAMARUN_CUDA=ON");
#endif
  return d;
}

bool fp8_requested(const Args& args) { return lower_value(args, "--quantize", "") == "fp8"; }

std::string host_quantize_from(const Args& args) {
  if (!fp8_requested(args)) return args.str("--quantize", "");
  if (!is_cuda_device(args.str("--device", "cpu")))
    fail(
        "--quantize fp8: FP8 (E4M3) weights are a GPU format (Hopper / Ada tensor cores): add --device cuda, "
        "or use Q8_0 / Q6_K / Q5_K_M / Q4_K_M on the CPU");
  return "";
}

std::string model_path_from(const Args& args) {
  return args.has("--model") ? args.str("--model") : default_model_path();
}

std::unique_ptr<Engine> make_engine(const Args& args, Model& model, const std::string& device, int ctx,
                                    EngineConfig ec, std::unique_ptr<StepModel> backend) {
  (void)args;  // --act, for the GPU only
  ec.max_model_len = ctx;
  if (ec.num_blocks <= 0) {
    // One sequence of ctx tokens, plus the scheduler's admission watermark (1%) and a spare block.
    const int blocks = (ctx + ec.block_size - 1) / ec.block_size;
    ec.num_blocks = blocks + blocks / 99 + 2;
  }
  if (!backend && is_cuda_device(device)) {
#ifdef LLAMARUN_WITH_CUDA
    CudaLlamaOptions co;
    cuda_options_from(args, device, &co);
    co.dtype = gpu_dtype_from(args, model);
    co.max_context = ctx;
    co.paged_max_tokens = ec.max_batch_tokens;  // the engine's batch limits
    co.paged_max_seqs = std::min(ec.max_num_seqs, ec.max_batch_tokens);
    backend = make_cuda_step_model(model, co);
#else
    fail("--device ", device, ": this build has no CUDA backend; rebuild with -DLLAMARUN_CUDA=ON");
#endif
  }
  return std::make_unique<Engine>(model, ec, std::move(backend));
}

#ifdef LLAMARUN_WITH_CUDA
void cuda_options_from(const Args& args, const std::string& device, CudaLlamaOptions* co) {
  co->device = device;
  if (args.has("--gpu-quant") && args.has("--gpu-dequant"))
    fail("--gpu-quant and --gpu-dequant exclude each other");
  // FP8 weights replace the file's blocks (quantized on the GPU from the dequantized values).
  co->keep_quantized = !args.has("--gpu-dequant") && !fp8_requested(args);
  // Ablations (bench only): the GEMV input staged in every block, the batch-1 graph without PDL.
  co->quantize_input_once = !args.has("--gpu-quant-staged");
  co->quant_pdl = !args.has("--gpu-quant-no-pdl");
  co->quant_occupancy4 = !args.has("--gpu-quant-no-occ4");
  co->quant_stage_q8 = !args.has("--gpu-quant-q8-once");
  co->quant_resident = args.has("--gpu-quant-resident");
  co->quant_x_smem = args.has("--gpu-quant-x-smem");
  co->quant_decode_at_load = args.has("--gpu-quant-decode-at-load");
  co->quant_dequant_staged = !args.has("--gpu-quant-dequant-unstaged");
  co->quant_dequant_ahead = args.has("--gpu-quant-dequant-ahead");
  if (args.has("--gpu-quant-rows")) co->quant_rows_per_warp = int(args.integer("--gpu-quant-rows", 1));
  co->fp8_weights = fp8_requested(args);
  const std::string ws = lower_value(args, "--fp8-weight-scale", "max");
  if (ws != "search" && ws != "max")
    fail("--fp8-weight-scale '", args.str("--fp8-weight-scale", ""), "': expected search or max");
  co->fp8_weight_scale = ws == "max" ? cuda::Fp8Scale::kMax : cuda::Fp8Scale::kSearch;
  co->fp8_fused_act_quant = args.has("--gpu-fp8-fused");  // declared by bench and serve
  co->kv_fp8 = kv_fp8_requested(args, device);
}
#endif

std::unique_ptr<Model> open_model(const Args& args) {
  if (args.has("--threads")) {
    long long t = args.integer("--threads", 0);
    if (t < 1 || t > 1024) fail("--threads must be between 1 and 1024, got ", t);
    omp_set_num_threads(int(t));
  }
  LoadOptions lo;
  const std::string act = args.str("--act", "auto");
  if (is_cuda_device(args.str("--device", "cpu"))) {
    // The GPU's dtype comes from gpu_dtype_from(); the host model only supplies config and weights.
    if (act != "auto" && act != "f16" && act != "bf16")
      fail("--act ", act, " with --device ", args.str("--device"), ": use auto, f16 or bf16");
    lo.activations = act == "bf16" ? "bf16" : "auto";
  } else {
    if (act != "auto" && act != "f32" && act != "bf16")
      fail("--act ", act, " on the CPU: use auto, f32 or bf16 (f16 is for --device cuda)");
    lo.activations = act;
  }
  lo.quantize = host_quantize_from(args);
  return load_model(model_path_from(args), lo);
}

int context_size(const Args& args, const Model& m) {
  long long def = std::min(m.cfg.max_position, 4096);
  long long c = args.integer("--ctx", def);
  if (c < 1 || c > m.cfg.max_position)
    fail("--ctx ", c, " is outside 1..", m.cfg.max_position, " (the model's max_position_embeddings)");
  return int(c);
}

SamplingParams sampling_from(const Args& args, double default_temp) {
  SamplingParams p;
  p.temperature = float(args.number("--temp", default_temp));
  p.top_k = int(args.integer("--top-k", 0));
  p.top_p = float(args.number("--top-p", 1.0));
  p.min_p = float(args.number("--min-p", 0.0));
  p.repetition_penalty = float(args.number("--repeat-penalty", 1.0));
  p.penalty_last_n = int(args.integer("--repeat-last-n", -1));
  p.presence_penalty = float(args.number("--presence-penalty", 0.0));
  p.frequency_penalty = float(args.number("--frequency-penalty", 0.0));
  long long n = args.integer("--n-predict", 256);
  if (n < 1 || n > (1 << 24)) fail("--n-predict must be between 1 and 16777216, got ", n);
  p.max_tokens = int(n);
  if (args.has("--seed")) {
    long long s = args.integer("--seed", 0);
    if (s < 0) fail("--seed must be non-negative, got ", s);
    p.seed = uint64_t(s);
  }
  p.stop = args.all("--stop");
  p.ignore_eos = args.has("--ignore-eos");
  return p;
}

}  // namespace llamarun::cli
