// Parity tests of the paged-KV serving kernels (paged_attention.cu): rope_store_kv_paged,
// paged_attention (varlen batches over shuffled block tables, against a CPU reference and against the
// contiguous-cache decode / prefill attention kernels), gather_rows and argmax_rows.
#include <cuda_fp8.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "backends/cuda/kernels.h"
#include "backends/cuda/rope_freq.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace llamarun::cuda::test {
namespace {

class CudaPaged : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { LLAMARUN_REQUIRE_GPU(); }
  DType t() const { return GetParam(); }
  std::mt19937 gen{4321};
};

constexpr uint16_t kNaNBits = 0x7fff;  // NaN in both fp16 and bf16
constexpr uint8_t kNaNE4M3 = 0xff;     // NaN in E4M3 (and the poison byte)

// E4M3 by cuda_fp8.h's host conversions (round to nearest even, saturated): the FP8 KV cache's reference.
uint8_t to_e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
float from_e4m3(uint8_t b) { return float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3))); }

// Block tables for sequences of the given context lengths over a pool of shuffled blocks. The pool has
// `spare` extra blocks that no sequence owns; table entries past a sequence's last block point at one of
// them (the kernels must never read them: they hold NaN).
struct PagedLayout {
  int nkv = 0, hd = 0, bs = 0, num_blocks = 0, max_blocks = 0;
  std::vector<int32_t> tables;  // [nseq, max_blocks]
  size_t elems() const { return size_t(num_blocks) * nkv * bs * hd; }
  // Element index of (sequence s, kv head kh, position p, dim 0) in the pool.
  size_t index(int s, int kh, int p) const {
    const int blk = tables[size_t(s) * max_blocks + p / bs];
    return ((size_t(blk) * nkv + kh) * bs + p % bs) * hd;
  }
};

PagedLayout make_layout(std::mt19937& g, const std::vector<int>& ctx, int nkv, int hd, int bs,
                        int spare = 3) {
  PagedLayout L;
  L.nkv = nkv;
  L.hd = hd;
  L.bs = bs;
  int used = 0;
  for (int c : ctx) {
    const int nb = (c + bs - 1) / bs;
    used += nb;
    L.max_blocks = std::max(L.max_blocks, nb + 1);
  }
  L.num_blocks = used + spare;
  std::vector<int32_t> perm(L.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g);
  L.tables.assign(ctx.size() * L.max_blocks, perm[used]);  // unused entries: a spare (NaN) block
  int next = 0;
  for (size_t s = 0; s < ctx.size(); ++s)
    for (int b = 0; b < (ctx[s] + bs - 1) / bs; ++b) L.tables[s * L.max_blocks + b] = perm[next++];
  return L;
}

// The inputs of the rope_store_kv_paged tests, uploaded: 5 rows (row 2 is padding, slot -1: its q is still
// written, nothing goes to the pools) of 4 query and 2 kv heads of hd values, uniform in [lo, hi] and rounded
// to t, over a pool of 7 blocks of bs positions; dq (the rotated queries) poisoned.
struct RopeStoreInputs {
  static constexpr int nh = 4, nkv = 2, rows = nh + 2 * nkv, num_blocks = 7, M = 5;
  int hd, bs;
  std::vector<float> inv;
  std::vector<int32_t> pos = {0, 37, 5, 1234, 4}, slot;
  std::vector<float> qkv;
  DevBuf dqkv, dpos{M * 4}, dslot{M * 4}, dinv, dq;
  RopeStoreInputs(DType t, std::mt19937& gen, int hd_, int bs_, float lo, float hi)
      : hd(hd_),
        bs(bs_),
        inv(rope_inv_freq(hd, 10000.f, RopeScaling{})),
        slot{3 * bs, 6 * bs + bs - 1, -1, 1 * bs + 2 % bs, 0},
        qkv(rand_vec(gen, size_t(M) * rows * hd, lo, hi)),
        dqkv(qkv.size() * 2),
        dinv(inv.size() * 4),
        dq(size_t(M) * nh * hd * 2) {
    const auto qb = quantize16(t, qkv);
    dqkv.upload(qb.data(), qb.size() * 2);
    dpos.upload(pos.data(), M * 4);
    dslot.upload(slot.data(), M * 4);
    dinv.upload(inv.data(), inv.size() * 4);
    dq.poison();
  }
  size_t pool_n() const { return size_t(num_blocks) * nkv * bs * hd; }
  void run(DType t, RopeLayout lay, void* k_pool, void* v_pool, bool kv_fp8 = false) const {
    rope_store_kv_paged(t, lay, dqkv.p, dpos.as<int32_t>(), dslot.as<int32_t>(), dinv.as<float>(), M, nh, nkv,
                        hd, bs, dq.p, k_pool, v_pool, nullptr, false, kv_fp8);
  }
};

