#include "backends/cuda/cuda_check.h"

#include "core/error.h"

namespace llamarun::cuda {

namespace {
const char* base_name(const char* path) {
  const char* b = path;
  for (const char* p = path; *p; ++p)
    if (*p == '/') b = p + 1;
  return b;
}
}  // namespace

void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  fail("CUDA error in ", call, " (", base_name(file), ":", line, "): ", cudaGetErrorName(err), ": ",
       cudaGetErrorString(err));
}

void check_cublas(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  fail("cuBLAS error in ", call, " (", base_name(file), ":", line, "): ", cublasGetStatusName(st), ": ",
       cublasGetStatusString(st));
}

void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  fail("CUDA error launching kernel ", kernel, " (", base_name(file), ":", line, "): ", cudaGetErrorName(err),
       ": ", cudaGetErrorString(err));
}

}  // namespace llamarun::cuda
