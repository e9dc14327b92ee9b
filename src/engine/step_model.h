// What the engine runs each step on: the model's forward pass over a varlen batch (prefill chunks and
// decode tokens of many sequences) against a paged KV cache that the StepModel owns. The engine keeps the
// block tables (BlockAllocator / Scheduler); the StepModel only stores and reads K / V where they say.
// Implementations: the CPU forward pass (engine.cpp) and the CUDA backend (backends/cuda/cuda_step_model.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "model/llama.h"

namespace llamarun {

// What a backend reports about itself, for `bench` and `info` (0 where it does not know).
struct BackendStats {
  double load_seconds = 0;            // weight upload / initialisation wall time
  double warmup_seconds = 0;          // serving warm-up in init_kv (CudaLlama::warm_up_paged), if any
  size_t load_bytes = 0;              // bytes read from the host weights (0 for random weights)
  size_t weight_bytes_per_token = 0;  // weight bytes one decode step reads (layers, final norm, lm_head)
  size_t kv_bytes_per_position = 0;   // K and V bytes one cached position holds (all layers)
  size_t device_weight_bytes = 0;     // device memory: weights
  size_t device_kv_bytes = 0;         //                the KV pool
  size_t device_bytes = 0;            //                all this backend holds now
  size_t device_peak_bytes = 0;       //                the most it ever held
};

class StepModel {
 public:
  virtual ~StepModel() = default;

  // Allocates the KV cache: num_blocks blocks of block_size tokens, or (num_blocks == 0) as many as
  // kv_bytes allows; kv_bytes == 0 lets the backend choose (the GPU: what free memory allows). Returns the
  // number of blocks. Throws Error, with the sizes, when not even one block fits. Called once.
  virtual int init_kv(int block_size, int num_blocks, size_t kv_bytes) = 0;

  // Runs the batch; its block tables cover every position it writes. For each logit row r (the token
  // b.logit_rows[r]):
  //   ids[r]               the argmax token (lowest id on ties), when device_argmax();
  //   logits[r * vocab ..] the row's logits, when want_logits[r] != 0 or !device_argmax().
  // Throws Error on failure (the engine ends the step's sequences with an error and goes on).
  virtual void forward(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits) = 0;

  // Whether forward() computes the greedy token of every row itself (so plain greedy requests need no
  // logits on the host).
  virtual bool device_argmax() const = 0;

  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)", ...

  // Host time spent inside forward() preparing the batch (validation, packing the ids, positions, slots and
  // block tables) since creation, for profiling; 0 where the backend does not separate it.
  virtual double host_prep_seconds() const { return 0; }

  virtual BackendStats backend_stats() const { return {}; }
};

}  // namespace llamarun