TEST_P(CudaPaged, RopeStoreKvPaged) {
  for (RopeLayout lay : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    for (int hd : {16, 32, 64, 128}) {
      for (int bs : {16, 5}) {
        const RopeStoreInputs in(t(), gen, hd, bs, -1.f, 1.f);
        const int nh = in.nh, nkv = in.nkv, rows = in.rows, M = in.M;
        const auto &inv = in.inv, &qkv = in.qkv;
        const auto &pos = in.pos, &slot = in.slot;
        const size_t pool_n = in.pool_n();
        DevBuf dk(pool_n * 2), dv(pool_n * 2);
        dk.poison();
        dv.poison();
        in.run(t(), lay, dk.p, dv.p);
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> ref = qkv;
        for (int m = 0; m < M; ++m)
          for (int h = 0; h < nh + nkv; ++h) rope_ref(ref, (size_t(m) * rows + h) * hd, hd, pos[m], inv, lay);
        auto gq = download16(t(), in.dq, size_t(M) * nh * hd);
        auto gk = download16(t(), dk, pool_n), gv = download16(t(), dv, pool_n);
        std::vector<float> rq, ok, rk, ov, rv;
        size_t written = 0;
        for (int m = 0; m < M; ++m) {
          for (int i = 0; i < nh * hd; ++i) rq.push_back(ref[size_t(m) * rows * hd + i]);
          if (slot[m] < 0) continue;
          for (int kh = 0; kh < nkv; ++kh) {
            const size_t at = ((size_t(slot[m] / bs) * nkv + kh) * bs + slot[m] % bs) * hd;
            for (int i = 0; i < hd; ++i) {
              ok.push_back(gk[at + i]);
              ov.push_back(gv[at + i]);
              rk.push_back(ref[(size_t(m) * rows + nh + kh) * hd + i]);
              rv.push_back(ref[(size_t(m) * rows + nh + nkv + kh) * hd + i]);
            }
            written += hd;
          }
        }
        const std::string what = std::string(dname(t())) + " hd=" + std::to_string(hd) +
                                 " bs=" + std::to_string(bs) +
                                 " interleaved=" + std::to_string(lay == RopeLayout::kInterleaved);
        EXPECT_LT(rel_l2(gq, rq), tol_rel(t())) << "q " << what;
        EXPECT_LT(rel_l2(ok, rk), tol_rel(t())) << "k " << what;
        EXPECT_EQ(rel_l2(ov, rv), 0.0) << "v copied exactly " << what;
        // Nothing else in the pools was touched (still NaN poison): the padding row stored nothing.
        size_t finite_k = 0, finite_v = 0;
        for (size_t i = 0; i < pool_n; ++i) {
          finite_k += !std::isnan(gk[i]);
          finite_v += !std::isnan(gv[i]);
        }
        EXPECT_EQ(finite_k, written) << what;
        EXPECT_EQ(finite_v, written) << what;
      }
    }
  }
}

