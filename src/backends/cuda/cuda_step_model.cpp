#include "backends/cuda/cuda_step_model.h"

#include "core/error.h"

namespace llamarun {

namespace {

class CudaStepModel final : public StepModel {
 public:
  explicit CudaStepModel(std::unique_ptr<CudaLlama> m) : m_(std::move(m)) {}
  int init_kv(int block_size, int num_blocks, size_t kv_bytes) override {
    return m_->init_paged(block_size, num_blocks, kv_bytes);
  }
  void forward(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits) override {
    m_->forward_paged(b, want_logits, ids, logits);
  }
  bool device_argmax() const override { return true; }
  std::string name() const override { return "cuda (" + m_->device_name() + ")"; }
  double host_prep_seconds() const override { return m_->paged_host_seconds(); }
  BackendStats backend_stats() const override {
    BackendStats s;
    const CudaLoadStats ls = m_->load_stats();
    const CudaMemoryStats ms = m_->memory_stats();
    s.load_seconds = ls.seconds;
    s.warmup_seconds = m_->warmup_seconds();
    s.load_bytes = ls.host_bytes;
    s.weight_bytes_per_token = m_->weight_bytes_per_token();
    s.kv_bytes_per_position = m_->kv_bytes_per_token(0);
    s.device_weight_bytes = ms.weights;
    s.device_kv_bytes = ms.kv_cache;
    s.device_bytes = ms.allocated;
    s.device_peak_bytes = ms.peak;
    return s;
  }

 private:
  std::unique_ptr<CudaLlama> m_;
};

}  // namespace

std::unique_ptr<StepModel> make_cuda_step_model(const Model& model, CudaLlamaOptions opt) {
  if (!model.weights) fail("make_cuda_step_model: the model has no weights");
  // The weights the CPU model bound (bind_llama_weights), else bound here by the same validator.
  auto m = model.llama ? std::make_unique<CudaLlama>(model.cfg, model.llama->weights(), opt)
                       : std::make_unique<CudaLlama>(model.cfg, *model.weights, opt);
  return std::make_unique<CudaStepModel>(std::move(m));
}

std::unique_ptr<StepModel> make_cuda_step_model(const LlamaConfig& config, uint64_t seed,
                                                CudaLlamaOptions opt) {
  return std::make_unique<CudaStepModel>(std::make_unique<CudaLlama>(config, seed, opt));
}

}  // namespace llamarun
