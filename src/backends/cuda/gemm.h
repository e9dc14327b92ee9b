// Prefill GEMM through cuBLASLt (fp16/bf16 operands, fp32 accumulation), and `linear`, which picks the
// decode GEMV for M <= 8 rows and cuBLASLt above. Needs CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <tuple>

#include "core/dtype.h"

namespace llamarun::cuda {

class LtGemm {
 public:
  // `workspace`: device memory of workspace_bytes the caller owns (32 MB is plenty).
  LtGemm(void* workspace, size_t workspace_bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // y[m, n] = sum_k x[m, k] * W[n, k]. W [N, K] row-major (act), x [M, K] (act), y [M, N] (fp32 if y_f32
  // else act). Any M >= 1. The algorithm for each shape is chosen once (cuBLASLt heuristic) and cached.
  void run(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
           cudaStream_t stream);

 private:
  struct Plan;
  Plan& plan_for(DType act, bool y_f32, int M, int N, int K);
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_;
  size_t workspace_bytes_;
  std::map<std::tuple<int, bool, int, int, int>, Plan*> plans_;
};

// y = x W^T: gemv (kernels.h) for M <= 8, else lt.run.
void linear(LtGemm& lt, DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
            cudaStream_t stream);

}  // namespace llamarun::cuda
