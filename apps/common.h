// Options shared by generate, chat and bench: model loading, threads, sampling.
#pragma once

#include <memory>
#include <vector>

#include "args.h"
#include "engine/engine.h"
#include "model/model.h"
#include "sampling/sampling_params.h"

namespace llamarun {
struct CudaLlamaOptions;
}  // namespace llamarun

namespace llamarun::cli {

// --model, --ctx, --threads, --act
std::vector<OptSpec> model_opts();
// --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, --presence-penalty,
// --frequency-penalty, --seed, --stop, --n-predict, --ignore-eos
std::vector<OptSpec> sampling_opts(const char* default_temp);

// --device: cpu (default), cuda, cuda:N.
OptSpec device_opt();
// The --device value checked: "cpu", or "cuda" / "cuda:N" (N a non-negative integer). Throws Error for
// anything else, and for cuda in a build without the CUDA backend.
std::string device_from(const Args& args);
// --quantize for the host loader: the flag's value, except fp8 (a GPU storage format: --device cuda quantizes
// the weights on the GPU, CudaLlamaOptions::fp8_weights), for which it is empty; fp8 without a GPU device
// throws Error.
std::string host_quantize_from(const Args& args);
bool fp8_requested(const Args& args);
// --kv-cache-dtype: the option, and whether it asks for the FP8 KV cache (Error on a bad value, or fp8 with
// a CPU device).
OptSpec kv_cache_dtype_opt();
// --fp8-weight-scale search|max (CudaLlamaOptions::fp8_weight_scale).
OptSpec fp8_weight_scale_opt();
bool kv_fp8_requested(const Args& args, const std::string& device);
bool is_cuda_device(const std::string& device);
// The GPU's weight / activation dtype from --act: f16, bf16, or auto (bf16 for bf16 checkpoints, else
// f16). Throws Error for other values.
DType gpu_dtype_from(const Args& args, const Model& model);

// The CUDA options every command takes from its flags: the device, --gpu-dequant / --gpu-quant, --quantize
// fp8 (and bench's ablations).
void cuda_options_from(const Args& args, const std::string& device, CudaLlamaOptions* co);

// --model when given, else the default model's path (looked up only then: a machine without the default
// model runs `-m MODEL` fine).
std::string model_path_from(const Args& args);
std::unique_ptr<Model> open_model(const Args& args);

// The engine `generate`, `chat` and `bench` run on, as the server's: `backend` when given, else the
// model's CPU forward pass, or the CUDA backend for --device cuda (fp16/bf16 from --act).
// ec.max_model_len becomes `ctx`, and the KV cache holds one sequence of ctx tokens (ec.num_blocks, when
// 0); the rest of ec is used as given.
std::unique_ptr<Engine> make_engine(const Args& args, Model& model, const std::string& device, int ctx,
                                    EngineConfig ec = {}, std::unique_ptr<StepModel> backend = nullptr);
// The context size: --ctx, else min(model max_position, 4096).
int context_size(const Args& args, const Model& m);
SamplingParams sampling_from(const Args& args, double default_temp);

template <typename... V>
std::vector<OptSpec> concat(std::vector<OptSpec> a, const V&... rest) {
  (a.insert(a.end(), rest.begin(), rest.end()), ...);
  return a;
}

}  // namespace llamarun::cli