// A varlen batch: sequences with contexts `ctx`, each with a random set of K / V; the rows (decode
// rows and prefill chunks) listed as (sequence, position). Uploads everything, runs paged_attention and
// checks each row against the CPU.
struct Row {
  int seq, pos;
};

// f8: the pool holds E4M3 bytes (kv_fp8), and the reference attends over their values.
void run_varlen_case(DType t, std::mt19937& gen, int nh, int nkv, int hd, int bs, const std::vector<int>& ctx,
                     const std::vector<Row>& rows, float qrange, bool f8 = false) {
  const std::string what = std::string(dname(t)) + " nh=" + std::to_string(nh) +
                           " nkv=" + std::to_string(nkv) + " hd=" + std::to_string(hd) +
                           " bs=" + std::to_string(bs) + (f8 ? " kv fp8" : "");
  const int nseq = int(ctx.size()), M = int(rows.size()), G = nh / nkv;
  const float scale = 1.f / std::sqrt(float(hd));
  PagedLayout L = make_layout(gen, ctx, nkv, hd, bs);
  std::vector<uint16_t> kpool(L.elems(), kNaNBits), vpool(L.elems(), kNaNBits);
  std::vector<uint8_t> kpool8(f8 ? L.elems() : 0, kNaNE4M3), vpool8(f8 ? L.elems() : 0, kNaNE4M3);
  std::vector<std::vector<float>> kc(nseq), vc(nseq);
  for (int s = 0; s < nseq; ++s) {
    kc[s] = rand_vec(gen, size_t(nkv) * ctx[s] * hd, -2, 2);
    vc[s] = rand_vec(gen, size_t(nkv) * ctx[s] * hd);
    auto kb = quantize16(t, kc[s]), vb = quantize16(t, vc[s]);
    for (int kh = 0; kh < nkv; ++kh)
      for (int p = 0; p < ctx[s]; ++p) {
        const size_t src = (size_t(kh) * ctx[s] + p) * hd, dst = L.index(s, kh, p);
        std::copy(kb.begin() + src, kb.begin() + src + hd, kpool.begin() + dst);
        std::copy(vb.begin() + src, vb.begin() + src + hd, vpool.begin() + dst);
        if (!f8) continue;
        for (int i = 0; i < hd; ++i) {
          kpool8[dst + i] = to_e4m3(kc[s][src + i]);
          vpool8[dst + i] = to_e4m3(vc[s][src + i]);
          kc[s][src + i] = from_e4m3(kpool8[dst + i]);
          vc[s][src + i] = from_e4m3(vpool8[dst + i]);
        }
      }
  }
  auto q = rand_vec(gen, size_t(M) * nh * hd, -qrange, qrange);
  auto qb = quantize16(t, q);
  std::vector<int32_t> seq(M), pos(M);
  for (int m = 0; m < M; ++m) {
    seq[m] = rows[m].seq;
    pos[m] = rows[m].pos;
  }
  const size_t esz = f8 ? 1 : 2;
  DevBuf dk(L.elems() * esz), dv(L.elems() * esz), dq(qb.size() * 2), dout(qb.size() * 2),
      dtab(L.tables.size() * 4), dseq(M * 4), dpos(M * 4);
  dk.upload(f8 ? static_cast<const void*>(kpool8.data()) : kpool.data(), L.elems() * esz);
  dv.upload(f8 ? static_cast<const void*>(vpool8.data()) : vpool.data(), L.elems() * esz);
  dq.upload(qb.data(), qb.size() * 2);
  dtab.upload(L.tables.data(), L.tables.size() * 4);
  dseq.upload(seq.data(), M * 4);
  dpos.upload(pos.data(), M * 4);
  dout.poison();
  paged_attention(t, dq.p, dk.p, dv.p, dtab.as<int32_t>(), L.max_blocks, dseq.as<int32_t>(),
                  dpos.as<int32_t>(), M, nh, nkv, hd, bs, scale, dout.p, nullptr, f8);
  CUDA_OK(cudaDeviceSynchronize());
  auto out = download16(t, dout, qb.size());
  for (int m = 0; m < M; ++m) {
    const size_t row = size_t(m) * nh * hd;
    std::vector<float> got(out.begin() + row, out.begin() + row + size_t(nh) * hd), ref(got.size(), 0.f);
    if (pos[m] < 0) {
      for (float v : got) ASSERT_EQ(v, 0.f) << "padding row " << m << " " << what;
      continue;
    }
    for (int h = 0; h < nh; ++h)
      attend_ref(&q[row + size_t(h) * hd], kc[seq[m]], vc[seq[m]], h / G, ctx[seq[m]], hd, pos[m] + 1, scale,
                 &ref[size_t(h) * hd]);
    EXPECT_LT(rel_l2(got, ref), tol_rel(t))
        << "row " << m << " (seq " << seq[m] << ", pos " << pos[m] << ") " << what;
  }
}

