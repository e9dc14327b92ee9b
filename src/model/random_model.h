// Llama-shaped models with random weights built in memory (no file): for benchmarks and tests of
// shapes we have no checkpoint for.
#pragma once

#include <memory>
#include <string>

#include "core/dtype.h"
#include "model/model.h"

namespace llamarun {

// Presets: "tiny" (2 layers, hidden 64), "smollm2-135m", "llama-1b" (TinyLlama-1.1B shape:
// hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632, vocab 32000), "llama2-7b".
LlamaConfig random_model_preset(const std::string& name);

struct QuantScheme;

// Builds a model of `cfg` whose linear weights are `dtype` (norms f32), values uniform in
// +-1/sqrt(fan_in), from `seed`. No tokenizer. With `quant`, each matrix instead gets the type the scheme's
// mixing rules give it (choose_quant_type, as `--quantize` / `llamarun quantize` would), quantised from the
// f32 values directly.
std::unique_ptr<Model> make_random_model(const LlamaConfig& cfg, DType dtype, uint64_t seed = 1,
                                         int max_batch = 256, const QuantScheme* quant = nullptr);

}  // namespace llamarun
