#include "backends/cuda/gemm.h"

#include <cublasLt.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace llamarun::cuda {

struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

LtGemm::LtGemm(void* workspace, size_t workspace_bytes)
    : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  cublasLtHandle_t h = nullptr;
  LLAMARUN_CUBLAS_CHECK(cublasLtCreate(&h));
  handle_ = h;
}

LtGemm::~LtGemm() {
  for (auto& [_, p] : plans_) delete p;
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

LtGemm::Plan& LtGemm::plan_for(DType act, bool y_f32, int M, int N, int K) {
  auto key = std::make_tuple(int(act), y_f32, M, N, K);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  check_act_dtype(act, "LtGemm");
  cudaDataType_t t = act == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
  cudaDataType_t tc = y_f32 ? CUDA_R_32F : t;
  auto* p = new Plan;
  try {
    // Column-major view: C[N, M] = op(A)[N, K] * B[K, M] with A = W seen as [K, N] (ld K) transposed,
    // B = x seen as [K, M] (ld K), C = y seen as [N, M] (ld N): exactly row-major y = x W^T.
    LLAMARUN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    LLAMARUN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT)));
    LLAMARUN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)));
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, K, N, K));
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, K, M, K));
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, tc, N, M, N));
    cublasLtMatmulPreference_t pref = nullptr;
    LLAMARUN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = workspace_bytes_;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), p->desc, p->a,
                                                       p->b, p->c, p->c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    LLAMARUN_CUBLAS_CHECK(st);
    if (found == 0)
      fail("cuBLASLt has no algorithm for ", dtype_name(act), " GEMM M=", M, " N=", N, " K=", K,
           y_f32 ? " with f32 output" : "");
    p->algo = res.algo;
  } catch (...) {
    delete p;
    throw;
  }
  plans_[key] = p;
  return *p;
}

void LtGemm::run(DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
                 cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  Plan& p = plan_for(act, y_f32, M, N, K);
  float alpha = 1.f, beta = 0.f;
  LLAMARUN_CUBLAS_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.desc, &alpha, W, p.a, x, p.b,
                                       &beta, y, p.c, y, p.c, &p.algo, workspace_, workspace_bytes_, stream));
}

void linear(LtGemm& lt, DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
            cudaStream_t stream) {
  if (M <= 8)
    gemv(act, W, x, y, y_f32, M, N, K, stream);
  else
    lt.run(act, W, x, y, y_f32, M, N, K, stream);
}

}  // namespace llamarun::cuda
