#include "ops/matmul.h"

#include <cstring>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"

namespace llamarun {
namespace {

void check_weight(const WeightView& w, const char* op) {
  LLAMARUN_CHECK(w.rows >= 0 && w.cols >= 0, op, ": weight has negative shape ", w.rows, " x ", w.cols);
  const int bs = dtype_block_size(w.dtype);
  LLAMARUN_CHECK(w.cols % bs == 0, op, ": weight of dtype ", dtype_name(w.dtype), " has ", w.cols,
                 " columns, not a multiple of its block size ", bs);
  LLAMARUN_CHECK(w.data != nullptr || w.rows * w.cols == 0, op, ": weight ", w.rows, " x ", w.cols,
                 " has no data");
}

cpu::MatmulArgs make_args(const WeightView& w, const float* x, int64_t M, float* y) {
  cpu::MatmulArgs a;
  a.dtype = w.dtype;
  a.w = static_cast<const uint8_t*>(w.data);
  a.w_row_bytes = w.row_bytes();
  a.N = w.rows;
  a.K = w.cols;
  a.x = x;
  a.M = M;
  a.y = y;
  return a;
}

// Returns false when there is nothing to compute (after writing the trivial result).
bool prepare(const WeightView& w, const float* x, int64_t M, float* y, const char* op) {
  check_weight(w, op);
  LLAMARUN_CHECK(M >= 0, op, ": negative number of activation rows M=", M);
  if (M == 0 || w.rows == 0) return false;
  LLAMARUN_CHECK(x != nullptr && y != nullptr, op, ": null activation or output pointer");
  if (w.cols == 0) {
    std::memset(y, 0, size_t(M) * size_t(w.rows) * sizeof(float));
    return false;
  }
  return true;
}

// matmul with level k's kernels: the int8-activation path where qdot_uses_int8 says so, else k.matmul.
void matmul_with(const cpu::CpuKernels& k, const WeightView& w, const float* x, int64_t M, float* y,
                 const MatmulOptions& opt) {
  if (!prepare(w, x, M, y, "matmul")) return;
  cpu::MatmulArgs a = make_args(w, x, M, y);
  a.batch_invariant = opt.batch_invariant;
  if (const cpu::QDot q = k.qdot(w.dtype);
      cpu::qdot_uses_int8(w.dtype, M, opt.batch_invariant, opt.int8_activations, q.tile.prep != nullptr))
    return cpu::qmatmul(a, q);
  a.bf16_dot = k.has_bf16_dot && opt.bf16_activations && w.dtype == DType::BF16;
  k.matmul(a);
}

}  // namespace

void matmul(const WeightView& w, const float* x, int64_t M, float* y, const MatmulOptions& opt) {
  matmul_with(cpu::active_kernels(), w, x, M, y, opt);
}

void matmul(const WeightView& w, const float* x, int64_t M, float* y) { matmul(w, x, M, y, MatmulOptions{}); }

void matmul_at_level(cpu::SimdLevel level, const WeightView& w, const float* x, int64_t M, float* y,
                     const MatmulOptions& opt) {
  matmul_with(cpu::kernels_for(level), w, x, M, y, opt);
}

void matmul_ref(const WeightView& w, const float* x, int64_t M, float* y) {
  if (!prepare(w, x, M, y, "matmul_ref")) return;
  const int64_t N = w.rows, K = w.cols;
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    dequantize_row(w.dtype, w.row(n), row.data(), K);
    for (int64_t m = 0; m < M; ++m) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(row[size_t(k)]) * double(x[m * K + k]);
      y[m * N + n] = float(s);
    }
  }
}

void weight_row_f32(const WeightView& w, int64_t r, float* out) {
  check_weight(w, "weight_row_f32");
  LLAMARUN_CHECK(r >= 0 && r < w.rows, "weight_row_f32: row ", r, " out of range [0, ", w.rows, ")");
  dequantize_row(w.dtype, w.row(r), out, w.cols);
}

const char* simd_level_name() { return cpu::simd_level_str(cpu::active_simd_level()); }

}  // namespace llamarun
