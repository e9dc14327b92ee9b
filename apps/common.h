// Options shared by generate, chat and bench: model loading, threads, sampling.
#pragma once

#include <memory>
#include <vector>

#include "args.h"
#include "model/model.h"
#include "sampling/sampling_params.h"

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
bool is_cuda_device(const std::string& device);
// The GPU's weight / activation dtype from --act: f16, bf16, or auto (bf16 for bf16 checkpoints, else
// f16). Throws Error for other values.
DType gpu_dtype_from(const Args& args, const Model& model);

std::unique_ptr<Model> open_model(const Args& args);
// The context size: --ctx, else min(model max_position, 4096).
int context_size(const Args& args, const Model& m);
SamplingParams sampling_from(const Args& args, double default_temp);

template <typename... V>
std::vector<OptSpec> concat(std::vector<OptSpec> a, const V&... rest) {
  (a.insert(a.end(), rest.begin(), rest.end()), ...);
  return a;
}

}  // namespace llamarun::cli