TEST_P(CudaPaged, PagedAttentionVarlenBatch) {
  struct Heads {
    int nh, nkv;
  };
  // Contexts: 1 position; ends one past a page of 16; long; a prefill chunk's sequence; exactly 4 pages of
  // 16; ends mid-page for most sizes.
  const std::vector<int> ctx = {1, 17, 300, 75, 64, 203};
  std::vector<Row> rows = {{0, 0}, {1, 16}, {2, 299}, {4, 63}, {5, 202}, {0, -1}};
  for (int p = 60; p < 75; ++p) rows.push_back({3, p});  // a prefill chunk (15 rows) of sequence 3
  for (int p = 0; p < 5; ++p) rows.push_back({5, p});    // the first rows of a prompt
  rows.push_back({2, 150});                              // a row mid-context
  std::shuffle(rows.begin(), rows.end(), gen);
  for (int hd : {16, 32, 64, 128})
    for (Heads h : {Heads{4, 4}, Heads{8, 2}, Heads{8, 1}, Heads{6, 2}})
      for (int bs : {16, 5, 32, 1}) run_varlen_case(t(), gen, h.nh, h.nkv, hd, bs, ctx, rows, 1.f);
  // Peaked softmax (large scores): exercises the running-max rescaling.
  run_varlen_case(t(), gen, 8, 2, 128, 16, ctx, rows, 6.f);
  // A long context whose pages span several tiles per warp, one large page size.
  run_varlen_case(t(), gen, 4, 4, 128, 256, {1000, 3}, {{0, 999}, {1, 2}, {0, 511}}, 1.f);
}

// The same over E4M3 pools (kv_fp8): the kernel's result against attention over the pool's values (groups
// of 1 and 2 query heads take the 16-values-a-lane kernel at head sizes >= 32, larger groups the 8-value
// one).
TEST_P(CudaPaged, PagedAttentionVarlenBatchFp8Kv) {
  const std::vector<int> ctx = {1, 17, 300, 75, 64, 203};
  std::vector<Row> rows = {{0, 0}, {1, 16}, {2, 299}, {4, 63}, {5, 202}, {0, -1}};
  for (int p = 60; p < 75; ++p) rows.push_back({3, p});
  std::shuffle(rows.begin(), rows.end(), gen);
  for (int hd : {16, 32, 64, 128})
    for (int bs : {16, 5}) {
      run_varlen_case(t(), gen, 8, 2, hd, bs, ctx, rows, 1.f, true);
      run_varlen_case(t(), gen, 8, 4, hd, bs, ctx, rows, 1.f, true);
      run_varlen_case(t(), gen, 4, 4, hd, bs, ctx, rows, 1.f, true);
    }
  run_varlen_case(t(), gen, 32, 8, 128, 16, ctx, rows, 6.f, true);
  run_varlen_case(t(), gen, 32, 32, 128, 16, ctx, rows, 6.f, true);
  run_varlen_case(t(), gen, 4, 4, 128, 256, {1000, 3}, {{0, 999}, {1, 2}, {0, 511}}, 1.f, true);
}

