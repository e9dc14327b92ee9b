// Error checking for CUDA runtime and cuBLAS calls: every failure becomes a llamarun::Error naming
// the call, the error name and the error string. Internal to the CUDA backend (needs CUDA headers).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

namespace llamarun::cuda {

// Throws Error "CUDA error in <call> (<file>:<line>): <name>: <string>" unless err == cudaSuccess.
void check_cuda(cudaError_t err, const char* call, const char* file, int line);
// Same for cuBLAS / cuBLASLt status codes.
void check_cublas(cublasStatus_t st, const char* call, const char* file, int line);
// After a kernel launch: reports launch-configuration errors (cudaGetLastError) naming the kernel.
void check_launch(const char* kernel, const char* file, int line);

}  // namespace llamarun::cuda

#define LLAMARUN_CUDA_CHECK(call) ::llamarun::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define LLAMARUN_CUBLAS_CHECK(call) ::llamarun::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define LLAMARUN_CUDA_LAUNCH_CHECK(name) ::llamarun::cuda::check_launch((name), __FILE__, __LINE__)
