// Prefill GEMM through cuBLASLt (fp16/bf16 operands, fp32 accumulation; FP8 E4M3 operands with per-row
// scales on GPUs with FP8 tensor cores), and `linear`, which picks the decode GEMV for M <= 8 rows and
// cuBLASLt above. Needs CUDA headers.
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

  // FP8 GEMM (needs fp8_supported(device), fp8.h):
  //   y[m, n] = xscale[m] * wscale[n] * sum_k e4m3(xq[m, k]) * e4m3(Wq[n, k]), accumulated in fp32,
  // for E4M3 codes with per-row scales as fp8_quantize_rows makes them: Wq [N, K] (a scale per output
  // channel), xq [M, K] (a scale per token), both row-major. y [M, N] row-major: fp32 if y_f32 else act
  // (F16 / BF16). Any M >= 1 (no padding: M is cuBLASLt's n, which has no alignment requirement);
  // N and K multiples of 16; Wq, xq, y, wscale, xscale and scratch 16-byte aligned. scratch: M * N floats
  // of device memory for the fallback below, required unless y_f32 (then y serves).
  // Preferred: cuBLASLt's outer-vector scale mode (the scales applied in the GEMM's epilogue). Where the
  // installed cuBLASLt rejects it for a shape (no algorithm, or the first matmul fails), that shape's plan
  // falls back for good to a unit-scale FP8 GEMM into fp32 (scratch, or y itself when y_f32) followed by
  // fp8_rescale into y. Plans are cached per shape as for run().
  void run_fp8(DType act, const void* Wq, const float* wscale, const void* xq, const float* xscale, void* y,
               bool y_f32, int M, int N, int K, cudaStream_t stream, float* scratch);
  // Test hook: always take the fallback path.
  void force_fp8_fallback(bool on) { force_fp8_fallback_ = on; }
  // Whether the last run_fp8 used the outer-vector scale mode (false: the fallback).
  bool fp8_outer_vec_used() const { return fp8_outer_vec_used_; }

 private:
  struct Plan;
  struct Fp8Plan;
  Plan& plan_for(DType act, bool y_f32, int M, int N, int K);
  Fp8Plan& fp8_plan_for(DType act, bool y_f32, int M, int N, int K, const float* wscale, const float* xscale);
  void fp8_build_fallback(Fp8Plan& p, int M, int N, int K);
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_;
  size_t workspace_bytes_;
  std::map<std::tuple<int, bool, int, int, int>, Plan*> plans_;
  std::map<std::tuple<int, bool, int, int, int>, Fp8Plan*> fp8_plans_;
  bool force_fp8_fallback_ = false;
  bool fp8_outer_vec_used_ = false;
};

// y = x W^T: gemv (kernels.h) for M <= 8, else lt.run.
void linear(LtGemm& lt, DType act, const void* W, const void* x, void* y, bool y_f32, int M, int N, int K,
            cudaStream_t stream);

}  // namespace llamarun::cuda