// rope_store_kv_paged into E4M3 pools: each value stored is cuda_fp8.h's rounding of what the fp16 / bf16
// pools get (the values, V exactly; the rotated K from fp32, where the fp16 / bf16 pool rounded once before:
// a few percent of keys round the other way, by one step, H100: up to 27 of 1,024 for bf16); untouched
// bytes keep their poison.
TEST_P(CudaPaged, RopeStoreKvPagedFp8) {
  for (int hd : {32, 128}) {
    for (int bs : {16, 5}) {
      const RopeStoreInputs in(t(), gen, hd, bs, -3.f, 3.f);
      const int nkv = in.nkv;
      const size_t pool_n = in.pool_n();
      DevBuf dk(pool_n * 2), dv(pool_n * 2), dk8(pool_n), dv8(pool_n);
      for (DevBuf* b : {&dk, &dv, &dk8, &dv8}) b->poison();
      for (bool f8 : {false, true}) in.run(t(), RopeLayout::kHalf, f8 ? dk8.p : dk.p, f8 ? dv8.p : dv.p, f8);
      CUDA_OK(cudaDeviceSynchronize());
      auto gk = download16(t(), dk, pool_n), gv = download16(t(), dv, pool_n);
      std::vector<uint8_t> k8(pool_n), v8(pool_n);
      dk8.download(k8.data(), pool_n);
      dv8.download(v8.data(), pool_n);
      size_t stored = 0, k_off = 0, k_far = 0;
      std::vector<float> kf, kref;
      for (size_t i = 0; i < pool_n; ++i) {
        if (std::isnan(gk[i])) {  // not written: poison in both
          ASSERT_EQ(k8[i], kNaNE4M3) << i;
          ASSERT_EQ(v8[i], kNaNE4M3) << i;
          continue;
        }
        ++stored;
        ASSERT_EQ(v8[i], to_e4m3(gv[i])) << "value " << i;
        const float want = from_e4m3(to_e4m3(gk[i])), got = from_e4m3(k8[i]);
        if (got != want) {
          ++k_off;
          // One E4M3 step at most: 1/8 of the value's power of two (subnormals 2^-9).
          k_far += std::fabs(got - want) > std::max(std::fabs(want) / 8.f, 1.f / 512.f) * 1.01f;
        }
        kf.push_back(got);
        kref.push_back(gk[i]);
      }
      const std::string what =
          std::string(dname(t())) + " hd=" + std::to_string(hd) + " bs=" + std::to_string(bs);
      EXPECT_EQ(stored, size_t(4) * nkv * hd) << what;  // 4 rows with a slot
      EXPECT_LE(k_off, stored / 20) << what;            // bf16 (8 significant bits) ties more often than fp16
      EXPECT_EQ(k_far, 0u) << what;
      EXPECT_LT(rel_l2(kf, kref), 0.04) << "E4M3 keys against the fp16 / bf16 ones " << what;
    }
  }
}

