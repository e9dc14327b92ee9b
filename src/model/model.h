// A loaded model: weights (mmap'ed), config, tokenizer and the CPU forward pass, from a Hugging Face
// directory or a GGUF file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/weight_map.h"
#include "model/config.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {

struct LoadOptions {
  int max_batch = 256;  // most tokens per forward() call
  // "auto": bf16 activation rounding for bf16 checkpoints, f32 otherwise; or "f32" / "bf16".
  std::string activations = "auto";
  bool load_tokenizer = true;
  // Non-empty: quantise the weight matrices at load, in memory, to this llama.cpp type (Q8_0, Q4_K_M, ...;
  // model/quantize_model.h), as `llamarun quantize` would write them.
  std::string quantize;
};

struct Model {
  std::string path;
  bool gguf = false;
  bool meta = false;  // a Meta checkpoint directory (tensors under GGUF names, see model/meta_checkpoint.h)
  bool gguf_names() const { return gguf || meta; }
  LlamaConfig cfg;
  std::shared_ptr<WeightMap> weights;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the source has none (or load_tokenizer false)
  std::string chat_template;             // jinja text from the file, "" when none
  std::unique_ptr<LlamaModel> llama;
  std::vector<uint8_t> owned_storage;  // tensor data of in-memory (random-weight) models

  // Bytes of tensor data (what the forward pass reads).
  size_t weight_bytes() const { return weights ? weights->total_bytes() : 0; }
};

// `path`: a GGUF file, a Hugging Face model directory or a Meta checkpoint directory. Throws Error naming the
// path and problem.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opts = {});

// The default model's path (models/SmolLM2-135M-Instruct.Q4_1.gguf, searched next to the
// executable's source tree and the working directory; LLAMARUN_MODEL overrides). Throws Error
// saying how to obtain it when absent.
std::string default_model_path();

}  // namespace llamarun
