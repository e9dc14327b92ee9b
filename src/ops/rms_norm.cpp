#include "ops/rms_norm.h"

#include "backends/cpu/kernels.h"
#include "core/error.h"

namespace llamarun {

void rms_norm(const float* x, const WeightView& w, float eps, int64_t rows, int64_t D, float* out) {
  LLAMARUN_CHECK(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16,
                 "rms_norm: weight dtype ", dtype_name(w.dtype), " not supported (need f32, f16 or bf16)");
  LLAMARUN_CHECK(w.rows * w.cols == D && D > 0, "rms_norm: weight has ", w.rows, " x ", w.cols,
                 " values, expected D=", D);
  LLAMARUN_CHECK(rows >= 0, "rms_norm: negative row count ", rows);
  if (rows == 0) return;
  cpu::active_kernels().rms_norm(x, w.dtype, w.data, eps, rows, D, out);
}

}  // namespace llamarun
