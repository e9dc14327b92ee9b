// The CUDA backend as the serving engine's StepModel: CudaLlama (a paged KV pool in GPU memory, varlen
// batches, a fused batch-1 decode path, CUDA graphs for decode batch buckets, greedy tokens chosen on the
// GPU). Plain C++ header; only linked in builds with LLAMARUN_CUDA.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/cuda/cuda_llama.h"
#include "engine/step_model.h"
#include "model/model.h"

namespace llamarun {

// Uploads model.weights to opt.device. opt.max_context: the longest sequence;
// opt.paged_max_tokens / paged_max_seqs should match the engine's max_batch_tokens / max_num_seqs.
std::unique_ptr<StepModel> make_cuda_step_model(const Model& model, CudaLlamaOptions opt);
// Random weights of `config` generated on the GPU (benchmarks of shapes without a checkpoint).
std::unique_ptr<StepModel> make_cuda_step_model(const LlamaConfig& config, uint64_t seed,
                                                CudaLlamaOptions opt);

}  // namespace llamarun
