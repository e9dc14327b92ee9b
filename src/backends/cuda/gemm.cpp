#include "backends/cuda/gemm.h"

#include <cublasLt.h>

#include <cstdint>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fp8.h"
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

struct LtGemm::Fp8Plan {
  cublasLtMatrixLayout_t a = nullptr, b = nullptr;  // E4M3 W [K, N] (ld K, transposed), x [K, M] (ld K)
  // Outer-vector scales, D = y (act or fp32).
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool outer_ok = false;   // cuBLASLt offered an algorithm and has not rejected it
  bool outer_ran = false;  // a matmul went through: a later failure is an error, not a reason to fall back
  // Fallback: unit scales, D fp32 [N, M] (ld N), then fp8_rescale. Built on first use.
  cublasLtMatmulDesc_t unit_desc = nullptr;
  cublasLtMatrixLayout_t c32 = nullptr;
  cublasLtMatmulAlgo_t unit_algo{};
  bool unit_ready = false;
  ~Fp8Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (c32) cublasLtMatrixLayoutDestroy(c32);
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (unit_desc) cublasLtMatmulDescDestroy(unit_desc);
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
  for (auto& [_, p] : fp8_plans_) delete p;
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

// ---- FP8 ----
// cuBLASLt's FP8 requirements (cublasLtMatmul, "FP8 kernels"): pointers and matrix dimensions must meet
// the Tensor Core alignment rules (16-byte aligned pointers, leading dimensions of 16 bytes' multiples:
// here K for both operands, N for the output); "TN" only on Ada / Hopper (A transposed, B not): exactly
// the column-major view of run() (A = W seen as [K, N] with ld K, transposed; B = x as [K, M] with ld K;
// D = y as [N, M] with ld N); compute type CUBLAS_COMPUTE_32F and scale type CUDA_R_32F; outputs
// BF16 / F16 / F32 for E4M3 x E4M3. cuBLASLt's n (our M, the token count) carries no alignment rule (x's
// rows are K codes apart, a multiple of 16 bytes), so odd decode batches run unpadded. The outer-vector
// scale mode takes a vector of cuBLASLt's m elements for A (its rows of D: our N, the weight scales) and
// of n elements for B (D's columns: our M, the token scales), element (i, j) of A B being multiplied by
// a_scale[i] * b_scale[j]. FP8 fast accumulation stays off (cuBLASLt promotes the tensor cores' partial
// sums to fp32 periodically).

namespace {

cublasLtMatmulDesc_t make_tn_desc() {
  cublasLtMatmulDesc_t d = nullptr;
  LLAMARUN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  cublasStatus_t st = cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN));
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulDescDestroy(d);
    LLAMARUN_CUBLAS_CHECK(st);
  }
  return d;
}

// The heuristic's first algorithm for D = op(A) B (C = D) within `ws` bytes of workspace, among those that
// work with 16-byte aligned operands (the default assumes 256). False when cuBLASLt has none or rejects
// the configuration (e.g. a scale mode it does not support on this GPU).
bool fp8_heuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, size_t ws,
                   cublasLtMatmulAlgo_t* algo) {
  cublasLtMatmulPreference_t pref = nullptr;
  LLAMARUN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const uint32_t align = 16;
  for (cublasLtMatmulPreferenceAttributes_t attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, c, c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0 || res.state != CUBLAS_STATUS_SUCCESS) return false;
  *algo = res.algo;
  return true;
}

bool set_scales(cublasLtMatmulDesc_t d, const float* wscale, const float* xscale) {
  return cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &wscale, sizeof(wscale)) ==
             CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xscale, sizeof(xscale)) ==
             CUBLAS_STATUS_SUCCESS;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

LtGemm::Fp8Plan& LtGemm::fp8_plan_for(DType act, bool y_f32, int M, int N, int K, const float* wscale,
                                      const float* xscale) {
  auto key = std::make_tuple(int(act), y_f32, M, N, K);
  auto it = fp8_plans_.find(key);
  if (it != fp8_plans_.end()) return *it->second;
  cudaDataType_t tc = y_f32 ? CUDA_R_32F : act == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
  auto* p = new Fp8Plan;
  try {
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, K, N, K));
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, K, M, K));
    LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, tc, N, M, N));
    p->desc = make_tn_desc();
    // A's vector (cuBLASLt's m = N elements) holds the weight scales, B's (n = M) the token scales. The
    // scale pointers are set before the heuristic query (as for a real call) and again at every call.
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    bool ok = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                             sizeof(mode)) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                             sizeof(mode)) == CUBLAS_STATUS_SUCCESS &&
              set_scales(p->desc, wscale, xscale);
    p->outer_ok = ok && fp8_heuristic(static_cast<cublasLtHandle_t>(handle_), p->desc, p->a, p->b, p->c,
                                      workspace_bytes_, &p->algo);
  } catch (...) {
    delete p;
    throw;
  }
  fp8_plans_[key] = p;
  return *p;
}

