#include "ops/rms_norm.h"

#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "core/fp16.h"
#include "ops/matmul.h"

namespace llamarun {

void rms_norm(const float* x, const WeightView& w, float eps, int64_t rows, int64_t D, float* out,
              bool emulate_bf16) {
  LLAMARUN_CHECK(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16,
                 "rms_norm: weight dtype ", dtype_name(w.dtype), " not supported (need f32, f16 or bf16)");
  LLAMARUN_CHECK(w.rows * w.cols == D && D > 0, "rms_norm: weight has ", w.rows, " x ", w.cols,
                 " values, expected D=", D);
  LLAMARUN_CHECK(rows >= 0, "rms_norm: negative row count ", rows);
  if (rows == 0) return;
  if (!emulate_bf16) return cpu::rms_norm_scalar(x, w.dtype, w.data, eps, rows, D, out);
  // bf16 emulation: rounded where a bf16 PyTorch model rounds. The weights as f32 (on the stack for every
  // hidden size a Llama uses).
  float wbuf[16384];
  std::vector<float> wheap;
  float* wp = wbuf;
  if (D > 16384) {
    wheap.resize(size_t(D));
    wp = wheap.data();
  }
  const WeightView row{w.dtype, 1, D, w.data};
  weight_row_f32(row, 0, wp);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    float* o = out + r * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(float(ss / double(D)) + eps);
    for (int64_t i = 0; i < D; ++i) {
      const float h = bf16_to_f32(f32_to_bf16(xr[i] * inv));
      o[i] = bf16_to_f32(f32_to_bf16(wp[i] * h));
    }
  }
}

}  // namespace llamarun