// paged_attention equals the split-K decode_attention (the batch-1 fast path's, on the same pool) and the
// contiguous-cache prefill_attention (the tensor-core path's, on the same K / V laid out contiguously).
TEST_P(CudaPaged, PagedAttentionMatchesContiguousKernels) {
  const int nh = 8, nkv = 2, hd = 128, max_ctx = 600, bs = 16;
  const float scale = 1.f / std::sqrt(float(hd));
  const size_t cache_n = size_t(nkv) * max_ctx * hd;
  auto kc = rand_vec(gen, cache_n, -2, 2), vc = rand_vec(gen, cache_n);
  auto kb = quantize16(t(), kc), vb = quantize16(t(), vc);
  PagedLayout L = make_layout(gen, {max_ctx}, nkv, hd, bs);
  std::vector<uint16_t> kpool(L.elems(), kNaNBits), vpool(L.elems(), kNaNBits);
  for (int kh = 0; kh < nkv; ++kh)
    for (int p = 0; p < max_ctx; ++p) {
      const size_t src = (size_t(kh) * max_ctx + p) * hd, dst = L.index(0, kh, p);
      std::copy(kb.begin() + src, kb.begin() + src + hd, kpool.begin() + dst);
      std::copy(vb.begin() + src, vb.begin() + src + hd, vpool.begin() + dst);
    }
  DevBuf dk(cache_n * 2), dv(cache_n * 2), pk(kpool.size() * 2), pv(vpool.size() * 2),
      dtab(L.tables.size() * 4);
  dk.upload(kb.data(), cache_n * 2);
  dv.upload(vb.data(), cache_n * 2);
  pk.upload(kpool.data(), kpool.size() * 2);
  pv.upload(vpool.data(), vpool.size() * 2);
  dtab.upload(L.tables.data(), L.tables.size() * 4);

  // Decode: one row at position len - 1.
  DecodeAttnPlan plan = make_decode_attn_plan(nkv, max_ctx, 132);
  DevBuf po(decode_attn_partial_floats(plan, nh, hd) * 4), ps(decode_attn_stats_floats(plan, nh) * 4);
  for (int len : {1, 16, 17, 250, 600}) {
    auto q = rand_vec(gen, size_t(nh) * hd);
    auto qb = quantize16(t(), q);
    int32_t p = len - 1, s0 = 0;
    DevBuf dq(qb.size() * 2), dpos(4), dseq(4), o1(qb.size() * 2), o2(qb.size() * 2);
    dq.upload(qb.data(), qb.size() * 2);
    dpos.upload(&p, 4);
    dseq.upload(&s0, 4);
    o1.poison();
    o2.poison();
    decode_attention(t(), dq.p, pk.p, pv.p, dtab.as<int32_t>(), bs, dpos.as<int32_t>(), nh, nkv, hd, max_ctx,
                     scale, plan, po.as<float>(), ps.as<float>(), o1.p, nullptr);
    paged_attention(t(), dq.p, pk.p, pv.p, dtab.as<int32_t>(), L.max_blocks, dseq.as<int32_t>(),
                    dpos.as<int32_t>(), 1, nh, nkv, hd, bs, scale, o2.p, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_LT(rel_l2(download16(t(), o2, qb.size()), download16(t(), o1, qb.size())), 2 * tol_rel(t()))
        << "decode len=" << len << " " << dname(t());
  }

  // Prefill: M rows at positions start .. start + M - 1.
  for (int start : {0, 77}) {
    for (int M : {1, 40, 200}) {
      auto q = rand_vec(gen, size_t(M) * nh * hd);
      auto qb = quantize16(t(), q);
      std::vector<int32_t> seq(M, 0), pos(M);
      for (int m = 0; m < M; ++m) pos[m] = start + m;
      DevBuf dq(qb.size() * 2), dpos(M * 4), dseq(M * 4), o1(qb.size() * 2), o2(qb.size() * 2);
      dq.upload(qb.data(), qb.size() * 2);
      dpos.upload(pos.data(), M * 4);
      dseq.upload(seq.data(), M * 4);
      o1.poison();
      o2.poison();
      prefill_attention(t(), dq.p, dk.p, dv.p, M, start, nh, nkv, hd, max_ctx, scale, o1.p, nullptr);
      paged_attention(t(), dq.p, pk.p, pv.p, dtab.as<int32_t>(), L.max_blocks, dseq.as<int32_t>(),
                      dpos.as<int32_t>(), M, nh, nkv, hd, bs, scale, o2.p, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      EXPECT_LT(rel_l2(download16(t(), o2, qb.size()), download16(t(), o1, qb.size())), 2 * tol_rel(t()))
          << "prefill start=" << start << " M=" << M << " " << dname(t());
    }
  }
}

TEST_P(CudaPaged, PagedAttentionRejectsUnsupportedShapes) {
  DevBuf b(64);
  auto call = [&](int nh, int nkv, int hd, int bs) {
    paged_attention(t(), b.p, b.p, b.p, b.as<int32_t>(), 1, b.as<int32_t>(), b.as<int32_t>(), 1, nh, nkv, hd,
                    bs, 1.f, b.p, nullptr);
  };
  EXPECT_THROW(call(4, 4, 96, 16), Error);    // head_dim
  EXPECT_THROW(call(32, 2, 128, 16), Error);  // GQA group of 16
  EXPECT_THROW(call(6, 4, 128, 16), Error);   // not a multiple
  EXPECT_THROW(call(4, 4, 128, 0), Error);    // block size
  EXPECT_THROW(call(4, 4, 128, 2048), Error);
}

TEST_P(CudaPaged, GatherRows) {
  for (int H : {264, 131}) {  // 16-byte vector path, and the scalar path
    const int N = 9;
    auto x = rand_vec(gen, size_t(N) * H);
    auto xb = quantize16(t(), x);
    std::vector<int32_t> rows = {8, 0, 3, 3, 7, 1};
    const int R = int(rows.size());
    DevBuf dx(xb.size() * 2), dr(R * 4), dout(size_t(R) * H * 2);
    dx.upload(xb.data(), xb.size() * 2);
    dr.upload(rows.data(), R * 4);
    dout.poison();
    gather_rows(t(), dx.p, dr.as<int32_t>(), R, H, dout.p, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto out = download16(t(), dout, size_t(R) * H);
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < H; ++i)
        ASSERT_EQ(out[size_t(r) * H + i], x[size_t(rows[r]) * H + i])
            << "H=" << H << " r=" << r << " i=" << i;
  }
}

// gather_kv_pages over a pool of shuffled blocks, fp16 / bf16 or E4M3 (f8: any byte but the two NaNs): each
// of positions 0 .. n-1 of each kv head lands at [kh][p], widened as the pool's values are; the positions
// past n keep their NaN poison.
void check_gather_kv_pages(DType t, std::mt19937& gen, bool f8) {
  for (int hd : {16, 128}) {
    for (int bs : {16, 5}) {
      const int nkv = 3, num_blocks = 12, n = 37, max_ctx = 64;
      const size_t pool_n = size_t(num_blocks) * nkv * bs * hd, esz = f8 ? 1 : 2;
      std::vector<float> k, v;  // the pools' values
      std::vector<uint16_t> kb, vb;
      std::vector<uint8_t> k8(f8 ? pool_n : 0), v8(f8 ? pool_n : 0);
      if (f8) {
        for (size_t i = 0; i < pool_n; ++i) {
          do k8[i] = uint8_t(gen());
          while ((k8[i] & 0x7f) == 0x7f);
          do v8[i] = uint8_t(gen());
          while ((v8[i] & 0x7f) == 0x7f);
        }
        for (size_t i = 0; i < pool_n; ++i) {
          k.push_back(from_e4m3(k8[i]));
          v.push_back(from_e4m3(v8[i]));
        }
      } else {
        k = rand_vec(gen, pool_n);
        v = rand_vec(gen, pool_n);
        kb = quantize16(t, k);
        vb = quantize16(t, v);
      }
      std::vector<int32_t> table(num_blocks);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), gen);
      DevBuf dk(pool_n * esz), dv(pool_n * esz), dt(table.size() * 4);
      DevBuf ko(size_t(nkv) * max_ctx * hd * 2), vo(size_t(nkv) * max_ctx * hd * 2);
      dk.upload(f8 ? static_cast<const void*>(k8.data()) : kb.data(), pool_n * esz);
      dv.upload(f8 ? static_cast<const void*>(v8.data()) : vb.data(), pool_n * esz);
      dt.upload(table.data(), table.size() * 4);
      ko.poison();
      vo.poison();
      gather_kv_pages(t, dk.p, dv.p, dt.as<int32_t>(), n, nkv, hd, bs, max_ctx, ko.p, vo.p, nullptr, f8);
      CUDA_OK(cudaDeviceSynchronize());
      auto kg = download16(t, ko, size_t(nkv) * max_ctx * hd),
           vg = download16(t, vo, size_t(nkv) * max_ctx * hd);
      for (int kh = 0; kh < nkv; ++kh)
        for (int p = 0; p < max_ctx; ++p)
          for (int i = 0; i < hd; ++i) {
            const size_t o = (size_t(kh) * max_ctx + p) * hd + i;
            if (p >= n) {  // untouched
              ASSERT_TRUE(std::isnan(kg[o]) && std::isnan(vg[o])) << "position " << p << " was written";
              continue;
            }
            const size_t src = ((size_t(table[p / bs]) * nkv + kh) * bs + p % bs) * hd + i;
            ASSERT_EQ(kg[o], k[src]) << "hd " << hd << " bs " << bs << " kv head " << kh << " position " << p;
            ASSERT_EQ(vg[o], v[src]) << "hd " << hd << " bs " << bs << " kv head " << kh << " position " << p;
          }
    }
  }
}

