// Single-sequence generation on a CUDA GPU: the same contract as Generator (engine/generator.h), with the
// forward pass in CudaLlama. Plain C++ header; only built with LLAMARUN_CUDA (LLAMARUN_WITH_CUDA defined).
//
// Sampling: greedy (temperature 0) takes the argmax on the GPU (4 bytes back per token); temperature /
// top-k / top-p without anything else sample on the GPU (CudaLlama::decode_step_sample); any of min-p,
// penalties, logit_bias or logprobs copy the logits to the host and use the CPU Sampler. The first token
// after the prompt is always chosen by the CPU Sampler from the prefill's logits.
#pragma once

#include <memory>
#include <vector>

#include "backends/cuda/cuda_llama.h"
#include "engine/generator.h"
#include "model/model.h"

namespace llamarun {

class CudaGenerator {
 public:
  // Uploads model.weights (any stored dtype) to the GPU as opt.dtype; opt.max_context is the KV cache size.
  CudaGenerator(Model& model, const CudaLlamaOptions& opt);
  ~CudaGenerator();

  // As Generator::generate (prompt ids with BOS already included; reuses a cached prompt prefix).
  GenerationResult generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                            const TextCallback& on_text = {});

  CudaLlama& llama() { return *llama_; }
  int max_ctx() const { return llama_->max_context(); }
  void reset() { cached_.clear(); }

 private:
  Model& model_;
  std::unique_ptr<CudaLlama> llama_;
  std::vector<int32_t> cached_;  // tokens whose K/V are in the GPU cache (positions 0..size-1)
};

// True when the parameters can be honoured entirely by GPU sampling (no host logits needed).
bool cuda_samples_on_gpu(const SamplingParams& p);

}  // namespace llamarun