void LtGemm::fp8_build_fallback(Fp8Plan& p, int M, int N, int K) {
  if (p.unit_ready) return;
  if (!p.unit_desc) p.unit_desc = make_tn_desc();  // no scale attributes: unit scales
  if (!p.c32) LLAMARUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c32, CUDA_R_32F, N, M, N));
  if (!fp8_heuristic(static_cast<cublasLtHandle_t>(handle_), p.unit_desc, p.a, p.b, p.c32, workspace_bytes_,
                     &p.unit_algo))
    fail("cuBLASLt has no algorithm for the FP8 GEMM M=", M, " N=", N, " K=", K,
         " (E4M3 operands, fp32 output; needs a GPU of compute capability 8.9 or newer)");
  p.unit_ready = true;
}

void LtGemm::run_fp8(DType act, const void* Wq, const float* wscale, const void* xq, const float* xscale,
                     void* y, bool y_f32, int M, int N, int K, cudaStream_t stream, float* scratch) {
  check_act_dtype(act, "LtGemm::run_fp8");
  if (M < 0 || N <= 0 || K <= 0) fail("LtGemm::run_fp8: bad shape M=", M, " N=", N, " K=", K);
  if (K % 16 != 0) fail("LtGemm::run_fp8: K = ", K, " must be a multiple of 16 (cuBLASLt FP8 alignment)");
  if (N % 16 != 0) fail("LtGemm::run_fp8: N = ", N, " must be a multiple of 16 (cuBLASLt FP8 alignment)");
  if (!y_f32 && !scratch)
    fail("LtGemm::run_fp8: an f16/bf16 output needs scratch of M * N floats (the fallback's accumulator)");
  if (!aligned16(Wq) || !aligned16(xq) || !aligned16(y) || !aligned16(wscale) || !aligned16(xscale) ||
      !aligned16(scratch))
    fail("LtGemm::run_fp8: Wq, xq, y, the scales and scratch must be 16-byte aligned");
  if (!wscale || !xscale) fail("LtGemm::run_fp8: missing scales");
  if (M == 0) return;
  Fp8Plan& p = fp8_plan_for(act, y_f32, M, N, K, wscale, xscale);
  auto h = static_cast<cublasLtHandle_t>(handle_);
  float alpha = 1.f, beta = 0.f;
  if (!force_fp8_fallback_ && p.outer_ok) {
    if (!set_scales(p.desc, wscale, xscale)) fail("LtGemm::run_fp8: cuBLASLt rejected the scale pointers");
    cublasStatus_t st = cublasLtMatmul(h, p.desc, &alpha, Wq, p.a, xq, p.b, &beta, y, p.c, y, p.c, &p.algo,
                                       workspace_, workspace_bytes_, stream);
    if (st == CUBLAS_STATUS_SUCCESS) {
      p.outer_ran = true;
      fp8_outer_vec_used_ = true;
      return;
    }
    if (p.outer_ran) LLAMARUN_CUBLAS_CHECK(st);
    p.outer_ok = false;  // rejected at its first call: this shape takes the fallback from now on
  }
  fp8_build_fallback(p, M, N, K);
  // fp32 accumulator: y itself for an fp32 output (rescaled in place), else scratch.
  float* acc = y_f32 ? static_cast<float*>(y) : scratch;
  LLAMARUN_CUBLAS_CHECK(cublasLtMatmul(h, p.unit_desc, &alpha, Wq, p.a, xq, p.b, &beta, acc, p.c32, acc,
                                       p.c32, &p.unit_algo, workspace_, workspace_bytes_, stream));
  fp8_rescale(act, acc, xscale, wscale, y, y_f32, M, N, stream);
  fp8_outer_vec_used_ = false;
}

void linear(LtGemm& lt, DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
            cudaStream_t stream) {
  if (M <= 8)
    gemv(act, W, x, y, y_f32, M, N, K, stream);
  else
    lt.run(act, W, x, y, y_f32, M, N, K, stream);
}

}  // namespace llamarun::cuda