TEST_P(CudaPaged, GatherKvPages) { check_gather_kv_pages(t(), gen, false); }

// From E4M3 pools: each value widened exactly (every E4M3 value is an fp16 and a bf16 value).
TEST_P(CudaPaged, GatherKvPagesFromFp8) { check_gather_kv_pages(t(), gen, true); }

// argmax with the lowest index on ties, NaN below everything; all NaN / -inf: the lowest such index (0).
int argmax_ref(const float* v, int V) {
  int best = -1;
  for (int i = 0; i < V; ++i) {
    if (std::isnan(v[i])) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

TEST(CudaPagedArgmax, ArgmaxRowsTiesAndNaN) {
  LLAMARUN_REQUIRE_GPU();
  std::mt19937 gen(99);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int V : {32003, 7, 1}) {
    const int R = 9;
    std::vector<float> x = rand_vec(gen, size_t(R) * V, -10, 10);
    auto row = [&](int r) { return &x[size_t(r) * V]; };
    // Row 1: a tie between two indices handled by different threads and warps.
    // Row 2: a tie between two indices of the same thread (stride 512).
    // Row 3: NaNs, including at index 0 and one past the maximum.
    // Row 4: all -inf. Row 5: all NaN. Row 6: the maximum at the last index. Row 7: +inf twice.
    // Row 8: NaN and -inf only.
    if (V > 1000) {
      row(1)[600] = row(1)[7] = 50.f;
      row(2)[1] = row(2)[513] = 60.f;
      row(3)[0] = nan;
      row(3)[20000] = 70.f;
      row(3)[20001] = nan;
      row(7)[30000] = row(7)[12] = inf;
    } else {
      row(1)[V - 1] = row(1)[0] = 50.f;
      row(3)[0] = nan;
    }
    std::fill(row(4), row(4) + V, -inf);
    std::fill(row(5), row(5) + V, nan);
    row(6)[V - 1] = 100.f;
    for (int i = 0; i < V; ++i) row(8)[i] = i % 2 ? -inf : nan;
    DevBuf dx(x.size() * 4), dids(R * 4);
    dx.upload(x.data(), x.size() * 4);
    dids.poison();
    argmax_rows(dx.as<float>(), R, V, dids.as<int32_t>(), nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<int32_t> ids(R);
    dids.download(ids.data(), R * 4);
    for (int r = 0; r < R; ++r) EXPECT_EQ(ids[r], argmax_ref(row(r), V)) << "V=" << V << " row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaPaged, ::testing::Values(DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(dname(i.param));
                         });

}  // namespace
}  // namespace llamarun::cuda::test
