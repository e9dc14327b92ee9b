// Integer dot products of quantised weight rows with int8-quantised activation rows (the path of the
// block formats whose weights are never converted to float: Q8_0, Q5_0, Q5_1, IQ4_NL, the k-quants,
// IQ4_XS). As in llama.cpp, the activations are quantised per block to int8 with one f32 scale:
//  - 32-value weight blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL): BlockQ8A32 (scale, sum of q, 32 q),
//  - 256-value super-blocks (Q2_K..Q6_K, IQ4_XS): BlockQ8_K (scale, 256 q, sums of each 16 q).
// Each block's integer dot (exact, int32) is scaled by the weight and activation scales and summed in
// f32. The activation quantisation is the same code at every SIMD level, so levels differ only in
// the order of the f32 sums.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace llamarun::cpu {

struct BlockQ8A32 {
  float d;      // x ~= d * q
  int32_t sum;  // sum of q
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8A32) == 40);

// Dot of one weight row (K values of its dtype) with one quantised activation row (K values).
using QDotFn = float (*)(int64_t K, const void* w, const void* act);
// The same for kQDotRows activation rows at once (row m at act + m * astride bytes, its result at
// out[m * ostride]), each result bit-identical to QDotFn's for that row.
constexpr int kQDotRows = 4;
using QDotMultiFn = void (*)(int64_t K, const void* w, const void* act, size_t astride, float* out,
                             size_t ostride);
// The prefill micro-kernel: n weight rows (row r at w + r * wstride bytes) against m activation rows
// (row i at act + i * astride), result (i, r) at out[i * ostride + r]; n and m are the tile's (QTile).
// Each decoded weight block serves m activation rows and each activation block n weight rows.
using QTileFn = void (*)(int64_t K, const void* w, size_t wstride, const void* act, size_t astride,
                         float* out, size_t ostride);
// Packs m activation rows (row i at act + i * astride) into the layout a tile reads (QTile::pack).
using QPackFn = void (*)(int64_t K, const void* act, size_t astride, void* packed);
// Decodes n weight rows (row r at w + r * wstride bytes) into the layout a tile reads (QTile::prep).
using QPrepFn = void (*)(int64_t K, const void* w, size_t wstride, void* prepped);
struct QTile {
  QTileFn fn = nullptr;
  // Where non-null, fn reads its m activation rows as one group packed by pack (packed_bytes(K) bytes)
  // instead of m rows of the QDotFn format (act, astride unused).
  QPackFn pack = nullptr;
  size_t (*packed_bytes)(int64_t K) = nullptr;
  int n = 0, m = 0;  // weight rows, activation rows (a multiple of kQDotRows)
  // Each result bit-identical to QDotFn's for that pair (the same int32 lane sums and f32 operations),
  // so matmul may use the tile under MatmulArgs::batch_invariant; otherwise the tile sums in its own
  // f32 order (as accurate; matmul uses it only where results may depend on the batch).
  bool exact = false;
  // Where non-null, qmatmul decodes each tile's n weight rows once with prep (prep_bytes(K) bytes, the
  // block values, their sums and scales) and fn reads that instead of the blocks (w; wstride unused) for
  // every group of activation rows, so the decoding is paid once per weight row instead of M / m times.
  QPrepFn prep = nullptr;
  size_t (*prep_bytes)(int64_t K) = nullptr;
};
struct QDot {
  QDotFn one = nullptr;
  QDotMultiFn rows = nullptr;  // may be null: one() per row
  QTile tile;                  // fn may be null; needs rows
  // Where fn is set, a tile that sums in its own order (not exact), faster than tile: qmatmul takes it
  // instead of tile where results may depend on the batch (MatmulArgs::batch_invariant false).
  QTile free_tile;
};

// Whether matmul takes the int8-activation path for weight dtype w with M activation rows (else the
// f32-activation kernels): always for the types that have no other path; for Q8_0/Q4_0/Q4_1 only where
// allowed (MatmulOptions::int8_activations) and faster than the f32 blocked GEMM (M <= 8, batch-invariant,
// or prep_tile: the level's tile for w decodes each weight row once, QTile::prep).
bool qdot_uses_int8(DType w, int64_t M, bool batch_invariant, bool allow_int8, bool prep_tile);
// The activation format a weight dtype's dot takes: Q8_K for the super-block types, else the
// 32-block format (DType::Q8_0 names it here).
DType qdot_act_type(DType w);
// Bytes of one quantised activation row of K values for weight dtype w.
size_t qdot_act_row_bytes(DType w, int64_t K);
// x[0..K) -> one activation row in qdot_act_type(w)'s format: per block, d = max|x| / 127 and
// q = round-to-nearest-even(x / d) (all zero when max|x| = 0).
void quantize_act_row(DType w, const float* x, void* act, int64_t K);

// Per-level dot tables (every block type but Q8_K).
QDot qdot_scalar(DType w);
QDot qdot_avx2(DType w);
QDot qdot_avx512(DType w);
// The AVX-512 VNNI tile kernels (qgemm_avx512.cpp); fn null for types without one. Exact (see QTile)
// for the k-quants and IQ4_XS; the 32-value block types sum in their own order.
QTile qtile_avx512(DType w);
// The AVX-512 VNNI free-order tiles of IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K (QDot::free_tile): their sub-blocks
// through the 32-value block types' tile (Q6_K's / Q3_K's 16-value halves with a scale each; qdot_avx2 sets
// the AVX2 ones).
QTile free_tile_avx512(DType w);

// y = W x over quantised activations: quantises the M rows of x once, then y[m, n] = dot(W[n], xq[m])
// (the level's tiles for groups of rows). Every output depends only on its own weight row and activation
// row (batch invariant), except through an inexact tile (QTile::exact false), which runs only when
// a.batch_invariant is false.
struct MatmulArgs;
void qmatmul(const MatmulArgs& a, QDot dot);

}  // namespace llamarun::cpu
