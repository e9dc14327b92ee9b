#include "backends/cuda/cuda_llama.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/fp8.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/progress.h"
#include "formats/weight_map.h"
#include "model/llama_tensors.h"
#include "model/random_model.h"
#include "model/rope.h"

namespace llamarun {

using namespace llamarun::cuda;

LlamaConfig cuda_preset_config(const std::string& name) {
  if (name != "tiny") return random_model_preset(name);  // llama2-7b and the other shared shapes
  // The GPU's own tiny shape: head_dim 64 (the CPU preset's 16 would leave the 64 / 128 kernels untested).
  LlamaConfig c;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.max_position = 1024;
  c.rms_eps = 1e-5f;
  return c;
}

namespace {

// One linear layer's weight [N, K] on the device: consecutive row ranges ("parts") of one storage type each,
// the activation dtype or a GPU quantized type (kernels.h QMatrix: split layout). A fused projection whose
// tensors differ in type (Q4_K_M files: q / k in Q4_K, v in Q6_K) has several parts; everything else one.
struct LinPart {
  DType type = DType::F16;
  void* data = nullptr;  // 256-byte aligned
  int row0 = 0, rows = 0;
};
struct Lin {
  std::vector<LinPart> parts;
  int N = 0, K = 0;
  void* p = nullptr;   // parts[0].data
  bool plain = false;  // one part in the activation dtype: the fp16 / bf16 kernels take it whole
  // FP8 storage (opt.fp8_weights): one part, p holds N x K E4M3 bytes, s8 the N per-row scales.
  float* s8 = nullptr;
  QMatrix q(const LinPart& part) const {
    QMatrix m;
    m.type = part.type;
    m.data = part.data;
    m.rows = part.rows;
    m.cols = K;
    return m;
  }
};

size_t round256(size_t b) { return (b + 255) & ~size_t(255); }

// The quantized GEMV's launch variants for an input quantized once (defaults and ablations of the options).
void set_quant_variants(const CudaLlamaOptions& opt, QGemvFusion& f) {
  f.occupancy4 = opt.quant_occupancy4;
  f.resident = opt.quant_resident;
  f.x_smem = opt.quant_x_smem;
  f.decode_at_load = opt.quant_decode_at_load;
  f.rows_per_warp = opt.quant_rows_per_warp;
}
// quant_rows_per_warp 0: rows per warp of the batch-1 GEMV by the part's shape, as measured per projection
// (H100, Llama-2-7B shape, `llamarun_bench_cuda --qgemv`, bench/cuda/runs/2026-12-07e-h100-branch/): Q4_K
// qkv (12,288 x 4,096) 18.0 us with 4 rows a warp against 19.4 with one, gate_up (22,016 x 4,096) 26.5 with 2
// against 29.4; o and down (4,096 rows) slower with either (10.0 -> 11.6, 22.6 -> 25.8 with 2 rows).
int auto_rows_per_warp(int rows, int K) {
  if (K > 4096 || rows < 8192) return 1;
  return rows >= 16384 ? 2 : 4;
}
// FP8 storage of a part: the E4M3 bytes, then (at fp8_scales_offset) the fp32 row scales.
size_t fp8_scales_offset(int64_t rows, int64_t cols) { return round256(size_t(rows * cols)); }
size_t fp8_part_bytes(int64_t rows, int64_t cols) { return fp8_scales_offset(rows, cols) + size_t(rows) * 4; }
size_t part_bytes(DType type, DType act, int64_t rows, int64_t cols, bool fp8) {
  if (type == act && fp8) return round256(fp8_part_bytes(rows, cols));
  return round256(type == act ? size_t(rows * cols) * 2 : qmatrix_bytes(type, rows, cols));
}

struct LayerWeights {
  void* attn_norm = nullptr;  // [H]
  Lin qkv;                    // [(nh + 2 nkv) hd, H]: q rows, then k rows, then v rows
  Lin o;                      // [H, nh hd]
  void* ffn_norm = nullptr;   // [H]
  Lin gate_up;                // [2 I, H]: gate rows, then up rows
  Lin down;                   // [H, I]
};

// The storage types of one fused projection's tensors, in row order, with their row counts.
using LinPlan = std::vector<std::pair<DType, int>>;
struct WeightPlan {
  std::vector<std::array<LinPlan, 4>> layers;  // qkv, o, gate_up, down
  LinPlan lm_head;                             // empty when tied to the embedding
};

}  // namespace

struct CudaLlama::Impl {
  LlamaConfig cfg;
  CudaLlamaOptions opt;
  DType act = DType::F16;
  size_t esz = 2;  // bytes per activation / weight element
  int device = 0;
  std::string device_name;
  int sm_count = 0;
  int H = 0, I = 0, V = 0, L = 0, nh = 0, nkv = 0, hd = 0, qkv_rows = 0, max_ctx = 0, mmax = 0;

  DeviceAllocator alloc;
  cudaStream_t stream = nullptr;
  std::unique_ptr<LtGemm> lt;

  // Weights.
  void* embed = nullptr;       // [V, H]
  void* final_norm = nullptr;  // [H]
  Lin lm_head;                 // [V, H] (the embedding when tied)
  std::vector<LayerWeights> layers;
  WeightPlan plan;           // the weights' storage types (allocate)
  bool quantized = false;    // some layer weight stays quantized (QMatrix parts)
  int qmax = 0;              // batches of up to qmax rows take qgemv
  void* wscratch = nullptr;  // one dequantized linear weight (act) for the GEMM path
  // opt.quant_dequant_ahead: the layer weights of a prefill forward in call order (ahead_seq), dequantized
  // alternately into wscratch and wscratch2 on side_stream, one weight ahead of the GEMMs; ahead_ready[s]
  // (side) when slot s holds the weight, ahead_free[s] (main) when its GEMM has read it.
  void* wscratch2 = nullptr;
  cudaStream_t side_stream = nullptr;
  cudaEvent_t ahead_fork = nullptr, ahead_ready[2] = {}, ahead_free[2] = {};
  std::vector<const Lin*> ahead_seq;
  size_t ahead_next = 0;
  bool ahead_on = false;
  void* xq = nullptr;  // with opt.quantize_input_once: qgemv's input quantized to int8, up to 8 rows
  size_t wscratch_bytes = 0;
  // FP8 weights (opt.fp8_weights): every Lin but a tied lm_head is FP8; wscratch holds one weight in act
  // while it is uploaded and quantized. The GEMM path's activations quantized per token: x8 [mmax, max K]
  // E4M3, x8s [mmax] scales; f8out [mmax, max N] fp32 for the GEMM's unit-scale fallback.
  bool fp8 = false;
  void* x8 = nullptr;
  float* x8s = nullptr;
  float* f8out = nullptr;
  float* inv_freq = nullptr;  // [hd / 2]

  // Activations, sized for mmax rows.
  void* x = nullptr;              // [mmax, H] residual stream
  void* xn = nullptr;             // [mmax, H] normalised
  void* qkv = nullptr;            // [mmax, qkv_rows]
  void* q = nullptr;              // [mmax, nh hd] rotated queries
  void* attn = nullptr;           // [mmax, nh hd]
  void* o = nullptr;              // [mmax, H]
  void* gu = nullptr;             // [mmax, 2 I]
  void* mlp = nullptr;            // [mmax, I]
  void* down = nullptr;           // [mmax, H]
  int* merge_counters = nullptr;  // [nkv]: decode attention's fused merge (zero between launches)
  float* part_o = nullptr;
  float* part_stats = nullptr;
  DecodeAttnPlan attn_plan;
  void* workspace = nullptr;
  size_t workspace_bytes = 32u << 20;

  // The paged pool and the varlen batch buffers (init_paged).
  int pbs = 0, pnb = 0, pmb = 0;  // block size, blocks, block-table stride (blocks per sequence)
  int pseqs = 0;                  // most sequences (logit rows) per batch
  void* k_pool = nullptr;         // [L][nb][nkv][bs][hd]
  void* v_pool = nullptr;
  // Device batch inputs: ids [mmax] | pos [mmax] | slot [mmax] | seq [mmax] | apos [mmax] | rows [pseqs] |
  // tables. apos: the position paged_attention uses (-1 for the rows of chunks the tensor-core path takes).
  int32_t* pin = nullptr;
  int32_t* h_pin = nullptr;    // pinned host mirror of pin
  void* xg = nullptr;          // [pseqs, H] residual rows of the logit rows
  void* dg = nullptr;          // [pseqs, H] their last down-projection rows
  float* plogits = nullptr;    // [pseqs, V]
  int32_t* pids = nullptr;     // [pseqs] argmax per logit row
  int32_t* h_pids = nullptr;   // pinned
  int32_t* dh_pids = nullptr;  // h_pids as the device sees it (the fast path's argmax writes there); or null
  int32_t* fin = nullptr;      // batch-1 path inputs [3 + pmb]: token, position, KV slot, the block table
  int32_t* h_fin = nullptr;    // pinned host mirror
  std::map<int, cudaGraphExec_t> bucket_graphs;  // decode batch size -> graph
  cudaGraphExec_t fast_graph = nullptr;          // the batch-1 fast path
  int64_t fast_steps = 0;
  double warmup_s = 0;        // the last warm_up_paged
  void* k_scratch = nullptr;  // [nkv, max_ctx, hd]: one sequence's K / V for the tensor-core prefill path
  void* v_scratch = nullptr;
  struct PrefillChunk {
    int row0, n, start, seq;
  };
  std::vector<PrefillChunk> tc_chunks;  // this batch's chunks for the tensor-core path
  double paged_host_s = 0;              // forward_paged's host preparation, total

  bool fast_ok = true;  // opt.fast_decode and the fused GEMV's 48 KB staging limit
  bool pdl = false;     // Hopper (cc >= 9): the fast path's kernels overlap their neighbours
  CudaLoadStats load;
  CudaMemoryStats mem;

  void init_common(const LlamaConfig& c, const CudaLlamaOptions& o);
  // y = x W^T for M rows: the fp16 / bf16 GEMV / GEMM, or for quantized weights qgemv (up to
  // opt.quant_gemv_max_rows rows) or a dequantization into wscratch and the GEMM.
  void mm(const Lin& w, const void* x, void* y, bool y_f32, int M);
  void mm_x8(const Lin& w, void* y, int M);
  // The whole weight w in act into dst (qdequant per quantized part, a copy per act part), on s.
  void dequant_into(const Lin& w, void* dst, cudaStream_t s);
  // opt.quant_dequant_ahead: arms the pipeline for a forward of T rows (first weight dequantized on
  // side_stream); no-op when the batch takes the GEMVs or nothing is quantized.
  void ahead_begin(int T);
  // The batch-1 step with quantized weights (forward_decode1's counterpart; every part quantized).
  void forward_decode1q();
  // y (+)= x' W^T for one row through qgemv's prologue / epilogue fusions (all parts quantized).
  void mmq(const Lin& w, const void* x, void* y, const QGemvFusion& f);
  DType storage_type(DType file_type, int64_t cols) const;
  LinPlan plan_of(std::initializer_list<const WeightView*> views) const;
  void alloc_lin(Lin& w, const LinPlan& plan, int K, const std::string& name);
  void check_fits(size_t extra);  // extra: transient buffers (upload staging)
  void allocate(size_t extra = 0);
  void load_weights(const LlamaWeights& w);
  void random_weights(uint64_t seed);
  // The staged batch of one decode row (pin row 0) through the fused batch-1 path.
  void forward_decode1();
  // Uploads h_fin, runs forward_decode1 and copies the token back to h_pids[0] (what the graph holds).
  void fast_step();
  void capture_fast_graph();
  void capture_decode_graph(int TB);
  // The host mirror of pin by field, and what forward_paged and warm_up_paged stage in it: padding rows
  // [from, to) (no token, no position to attend to, no KV slot to store into), and the upload of the
  // staged batch with its first S block tables.
  struct HostPin {
    int32_t *ids, *pos, *slot, *seq, *apos, *rows, *tab;
  };
  HostPin host_pin() const;
  void pad_rows(int from, int to);
  void upload_pin(int S);
  // The batch staged in pin: T tokens, R logit rows, tc_chunks through the tensor-core attention.
  void forward_varlen(int T, int R);
  size_t pin_ints() const { return 5 * size_t(mmax) + pseqs + size_t(pseqs) * pmb; }
  size_t kvsz = 2;  // bytes per element of the paged KV pool (1: opt.kv_fp8)
  size_t pool_layer_bytes() const { return size_t(pnb) * nkv * pbs * hd * kvsz; }
  ~Impl();

  size_t lin_bytes(size_t rows, size_t cols) const { return rows * cols * esz; }
  char* kp_layer(int l) const { return static_cast<char*>(k_pool) + size_t(l) * pool_layer_bytes(); }
  char* vp_layer(int l) const { return static_cast<char*>(v_pool) + size_t(l) * pool_layer_bytes(); }
  size_t plan_bytes(const LinPlan& p, int K) const {
    size_t b = 0;
    for (const auto& [t, rows] : p) b += part_bytes(t, act, rows, K, fp8);
    return b;
  }
  size_t weight_bytes() const {
    size_t b = lin_bytes(V, H) + lin_bytes(1, H) + plan_bytes(plan.lm_head, H);
    for (const auto& lp : plan.layers)
      b += plan_bytes(lp[0], H) + plan_bytes(lp[1], nh * hd) + plan_bytes(lp[2], H) + plan_bytes(lp[3], I) +
           2 * lin_bytes(1, H);
    return b;
  }
  size_t xq_bytes() const { return qx_bytes(8, std::max({H, I, nh * hd})); }
  int max_k() const { return std::max({H, I, nh * hd}); }
  // The largest linear weight in act (FP8 weights are uploaded / generated there, then quantized).
  size_t fp8_scratch_bytes() const {
    return std::max({size_t(qkv_rows) * H, size_t(H) * nh * hd, size_t(2) * I * H, size_t(H) * I,
                     cfg.tie_embeddings ? 0 : size_t(V) * H}) *
           esz;
  }
  int max_n() const { return std::max({qkv_rows, 2 * I, H, V}); }
  size_t fp8_act_bytes() const {
    return round256(size_t(mmax) * max_k()) + round256(size_t(mmax) * 4) +
           round256(size_t(mmax) * max_n() * 4);
  }
  size_t act_bytes() const {
    size_t m = mmax;
    size_t b = esz * m * (3 * size_t(H) + qkv_rows + 2 * size_t(nh) * hd + 2 * size_t(I) + I + H);
    b += 4 * size_t(nkv) + 256 +
         (decode_attn_partial_floats(attn_plan, nh, hd) + decode_attn_stats_floats(attn_plan, nh)) * 4;
    if (quantized) b += wscratch_bytes * (opt.quant_dequant_ahead ? 2 : 1) + xq_bytes();
    if (fp8) b += wscratch_bytes + fp8_act_bytes();
    return b + 16 * 256;  // allocation rounding
  }
};

void CudaLlama::Impl::init_common(const LlamaConfig& c, const CudaLlamaOptions& o) {
  cfg = c;
  opt = o;
  act = o.dtype;
  check_act_dtype(act, "CudaLlama");
  if (cfg.num_kv_heads == 0) cfg.num_kv_heads = cfg.num_heads;
  if (cfg.num_heads > 0 && cfg.head_dim == 0) cfg.head_dim = cfg.hidden_size / cfg.num_heads;
  H = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size, L = cfg.num_layers;
  nh = cfg.num_heads, nkv = cfg.num_kv_heads, hd = cfg.head_dim;
  if (H <= 0 || I <= 0 || V <= 0 || L <= 0 || nh <= 0 || nkv <= 0 || hd <= 0)
    fail("CudaLlama: config has a non-positive size (hidden ", H, ", intermediate ", I, ", vocab ", V,
         ", layers ", L, ", heads ", nh, ", kv heads ", nkv, ", head_dim ", hd, ")");
  if (H % 8 || I % 8 || (nh * hd) % 8)
    fail("CudaLlama: hidden ", H, ", intermediate ", I, " and heads*head_dim ", nh * hd,
         " must be multiples of 8");
  if (nh % nkv) fail("CudaLlama: ", nh, " heads not a multiple of ", nkv, " kv heads");
  if (nh / nkv > 8) fail("CudaLlama: GQA group ", nh / nkv, " > 8 not supported");
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128)
    fail("CudaLlama: head_dim ", hd, " not supported (16, 32, 64 or 128)");
  if (H > 12224) fail("CudaLlama: hidden size ", H, " > 12224 not supported");
  if (o.max_context <= 0) fail("CudaLlama: max_context ", o.max_context, " must be positive");
  if (o.paged_max_tokens <= 0 || o.paged_max_seqs <= 0)
    fail("CudaLlama: paged_max_tokens and paged_max_seqs must be positive");
  qkv_rows = (nh + 2 * nkv) * hd;
  max_ctx = o.max_context;
  mmax = o.paged_max_tokens;
  pseqs = std::min(o.paged_max_seqs, o.paged_max_tokens);
  esz = 2;
  kvsz = o.kv_fp8 ? 1 : esz;
  // The batch-1 fused path (its QKV epilogue and split-K attention) reads and writes act pools only.
  fast_ok = o.fast_decode && !o.kv_fp8 && size_t(std::max({H, I, nh * hd})) * 2 <= size_t(kGemvStageBytes);

  device = parse_device(o.device);
  set_device(device);
  DeviceInfo di = device_info(device);
  device_name = di.name;
  sm_count = di.sm_count;
  pdl = di.cc_major >= 9;  // without it, tg64 -3% on an H200, -3.5% at depth 512 on an H100 (NOTES.md)
  fp8 = o.fp8_weights;
  if (fp8) {
    if (o.keep_quantized) fail("CudaLlama: FP8 weights and keeping GGUF blocks quantized exclude each other");
    if (!fp8_supported(device))
      fail("CudaLlama: FP8 weights need a GPU of compute capability 8.9 or newer (FP8 tensor cores); ",
           di.name, " is ", di.cc_major, ".", di.cc_minor);
    if (H % 16 || I % 16 || (nh * hd) % 16)
      fail("CudaLlama: FP8 weights need hidden ", H, ", intermediate ", I, " and heads*head_dim ", nh * hd,
           " to be multiples of 16");
  }
  attn_plan = make_decode_attn_plan(nkv, max_ctx, sm_count);
  LLAMARUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
}

void CudaLlama::Impl::check_fits(size_t extra) {
  size_t w = weight_bytes(), a = act_bytes();
  require_fits(
      w + a + workspace_bytes + extra,
      detail::concat("model on ", opt.device, " (", device_name, ": weights ", format_bytes(w),
                     ", activations ", format_bytes(a), ", workspace ", format_bytes(workspace_bytes), ")"),
      size_t(64) << 20);
}

void CudaLlama::Impl::allocate(size_t extra) {
  check_fits(extra);
  layers.resize(L);
  size_t before = alloc.allocated();
  embed = alloc.alloc(lin_bytes(V, H), "token embedding");
  final_norm = alloc.alloc(lin_bytes(1, H), "final norm");
  if (cfg.tie_embeddings) {
    lm_head.parts = {{act, embed, 0, V}};
    lm_head.N = V, lm_head.K = H, lm_head.p = embed, lm_head.plain = true;
  } else {
    alloc_lin(lm_head, plan.lm_head, H, "lm_head");
  }
  for (int l = 0; l < L; ++l) {
    LayerWeights& lw = layers[l];
    std::string n = detail::concat("layer ", l, " ");
    lw.attn_norm = alloc.alloc(lin_bytes(1, H), n + "attn_norm");
    alloc_lin(lw.qkv, plan.layers[l][0], H, n + "qkv");
    alloc_lin(lw.o, plan.layers[l][1], nh * hd, n + "o_proj");
    lw.ffn_norm = alloc.alloc(lin_bytes(1, H), n + "ffn_norm");
    alloc_lin(lw.gate_up, plan.layers[l][2], H, n + "gate_up");
    alloc_lin(lw.down, plan.layers[l][3], I, n + "down_proj");
  }
  mem.weights = alloc.allocated() - before;
  if (quantized) {
    // The batch-1 path has a quantized variant (forward_decode1q) when no layer projection mixes in an
    // fp16 / bf16 part; without PDL.
    for (const LayerWeights& lw : layers)
      for (const Lin* w : {&lw.qkv, &lw.o, &lw.gate_up, &lw.down})
        for (const LinPart& part : w->parts)
          if (part.type == act) fast_ok = false;
    pdl = pdl && opt.quant_pdl;
    qmax = std::max(1, std::min(mmax, opt.quant_gemv_max_rows));
    wscratch = alloc.alloc(wscratch_bytes, "dequantized weight scratch");
    if (opt.quant_dequant_ahead) {
      wscratch2 = alloc.alloc(wscratch_bytes, "dequantized weight scratch (ahead)");
      LLAMARUN_CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream, cudaStreamNonBlocking));
      for (cudaEvent_t* e : {&ahead_fork, &ahead_ready[0], &ahead_ready[1], &ahead_free[0], &ahead_free[1]})
        LLAMARUN_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
      for (const LayerWeights& lw : layers)
        for (const Lin* w : {&lw.qkv, &lw.o, &lw.gate_up, &lw.down})
          if (!w->plain) ahead_seq.push_back(w);
    }
    if (opt.quantize_input_once) xq = alloc.alloc(xq_bytes(), "quantized GEMV input");
  }
  if (fp8) {
    wscratch = alloc.alloc(wscratch_bytes, "FP8 weight upload scratch");
    x8 = alloc.alloc(size_t(mmax) * max_k(), "FP8 activations");
    x8s = alloc.alloc_n<float>(mmax, "FP8 activation scales");
    f8out = alloc.alloc_n<float>(size_t(mmax) * max_n(), "FP8 GEMM output");
  }
  before = alloc.allocated();
  size_t m = mmax;
  x = alloc.alloc(esz * m * H, "x");
  xn = alloc.alloc(esz * m * H, "xn");
  qkv = alloc.alloc(esz * m * qkv_rows, "qkv");
  q = alloc.alloc(esz * m * nh * hd, "q");
  attn = alloc.alloc(esz * m * nh * hd, "attn");
  o = alloc.alloc(esz * m * H, "attn_out");
  gu = alloc.alloc(esz * m * 2 * I, "gate_up_out");
  mlp = alloc.alloc(esz * m * I, "mlp");
  down = alloc.alloc(esz * m * H, "down_out");
  merge_counters = alloc.alloc_n<int>(nkv, "attention merge counters");
  part_o = alloc.alloc_n<float>(decode_attn_partial_floats(attn_plan, nh, hd), "attention partials");
  part_stats = alloc.alloc_n<float>(decode_attn_stats_floats(attn_plan, nh), "attention stats");
  inv_freq = alloc.alloc_n<float>(hd / 2, "rope inv_freq");
  mem.activations = alloc.allocated() - before;
  workspace = alloc.alloc(workspace_bytes, "cuBLASLt workspace");
  mem.workspace = workspace_bytes;
  lt = std::make_unique<LtGemm>(workspace, workspace_bytes);

  std::vector<float> f = llamarun::rope_inv_freq(cfg);  // includes GGUF rope_freqs factors
  LLAMARUN_CUDA_CHECK(cudaMemcpy(inv_freq, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
  LLAMARUN_CUDA_CHECK(cudaMemset(merge_counters, 0, sizeof(int) * nkv));
  load.device_weight_bytes = mem.weights;
}

DType CudaLlama::Impl::storage_type(DType file_type, int64_t cols) const {
  QLayout l;
  if (opt.keep_quantized && qlayout(file_type, &l) && cols % l.block == 0) return file_type;
  return act;
}

LinPlan CudaLlama::Impl::plan_of(std::initializer_list<const WeightView*> views) const {
  LinPlan p;
  for (const WeightView* v : views) {
    const DType t = storage_type(v->dtype, v->cols);
    if (!p.empty() && p.back().first == t)
      p.back().second += int(v->rows);
    else
      p.emplace_back(t, int(v->rows));
  }
  return p;
}

void CudaLlama::Impl::alloc_lin(Lin& w, const LinPlan& p, int K, const std::string& name) {
  w.parts.clear();
  w.K = K;
  w.N = 0;
  for (const auto& [t, rows] : p) {
    LinPart part;
    part.type = t;
    part.row0 = w.N;
    part.rows = rows;
    part.data = alloc.alloc(part_bytes(t, act, rows, K, fp8), name);
    w.parts.push_back(part);
    w.N += rows;
  }
  w.p = w.parts.empty() ? nullptr : w.parts[0].data;
  w.plain = w.parts.size() == 1 && w.parts[0].type == act;
  w.s8 = nullptr;
  if (fp8) {
    if (w.parts.size() != 1 || w.parts[0].type != act)
      fail("CudaLlama: ", name, ": FP8 storage of a projection of several storage types");
    w.plain = false;
    w.s8 = reinterpret_cast<float*>(static_cast<char*>(w.p) + fp8_scales_offset(w.N, K));
  }
}

void CudaLlama::Impl::dequant_into(const Lin& w, void* dst, cudaStream_t s) {
  for (const LinPart& part : w.parts) {
    char* d = static_cast<char*>(dst) + size_t(part.row0) * w.K * esz;
    if (part.type == act)
      LLAMARUN_CUDA_CHECK(
          cudaMemcpyAsync(d, part.data, size_t(part.rows) * w.K * esz, cudaMemcpyDeviceToDevice, s));
    else
      qdequant(act, w.q(part), d, s, opt.quant_dequant_staged);
  }
}

void CudaLlama::Impl::ahead_begin(int T) {
  ahead_on = false;
  ahead_next = 0;
  if (!side_stream || T <= qmax || ahead_seq.empty()) return;
  // Not inside a graph capture (the decode batches' bucket graphs): the fork / join would be captured too,
  // but no test covers it yet, so captured batches keep the main-stream dequantization.
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  LLAMARUN_CUDA_CHECK(cudaStreamIsCapturing(stream, &cs));
  if (cs != cudaStreamCaptureStatusNone) return;
  // The side stream forks from the main one here (a graph capture follows the fork; the scratches' last
  // readers, the previous forward's GEMMs, are before it) and joins it at every GEMM's wait.
  LLAMARUN_CUDA_CHECK(cudaEventRecord(ahead_fork, stream));
  LLAMARUN_CUDA_CHECK(cudaStreamWaitEvent(side_stream, ahead_fork, 0));
  dequant_into(*ahead_seq[0], wscratch, side_stream);
  LLAMARUN_CUDA_CHECK(cudaEventRecord(ahead_ready[0], side_stream));
  ahead_on = true;
}

// y = x W^T for FP8 weights and the M rows already quantized in x8 / x8s (add_rmsnorm_fp8, silu_mul_fp8).
void CudaLlama::Impl::mm_x8(const Lin& w, void* y, int M) {
  if (!w.s8) fail("CudaLlama: mm_x8 of a weight that is not FP8");
  lt->run_fp8(act, w.p, w.s8, x8, x8s, y, false, M, w.N, w.K, stream, f8out);
}

// y = x W^T for the M rows of x (act).
void CudaLlama::Impl::mm(const Lin& w, const void* x, void* y, bool y_f32, int M) {
  if (w.plain) return linear(*lt, act, w.p, x, y, y_f32, M, w.N, w.K, stream);
  if (w.s8) {  // FP8: the GEMV up to 8 rows, else per-token E4M3 activations and cuBLASLt's FP8 GEMM
    if (M <= 8) {
      GemvFusion f;
      f.w_fp8_scale = w.s8;
      return gemv_fused(act, w.p, x, y, y_f32, M, w.N, w.K, f, stream);
    }
    fp8_quantize_rows(act, x, M, w.K, x8, x8s, stream);
    return lt->run_fp8(act, w.p, w.s8, x8, x8s, y, y_f32, M, w.N, w.K, stream, f8out);
  }
  const size_t ysz = y_f32 ? 4 : esz;
  if (M > qmax) {
    // Large batches (prefill): the whole weight dequantized into a scratch, then the tensor-core GEMM.
    if (ahead_on && ahead_next < ahead_seq.size() && ahead_seq[ahead_next] == &w) {
      const size_t i = ahead_next++;
      const int slot = int(i & 1), other = slot ^ 1;
      void* bufs[2] = {wscratch, wscratch2};
      LLAMARUN_CUDA_CHECK(cudaStreamWaitEvent(stream, ahead_ready[slot], 0));
      if (i + 1 < ahead_seq.size()) {  // the next weight into the other slot once GEMM i - 1 has read it
        if (i > 0) LLAMARUN_CUDA_CHECK(cudaStreamWaitEvent(side_stream, ahead_free[other], 0));
        dequant_into(*ahead_seq[i + 1], bufs[other], side_stream);
        LLAMARUN_CUDA_CHECK(cudaEventRecord(ahead_ready[other], side_stream));
      }
      lt->run(act, bufs[slot], x, y, y_f32, M, w.N, w.K, stream);
      LLAMARUN_CUDA_CHECK(cudaEventRecord(ahead_free[slot], stream));
      if (i + 1 == ahead_seq.size()) ahead_on = false;  // every side-stream record has been waited on
      return;
    }
    if (ahead_on) {  // a weight out of the armed order: the side stream joins first (it may write wscratch)
      LLAMARUN_CUDA_CHECK(cudaEventRecord(ahead_fork, side_stream));
      LLAMARUN_CUDA_CHECK(cudaStreamWaitEvent(stream, ahead_fork, 0));
      ahead_on = false;
    }
    dequant_into(w, wscratch, stream);
    return lt->run(act, wscratch, x, y, y_f32, M, w.N, w.K, stream);
  }
  QGemvFusion f;
  f.y_f32 = y_f32;
  f.ldy = w.N;
  f.xq8 = xq;
  set_quant_variants(opt, f);
  for (int m0 = 0; m0 < M; m0 += 8) {
    const int mc = std::min(8, M - m0);
    const char* xb = static_cast<const char*>(x) + size_t(m0) * w.K * esz;
    char* yb = static_cast<char*>(y) + size_t(m0) * w.N * ysz;
    bool staged = false;  // x quantized once for every quantized part
    for (const LinPart& part : w.parts) {
      char* yp = yb + size_t(part.row0) * ysz;
      if (part.type != act) {
        if (xq && !staged) qquantize_x(act, xb, mc, w.K, QGemvFusion{}, xq, stream);
        staged = true;
        qgemv(act, w.q(part), xb, yp, mc, f, stream);
      } else if (mc == 1) {
        gemv(act, part.data, xb, yp, y_f32, 1, part.rows, w.K, stream);
      } else {  // into the scratch, then the columns of this part's rows
        gemv(act, part.data, xb, wscratch, y_f32, mc, part.rows, w.K, stream);
        LLAMARUN_CUDA_CHECK(cudaMemcpy2DAsync(yp, size_t(w.N) * ysz, wscratch, size_t(part.rows) * ysz,
                                              size_t(part.rows) * ysz, mc, cudaMemcpyDeviceToDevice, stream));
      }
    }
  }
}

// With xq (and not a Q8_0 projection of K <= kQ8StageMaxK under opt.quant_stage_q8): one quantization of x
// (the prologue applied there) for every part; else each qgemv applies the prologue and quantizes x in every
// block. The long down projection (K = 11,008 for Llama-2-7B, the SiLU-mul prologue over 2 K inputs) is
// quantized once: every block staging it costs more than the separate kernel (H100, `llamarun_bench_cuda
// --qgemv`, Q8_0 down 32.0 us staged against 27.9 us once; qkv / o / gate_up 0.4-1.0 us faster staged).
constexpr int kQ8StageMaxK = 8192;
void CudaLlama::Impl::mmq(const Lin& w, const void* x, void* y, const QGemvFusion& f) {
  QGemvFusion pf = f;
  pf.ldy = w.N;
  bool q8 = opt.quant_stage_q8 && w.K <= kQ8StageMaxK;
  for (const LinPart& part : w.parts) q8 = q8 && part.type == DType::Q8_0;
  if (xq && !q8) {
    set_quant_variants(opt, pf);
    qquantize_x(act, x, 1, w.K, f, xq, stream, pdl);
    pf.prologue = GemvPrologue::kNone;
    pf.xq8 = xq;
  }
  const size_t ysz = f.y_f32 ? 4 : esz;
  for (const LinPart& part : w.parts) {
    if (pf.xq8 && opt.quant_rows_per_warp == 0) pf.rows_per_warp = auto_rows_per_warp(part.rows, w.K);
    qgemv(act, w.q(part), x, static_cast<char*>(y) + size_t(part.row0) * ysz, 1, pf, stream, pdl);
  }
}

namespace {

// Uploads host tensors into device buffers through two pinned staging buffers: host memcpy into one
// while the other's DMA (and conversion kernel) runs. Never holds more than the staging buffers on the host.
class Uploader {
 public:
  Uploader(DeviceAllocator& alloc, cudaStream_t stream, DType act, size_t staging)
      : alloc_(alloc), stream_(stream), act_(act), staging_(staging) {
    for (int i = 0; i < 2; ++i) {
      LLAMARUN_CUDA_CHECK(cudaMallocHost(&host_[i], staging_));
      dev_[i] = alloc_.alloc(staging_, "upload staging");
      LLAMARUN_CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
    }
  }
  ~Uploader() {
    cudaStreamSynchronize(stream_);
    for (int i = 0; i < 2; ++i) {
      if (host_[i]) cudaFreeHost(host_[i]);
      if (dev_[i]) alloc_.free(dev_[i]);
      if (done_[i]) cudaEventDestroy(done_[i]);
    }
  }
  // Copies all of w (rows x cols values) into dst (act dtype), converting on the GPU when w.dtype != act:
  // F32 / F16 / BF16 by convert_to_act; the types with GPU decoders (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)
  // repacked on the host into the GPU layout a chunk of rows at a time and dequantized by qdequant; the
  // other block types dequantized to f32 on the host (dequantize_row, a chunk at a time into the pinned
  // buffer) and converted from f32.
  void upload(const WeightView& w, void* dst) {
    if (qlayout(w.dtype)) return upload_dequantized(w, dst);
    const bool direct = w.dtype == act_;
    const size_t bb = dtype_block_bytes(w.dtype);
    const int64_t be = dtype_block_size(w.dtype);
    const int64_t nblocks = w.rows * w.cols / be;  // whole blocks per row: checked by bind_llama_weights
    const bool host_deq = dtype_is_quantized(w.dtype);
    const int64_t per_chunk = int64_t(staging_ / (host_deq ? size_t(be) * 4 : bb));
    const auto* src = static_cast<const uint8_t*>(w.data);
    for (int64_t b0 = 0; b0 < nblocks; b0 += per_chunk) {
      int64_t nb = std::min(per_chunk, nblocks - b0);
      size_t bytes = size_t(nb) * bb;
      int k = turn_;
      turn_ ^= 1;
      LLAMARUN_CUDA_CHECK(cudaEventSynchronize(done_[k]));  // buffer k free again
      char* out = static_cast<char*>(dst) + size_t(b0 * be) * 2;
      if (host_deq) {
        dequantize_row(w.dtype, src + size_t(b0) * bb, static_cast<float*>(host_[k]), nb * be);
        LLAMARUN_CUDA_CHECK(
            cudaMemcpyAsync(dev_[k], host_[k], size_t(nb * be) * 4, cudaMemcpyHostToDevice, stream_));
        convert_to_act(act_, DType::F32, dev_[k], out, nb * be, stream_);
      } else if (direct) {
        std::memcpy(host_[k], src + size_t(b0) * bb, bytes);
        LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(out, host_[k], bytes, cudaMemcpyHostToDevice, stream_));
      } else {
        std::memcpy(host_[k], src + size_t(b0) * bb, bytes);
        LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(dev_[k], host_[k], bytes, cudaMemcpyHostToDevice, stream_));
        convert_to_act(act_, w.dtype, dev_[k], out, nb * be, stream_);
      }
      LLAMARUN_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
      bytes_ += bytes;
      if (progress) progress->add(bytes);
    }
  }
  // upload() of a type with GPU decoders: rows repacked into the device staging buffer, then qdequant.
  void upload_dequantized(const WeightView& w, void* dst) {
    stage_packed_rows(w, [&](int k, int64_t r0, int64_t nr, size_t) {
      LLAMARUN_CUDA_CHECK(
          cudaMemcpyAsync(dev_[k], host_[k], size_t(nr) * w.row_bytes(), cudaMemcpyHostToDevice, stream_));
      qdequant(act_, QMatrix{w.dtype, dev_[k], int(nr), int(w.cols)},
               static_cast<char*>(dst) + size_t(r0) * size_t(w.cols) * 2, stream_);
    });
  }
  // Copies the rows of w (GGML blocks of a GPU quantized type) into rows row0.. of the quantized part
  // (part_rows x w.cols, kernels.h's layout), repacked on the host while staging.
  void upload_q(const WeightView& w, void* part, int64_t row0, int64_t part_rows) {
    QLayout l;
    if (!qlayout(w.dtype, &l)) fail("upload: ", dtype_name(w.dtype), " has no GPU kernels");
    const int64_t nb = w.cols / l.block;
    const size_t prow = size_t(nb) * l.payload, hrow = size_t(nb) * l.header;
    char* pay = static_cast<char*>(part);
    char* hdr = pay + size_t(part_rows) * prow;
    stage_packed_rows(w, [&](int k, int64_t r0, int64_t nr, size_t chunk_payload) {
      const char* hp = static_cast<const char*>(host_[k]);
      LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(pay + size_t(row0 + r0) * prow, hp, chunk_payload,
                                          cudaMemcpyHostToDevice, stream_));
      if (hrow)
        LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(hdr + size_t(row0 + r0) * hrow, hp + chunk_payload,
                                            size_t(nr) * hrow, cudaMemcpyHostToDevice, stream_));
    });
  }
  // Streams the rows of w (a type with GPU decoders) through the two pinned buffers a chunk at a time, each
  // chunk repacked by qpack_rows (its rows' payload, then their header); send(k, r0, nr, payload bytes)
  // issues the chunk's copies out of host_[k] on the stream.
  template <typename Send>
  void stage_packed_rows(const WeightView& w, Send&& send) {
    const size_t srow = w.row_bytes();
    if (srow > staging_) fail("upload: a row of ", w.cols, " values exceeds the staging buffer");
    const int64_t per_chunk = int64_t(staging_ / srow);
    const auto* src = static_cast<const uint8_t*>(w.data);
    for (int64_t r0 = 0; r0 < w.rows; r0 += per_chunk) {
      const int64_t nr = std::min(per_chunk, w.rows - r0);
      int k = turn_;
      turn_ ^= 1;
      LLAMARUN_CUDA_CHECK(cudaEventSynchronize(done_[k]));  // buffer k free again
      char* hp = static_cast<char*>(host_[k]);
      const size_t pay = QMatrix{w.dtype, nullptr, int(nr), int(w.cols)}.payload_bytes();
      qpack_rows(w.dtype, src + size_t(r0) * srow, nr, w.cols, hp, hp + pay);
      send(k, r0, nr, pay);
      LLAMARUN_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
      bytes_ += size_t(nr) * srow;
      if (progress) progress->add(size_t(nr) * srow);
    }
  }
  size_t bytes() const { return bytes_; }
  Progress* progress = nullptr;  // a bar on stderr when it is a terminal (core/progress.h)

 private:
  DeviceAllocator& alloc_;
  cudaStream_t stream_;
  DType act_;
  size_t staging_;
  void* host_[2] = {nullptr, nullptr};
  void* dev_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int turn_ = 0;
  size_t bytes_ = 0;
};

}  // namespace

// Uploads weights bound (and checked against the config) by bind_llama_weights, the loader every backend
// shares: the lm_head is tied exactly where the binding tied it.
void CudaLlama::Impl::load_weights(const LlamaWeights& w) {
  if (int64_t(w.layers.size()) != L || w.tok_embd.rows != V || w.tok_embd.cols != H || w.lm_head.rows != V ||
      w.lm_head.cols != H)
    fail("CudaLlama: the bound weights (", w.layers.size(), " layers, embedding [", w.tok_embd.rows, ", ",
         w.tok_embd.cols, "]) do not match the config (", L, " layers, [", V, ", ", H, "])");
  cfg.tie_embeddings = w.lm_head.data == w.tok_embd.data;
  const size_t staging = std::max<size_t>(opt.staging_bytes, 1u << 20);
  // Storage per projection: GPU quantized types stay as they are; the rest becomes act.
  plan.layers.clear();
  wscratch_bytes = 0;
  auto note = [&](const LinPlan& p, int K) {
    size_t rows = 0;
    for (const auto& [t, r] : p) {
      rows += size_t(r);
      if (t != act) quantized = true;
    }
    if (p.size() > 1 || (p.size() == 1 && p[0].first != act))
      wscratch_bytes = std::max(wscratch_bytes, rows * size_t(K) * esz);
  };
  for (const LlamaLayerWeights& lw : w.layers) {
    plan.layers.push_back({plan_of({&lw.wq, &lw.wk, &lw.wv}), plan_of({&lw.wo}),
                           plan_of({&lw.w_gate, &lw.w_up}), plan_of({&lw.w_down})});
    const auto& lp = plan.layers.back();
    note(lp[0], H), note(lp[1], nh * hd), note(lp[2], H), note(lp[3], I);
  }
  plan.lm_head.clear();
  if (!cfg.tie_embeddings) {
    plan.lm_head = plan_of({&w.lm_head});
    note(plan.lm_head, H);
  }
  // The scratch also holds a part's GEMV rows (M <= 8) before they are scattered into y.
  wscratch_bytes = std::max(wscratch_bytes, size_t(8) * std::max({qkv_rows, 2 * I, V}) * 4);
  if (fp8) wscratch_bytes = std::max(wscratch_bytes, fp8_scratch_bytes());
  allocate(2 * staging);
  double t0 = now_seconds();
  {
    Uploader up(alloc, stream, act, staging);
    size_t total = 0;
    auto add = [&](const WeightView& v) { total += v.row_bytes() * size_t(v.rows); };
    add(w.tok_embd), add(w.out_norm);
    if (!cfg.tie_embeddings) add(w.lm_head);
    for (const LlamaLayerWeights& lw : w.layers)
      for (const WeightView* v :
           {&lw.attn_norm, &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.ffn_norm, &lw.w_gate, &lw.w_up, &lw.w_down})
        add(*v);
    Progress bar("GPU weight upload", total);
    up.progress = &bar;
    const int64_t h = H, inter = I, qd = int64_t(nh) * hd, kd = int64_t(nkv) * hd;
    up.upload(w.tok_embd, embed);
    up.upload(w.out_norm, final_norm);
    // A projection's tensors into their parts: quantized parts keep their blocks.
    auto put = [&](Lin& dst, std::initializer_list<const WeightView*> views) {
      int64_t row = 0;
      for (const WeightView* v : views) {
        const LinPart* part = nullptr;
        for (const LinPart& pp : dst.parts)
          if (row >= pp.row0 && row < pp.row0 + pp.rows) part = &pp;
        if (!part) fail("CudaLlama: no storage for rows ", row, " of a projection");
        if (dst.s8)  // FP8: the whole projection in act first, quantized below
          up.upload(*v, static_cast<char*>(wscratch) + size_t(row) * dst.K * esz);
        else if (part->type == act)
          up.upload(*v, static_cast<char*>(part->data) + size_t(row - part->row0) * dst.K * esz);
        else
          up.upload_q(*v, part->data, row - part->row0, part->rows);
        row += v->rows;
      }
      if (dst.s8) fp8_quantize_rows(act, wscratch, dst.N, dst.K, dst.p, dst.s8, stream, opt.fp8_weight_scale);
    };
    if (!cfg.tie_embeddings) put(lm_head, {&w.lm_head});
    for (int l = 0; l < L; ++l) {
      LayerWeights& lw = layers[l];
      const LlamaLayerWeights& hw = w.layers[size_t(l)];
      if (hw.wq.rows != qd || hw.wk.rows != kd || hw.wv.rows != kd || hw.wo.cols != qd ||
          hw.w_gate.rows != inter || hw.w_up.rows != inter || hw.w_down.cols != inter ||
          hw.attn_norm.cols != h || hw.ffn_norm.cols != h)
        fail("CudaLlama: the bound weights of layer ", l, " do not match the config");
      up.upload(hw.attn_norm, lw.attn_norm);
      put(lw.qkv, {&hw.wq, &hw.wk, &hw.wv});
      put(lw.o, {&hw.wo});
      up.upload(hw.ffn_norm, lw.ffn_norm);
      put(lw.gate_up, {&hw.w_gate, &hw.w_up});
      put(lw.down, {&hw.w_down});
    }
    LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(stream));
    load.host_bytes = up.bytes();
  }
  load.seconds = now_seconds() - t0;
  load.gb_per_s = load.seconds > 0 ? double(load.host_bytes) / load.seconds / 1e9 : 0;
}

void CudaLlama::Impl::random_weights(uint64_t seed) {
  plan.layers.assign(L,
                     {LinPlan{{act, qkv_rows}}, LinPlan{{act, H}}, LinPlan{{act, 2 * I}}, LinPlan{{act, H}}});
  plan.lm_head.clear();
  if (!cfg.tie_embeddings) plan.lm_head = {{act, V}};
  if (fp8) wscratch_bytes = fp8_scratch_bytes();
  allocate();
  double t0 = now_seconds();
  uint64_t s = seed * 0x100000001b3ull + 17;
  auto rnd = [&](void* p, size_t rows, size_t cols) {
    fill_random(act, p, int64_t(rows * cols), std::sqrt(3.f / float(cols)), s++, stream);
  };
  auto rnd_lin = [&](const Lin& w) {  // FP8: generated in act, then quantized
    rnd(w.s8 ? wscratch : w.p, size_t(w.N), size_t(w.K));
    if (w.s8) fp8_quantize_rows(act, wscratch, w.N, w.K, w.p, w.s8, stream, opt.fp8_weight_scale);
  };
  fill_random(act, embed, int64_t(V) * H, 1.f, s++, stream);
  fill_const(act, final_norm, H, 1.f, stream);
  if (!cfg.tie_embeddings) rnd_lin(lm_head);
  for (int l = 0; l < L; ++l) {
    LayerWeights& lw = layers[l];
    fill_const(act, lw.attn_norm, H, 1.f, stream);
    fill_const(act, lw.ffn_norm, H, 1.f, stream);
    rnd_lin(lw.qkv);
    rnd_lin(lw.o);
    rnd_lin(lw.gate_up);
    rnd_lin(lw.down);
  }
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  load.seconds = now_seconds() - t0;
}

// The batch-1 decode step: one decode row staged in fin (token, position, KV slot, the sequence's block
// table). 5 launches per layer: RMSNorm runs in the QKV / gate-up GEMVs' staging of x, RoPE and
// the KV append into the paged pool in the QKV GEMV's epilogue, the split-K attention reads K / V through the
// block table and merges its splits in its last block, SiLU-mul runs in the down GEMV's staging, and the
// residual adds in the o / down GEMVs' epilogues (x is updated in place). With pdl every kernel after the
// embedding may start while its predecessor drains. Reads its inputs from device memory only, so one captured
// graph serves every step. Leaves the logits in plogits row 0 and the argmax in pids[0].
void CudaLlama::Impl::forward_decode1() {
  if (quantized) return forward_decode1q();
  const int32_t* d_ids = fin;
  const int32_t* d_pos = fin + 1;
  const int32_t* d_slot = fin + 2;
  const int32_t* d_table = fin + 3;
  const float scale = 1.f / std::sqrt(float(hd));
  const int qd = nh * hd;
  // The measured winners (bench/cuda/NOTES.md, H100 / H200 ablations and per-GEMV sweeps): persistent GEMV
  // grids (without: -3%); 8 loads in flight per row for gate_up only (+1.1% tg128@512; for the others no
  // gain, 8 for all -5%, 2 for all -12%; L2::256B loads -3%); 8 MB of gate_up's weights prefetched into L2
  // while the o projection drains (+0.5% @512, +0.9% @4096; for the other GEMVs nothing, 24 / 48 MB for all
  // -6 / -9%).
  GemvFusion base;
  base.persistent = true;
  GemvFusion norm_attn = base, add = base, silu_add = base;
  norm_attn.prologue = GemvPrologue::kRmsNorm;
  norm_attn.eps = cfg.rms_eps;
  add.add_to_y = true;
  silu_add.prologue = GemvPrologue::kSiluMul;
  silu_add.add_to_y = true;
  GemvFusion gate_up_f = norm_attn;
  gate_up_f.wide = true;
  gate_up_f.prefetch_bytes = pdl ? size_t(8) << 20 : 0;
  embedding(act, d_ids, 1, embed, V, H, x, stream);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = layers[l];
    GemvFusion qkv_f = norm_attn;
    qkv_f.norm_weight = lw.attn_norm;
    qkv_f.rope_layout = cfg.rope_layout;
    qkv_f.rope_pos = d_pos;
    qkv_f.rope_slot = d_slot;
    qkv_f.rope_inv_freq = inv_freq;
    qkv_f.rope_nh = nh;
    qkv_f.rope_nkv = nkv;
    qkv_f.rope_hd = hd;
    qkv_f.rope_block_size = pbs;
    qkv_f.rope_q_out = q;
    qkv_f.rope_k_pool = kp_layer(l);
    qkv_f.rope_v_pool = vp_layer(l);
    qkv_f.w_fp8_scale = lw.qkv.s8;  // FP8 weights: their row scales (else null)
    gemv_fused(act, lw.qkv.p, x, qkv, false, 1, qkv_rows, H, qkv_f, stream, pdl);
    decode_attention(act, q, kp_layer(l), vp_layer(l), d_table, pbs, d_pos, nh, nkv, hd, max_ctx, scale,
                     attn_plan, part_o, part_stats, attn, stream, pdl, merge_counters);
    add.w_fp8_scale = lw.o.s8;
    gemv_fused(act, lw.o.p, attn, x, false, 1, H, qd, add, stream, pdl);
    gate_up_f.norm_weight = lw.ffn_norm;
    gate_up_f.w_fp8_scale = lw.gate_up.s8;
    gate_up_f.wide = !lw.gate_up.s8;  // FP8's wide variant needs 170 registers (1 block per SM)
    gemv_fused(act, lw.gate_up.p, x, gu, false, 1, 2 * I, H, gate_up_f, stream, pdl);
    silu_add.w_fp8_scale = lw.down.s8;
    gemv_fused(act, lw.down.p, gu, x, false, 1, H, I, silu_add, stream, pdl);
  }
  norm_attn.norm_weight = final_norm;
  norm_attn.w_fp8_scale = lm_head.s8;
  gemv_fused(act, lm_head.p, x, plogits, true, 1, V, H, norm_attn, stream, pdl);
  argmax(plogits, V, pids, stream, pdl, dh_pids);
}

// forward_decode1 with quantized weights: per layer the QKV qgemv (RMSNorm applied where x is quantized
// to int8), RoPE + KV append, the split-K attention, the o qgemv adding into x, the gate_up qgemv
// (RMSNorm), the down qgemv (SiLU-mul where its input is quantized, adding into x): 6 launches per layer
// (7 where q / k and v differ in type), plus 4 small input quantizations with opt.quantize_input_once (the
// default).
// With pdl (opt.quant_pdl on Hopper) every kernel after the embedding may start while its predecessor
// drains; each waits before it reads earlier output or writes.
void CudaLlama::Impl::forward_decode1q() {
  const int32_t* d_ids = fin;
  const int32_t* d_pos = fin + 1;
  const int32_t* d_slot = fin + 2;
  const int32_t* d_table = fin + 3;
  const float scale = 1.f / std::sqrt(float(hd));
  QGemvFusion norm, add, silu_add;
  norm.prologue = GemvPrologue::kRmsNorm;
  norm.eps = cfg.rms_eps;
  add.add_to_y = true;
  silu_add.prologue = GemvPrologue::kSiluMul;
  silu_add.add_to_y = true;
  embedding(act, d_ids, 1, embed, V, H, x, stream);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = layers[l];
    norm.norm_weight = lw.attn_norm;
    mmq(lw.qkv, x, qkv, norm);
    rope_store_kv_paged(act, cfg.rope_layout, qkv, d_pos, d_slot, inv_freq, 1, nh, nkv, hd, pbs, q,
                        kp_layer(l), vp_layer(l), stream, pdl);
    decode_attention(act, q, kp_layer(l), vp_layer(l), d_table, pbs, d_pos, nh, nkv, hd, max_ctx, scale,
                     attn_plan, part_o, part_stats, attn, stream, pdl, merge_counters);
    mmq(lw.o, attn, x, add);
    norm.norm_weight = lw.ffn_norm;
    mmq(lw.gate_up, x, gu, norm);
    mmq(lw.down, gu, x, silu_add);
  }
  if (lm_head.plain) {  // tied to the (dequantized) embedding
    GemvFusion fn;
    fn.prologue = GemvPrologue::kRmsNorm;
    fn.eps = cfg.rms_eps;
    fn.norm_weight = final_norm;
    fn.persistent = true;
    gemv_fused(act, lm_head.p, x, plogits, true, 1, V, H, fn, stream, pdl);
  } else if (lm_head.parts.size() == 1 && lm_head.parts[0].type != act) {
    QGemvFusion fl = norm;
    fl.norm_weight = final_norm;
    fl.y_f32 = true;
    mmq(lm_head, x, plogits, fl);
  } else {
    add_rmsnorm(act, x, nullptr, final_norm, xn, 1, H, cfg.rms_eps, stream);
    mm(lm_head, xn, plogits, true, 1);
  }
  argmax(plogits, V, pids, stream, pdl, dh_pids);
}

// The upload of fin must stay a full dependency of the first kernel (the embedding, launched without PDL):
// the QKV GEMV's RoPE epilogue and decode_attention read the position, slot and block table before their
// PDL wait, relying on fin being complete before any kernel of the step starts.
void CudaLlama::Impl::fast_step() {
  LLAMARUN_CUDA_CHECK(
      cudaMemcpyAsync(fin, h_fin, (3 + size_t(pmb)) * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  forward_decode1();
  if (!dh_pids)  // else the argmax wrote h_pids[0] itself: one copy node less per step
    LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(h_pids, pids, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
}

void CudaLlama::Impl::capture_fast_graph() {
  // With pdl, a driver that cannot capture or instantiate programmatic-launch edges gets a second capture
  // with plain launches.
  for (int attempt = 0; attempt < 2; ++attempt) {
    cudaGraph_t g = nullptr;
    LLAMARUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      fast_step();
    } catch (...) {
      cudaStreamEndCapture(stream, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      if (!pdl) throw;
      pdl = false;
      continue;
    }
    LLAMARUN_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
    cudaError_t err = cudaGraphInstantiate(&fast_graph, g, 0);
    cudaGraphDestroy(g);
    if (err == cudaSuccess) return;
    cudaGetLastError();
    fast_graph = nullptr;
    if (!pdl) LLAMARUN_CUDA_CHECK(err);
    pdl = false;
  }
}

CudaLlama::Impl::~Impl() {
  if (stream) cudaStreamSynchronize(stream);
  for (auto& [b, g] : bucket_graphs) cudaGraphExecDestroy(g);
  if (fast_graph) cudaGraphExecDestroy(fast_graph);
  if (h_fin) cudaFreeHost(h_fin);
  if (h_pin) cudaFreeHost(h_pin);
  if (h_pids) cudaFreeHost(h_pids);
  if (side_stream) cudaStreamSynchronize(side_stream);
  lt.reset();
  alloc.free_all();
  for (cudaEvent_t e : {ahead_fork, ahead_ready[0], ahead_ready[1], ahead_free[0], ahead_free[1]})
    if (e) cudaEventDestroy(e);
  if (side_stream) cudaStreamDestroy(side_stream);
  if (stream) cudaStreamDestroy(stream);
}

CudaLlama::CudaLlama(const LlamaConfig& config, const LlamaWeights& weights, const CudaLlamaOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  impl_->init_common(config, opt);
  impl_->load_weights(weights);
  impl_->mem.allocated = impl_->alloc.allocated();
}

namespace {
// The file the weights came from, for messages (in-memory maps: "weights").
std::string weights_origin(const WeightMap& wm) {
  for (const auto& [_, t] : wm.tensors)
    if (!t.file.empty()) return t.file;
  return "weights";
}
}  // namespace

CudaLlama::CudaLlama(const LlamaConfig& config, const WeightMap& weights, const CudaLlamaOptions& opt)
    : CudaLlama(config,
                bind_llama_weights(config, weights, detect_tensor_naming(weights, weights_origin(weights)),
                                   weights_origin(weights)),
                opt) {}

CudaLlama::CudaLlama(const LlamaConfig& config, uint64_t seed, const CudaLlamaOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  impl_->init_common(config, opt);
  impl_->random_weights(seed);
}

CudaLlama::~CudaLlama() = default;

int CudaLlama::max_context() const { return impl_->max_ctx; }
const LlamaConfig& CudaLlama::config() const { return impl_->cfg; }
DType CudaLlama::dtype() const { return impl_->act; }
CudaLoadStats CudaLlama::load_stats() const { return impl_->load; }
std::string CudaLlama::device_name() const { return impl_->device_name; }
bool CudaLlama::pdl_active() const { return impl_->pdl && impl_->fast_ok; }

CudaMemoryStats CudaLlama::memory_stats() const {
  CudaMemoryStats s = impl_->mem;
  s.allocated = impl_->alloc.allocated();
  s.peak = impl_->alloc.peak();
  return s;
}

size_t CudaLlama::weight_bytes_per_token() const {
  // Everything but the embedding table, of which one row is read (unless it is also the lm_head).
  const Impl& m = *impl_;
  return m.mem.weights - (m.cfg.tie_embeddings ? 0 : m.lin_bytes(m.V, m.H));
}

size_t CudaLlama::kv_bytes_per_token(int p) const {
  const Impl& m = *impl_;
  return 2 * size_t(m.L) * m.nkv * size_t(p + 1) * m.hd * m.kvsz;
}

// ---- serving: paged KV pool, varlen batches ----

namespace {
// Decode batches are padded up to one of these sizes, so a few captured graphs serve every batch (larger
// batches get a graph per size).
constexpr int kDecodeBuckets[] = {1,  2,   4,   8,   16,  24,  32,  48,  64,  80,
                                  96, 128, 160, 192, 224, 256, 320, 384, 448, 512};
int decode_bucket(int n) {
  for (int b : kDecodeBuckets)
    if (b >= n) return b;
  return n;
}
}  // namespace

CudaLlama::Impl::HostPin CudaLlama::Impl::host_pin() const {
  int32_t* h = h_pin;
  const size_t mm = size_t(mmax);
  return {h, h + mm, h + 2 * mm, h + 3 * mm, h + 4 * mm, h + 5 * mm, h + 5 * mm + pseqs};
}

void CudaLlama::Impl::pad_rows(int from, int to) {
  const HostPin hp = host_pin();
  for (int i = from; i < to; ++i) {
    hp.ids[i] = 0;
    hp.pos[i] = -1;
    hp.slot[i] = -1;
    hp.seq[i] = 0;
  }
}

void CudaLlama::Impl::upload_pin(int S) {
  const size_t n = 5 * size_t(mmax) + pseqs + size_t(std::max(S, 1)) * pmb;
  LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(pin, h_pin, n * 4, cudaMemcpyHostToDevice, stream));
}

int CudaLlama::init_paged(int block_size, int num_blocks, size_t kv_bytes) {
  Impl& m = *impl_;
  if (m.k_pool) fail("init_paged: the paged KV cache exists already");
  if (block_size < 1 || block_size > 1024) fail("init_paged: block_size ", block_size, " outside [1, 1024]");
  m.pbs = block_size;
  m.pmb = (m.max_ctx + block_size - 1) / block_size;
  const size_t per_block = 2 * size_t(m.L) * m.nkv * block_size * m.hd * m.kvsz;
  // Batch buffers first: the pool takes what is left.
  size_t before = m.alloc.allocated();
  m.pin = m.alloc.alloc_n<int32_t>(m.pin_ints(), "batch inputs");
  m.xg = m.alloc.alloc(m.esz * size_t(m.pseqs) * m.H, "logit rows x");
  m.dg = m.alloc.alloc(m.esz * size_t(m.pseqs) * m.H, "logit rows down");
  m.plogits = m.alloc.alloc_n<float>(size_t(m.pseqs) * m.V, "batch logits");
  m.pids = m.alloc.alloc_n<int32_t>(m.pseqs, "batch argmax");
  m.fin = m.alloc.alloc_n<int32_t>(3 + size_t(m.pmb), "batch-1 inputs");
  if (m.opt.paged_tc_prefill_rows > 0) {
    const size_t scratch = size_t(m.nkv) * m.max_ctx * m.hd * m.esz;
    m.k_scratch = m.alloc.alloc(scratch, "prefill K scratch");
    m.v_scratch = m.alloc.alloc(scratch, "prefill V scratch");
    // Finite contents: the tensor-core kernel may load (masked) positions past the chunk's end.
    LLAMARUN_CUDA_CHECK(cudaMemsetAsync(m.k_scratch, 0, scratch, m.stream));
    LLAMARUN_CUDA_CHECK(cudaMemsetAsync(m.v_scratch, 0, scratch, m.stream));
  }
  m.mem.activations += m.alloc.allocated() - before;
  LLAMARUN_CUDA_CHECK(cudaMallocHost(&m.h_pin, m.pin_ints() * sizeof(int32_t)));
  LLAMARUN_CUDA_CHECK(cudaMallocHost(&m.h_pids, size_t(m.pseqs) * sizeof(int32_t)));
  void* dh = nullptr;  // pinned memory is mapped into the device's address space where the driver allows
  if (m.opt.fast_token_direct && cudaHostGetDevicePointer(&dh, m.h_pids, 0) == cudaSuccess)
    m.dh_pids = static_cast<int32_t*>(dh);
  else
    cudaGetLastError();
  LLAMARUN_CUDA_CHECK(cudaMallocHost(&m.h_fin, (3 + size_t(m.pmb)) * sizeof(int32_t)));
  std::fill(m.h_fin, m.h_fin + 3 + m.pmb, 0);
  size_t nb = size_t(num_blocks);
  if (nb == 0) {
    if (kv_bytes > 0) {
      nb = kv_bytes / per_block;
    } else {
      // What is free, less a reserve for graphs, cuBLASLt and the CUDA context's growth.
      const size_t reserve = size_t(1536) << 20;
      const MemInfo mi = mem_info();
      nb = mi.free > reserve ? (mi.free - reserve) / per_block : 0;
    }
    if (nb == 0)
      fail("init_paged: not even one KV block (", format_bytes(per_block), " for ", block_size,
           " positions) fits: ", format_bytes(mem_info().free), " free on ", m.opt.device);
    nb = std::min<size_t>(nb, size_t(1) << 24);
  }
  require_fits(
      nb * per_block,
      detail::concat("paged KV cache of ", nb, " blocks x ", block_size, " positions on ", m.opt.device),
      size_t(256) << 20);
  m.pnb = int(nb);
  before = m.alloc.allocated();
  m.k_pool = m.alloc.alloc(nb * per_block / 2, "paged K cache");
  m.v_pool = m.alloc.alloc(nb * per_block / 2, "paged V cache");
  LLAMARUN_CUDA_CHECK(cudaMemsetAsync(m.k_pool, 0, nb * per_block / 2, m.stream));
  LLAMARUN_CUDA_CHECK(cudaMemsetAsync(m.v_pool, 0, nb * per_block / 2, m.stream));
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.mem.kv_cache = m.alloc.allocated() - before;
  if (m.opt.paged_warmup) warm_up_paged();
  return m.pnb;
}

// The staged batch (pin: ids, pos, slot, seq, rows, tables) through every layer; leaves the argmax of the
// R logit rows in pids and their logits in plogits. Reads its inputs from device memory only, so the
// launch sequence can be captured and replayed for another batch of the same T and R.
void CudaLlama::Impl::forward_varlen(int T, int R) {
  const int32_t* d_ids = pin;
  const int32_t* d_pos = pin + mmax;
  const int32_t* d_slot = pin + 2 * size_t(mmax);
  const int32_t* d_seq = pin + 3 * size_t(mmax);
  const int32_t* d_apos = pin + 4 * size_t(mmax);
  const int32_t* d_rows = pin + 5 * size_t(mmax);
  const int32_t* d_tables = d_rows + pseqs;
  const float scale = 1.f / std::sqrt(float(hd));
  const int qd = nh * hd;
  // FP8 weights: batches that take the FP8 GEMM (over 8 rows) get their inputs quantized by the norm and
  // SiLU kernels (opt.fp8_fused_act_quant; the attention output still through mm's fp8_quantize_rows).
  const bool f8 = fp8 && T > 8 && opt.fp8_fused_act_quant;
  ahead_begin(T);
  embedding(act, d_ids, T, embed, V, H, x, stream);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = layers[l];
    char* kp = kp_layer(l);
    char* vp = vp_layer(l);
    if (f8)  // FP8 GEMM inputs quantized inside their producers (x8 / x8s)
      add_rmsnorm_fp8(act, x, l == 0 ? nullptr : down, lw.attn_norm, T, H, cfg.rms_eps, x8, x8s, stream);
    else
      add_rmsnorm(act, x, l == 0 ? nullptr : down, lw.attn_norm, xn, T, H, cfg.rms_eps, stream);
    f8 ? mm_x8(lw.qkv, qkv, T) : mm(lw.qkv, xn, qkv, false, T);
    rope_store_kv_paged(act, cfg.rope_layout, qkv, d_pos, d_slot, inv_freq, T, nh, nkv, hd, pbs, q, kp, vp,
                        stream, false, opt.kv_fp8);
    paged_attention(act, q, kp, vp, d_tables, pmb, d_seq, d_apos, T, nh, nkv, hd, pbs, scale, attn, stream,
                    opt.kv_fp8);
    for (const PrefillChunk& c : tc_chunks) {
      gather_kv_pages(act, kp, vp, d_tables + size_t(c.seq) * pmb, c.start + c.n, nkv, hd, pbs, max_ctx,
                      k_scratch, v_scratch, stream, opt.kv_fp8);
      const size_t off = size_t(c.row0) * qd * esz;
      prefill_attention(act, static_cast<char*>(q) + off, k_scratch, v_scratch, c.n, c.start, nh, nkv, hd,
                        max_ctx, scale, static_cast<char*>(attn) + off, stream);
    }
    mm(lw.o, attn, o, false, T);
    if (f8) {
      add_rmsnorm_fp8(act, x, o, lw.ffn_norm, T, H, cfg.rms_eps, x8, x8s, stream);
      mm_x8(lw.gate_up, gu, T);
      silu_mul_fp8(act, gu, T, I, x8, x8s, stream);
      mm_x8(lw.down, down, T);
    } else {
      add_rmsnorm(act, x, o, lw.ffn_norm, xn, T, H, cfg.rms_eps, stream);
      mm(lw.gate_up, xn, gu, false, T);
      silu_mul(act, gu, mlp, T, I, stream);
      mm(lw.down, mlp, down, false, T);
    }
  }
  if (R == 0) return;  // a step of prefill chunks that sample nothing yet
  gather_rows(act, x, d_rows, R, H, xg, stream);
  gather_rows(act, down, d_rows, R, H, dg, stream);
  add_rmsnorm(act, xg, dg, final_norm, xn, R, H, cfg.rms_eps, stream);
  mm(lm_head, xn, plogits, true, R);
  argmax_rows(plogits, R, V, pids, stream);
}

void CudaLlama::forward_paged(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits) {
  Impl& m = *impl_;
  if (!m.k_pool) fail("forward_paged: call init_paged first");
  int cur_dev = -1;  // the engine calls from its own thread
  if (cudaGetDevice(&cur_dev) != cudaSuccess || cur_dev != m.device) set_device(m.device);
  const double t_host = now_seconds();
  const int T = b.size(), S = int(b.block_tables.size()), R = int(b.logit_rows.size());
  if (T == 0) return;
  if (T > m.mmax) fail("forward_paged: ", T, " tokens exceed paged_max_tokens ", m.mmax);
  if (S > m.pseqs || R > m.pseqs)
    fail("forward_paged: ", S, " sequences / ", R, " logit rows exceed paged_max_seqs ", m.pseqs);
  if (int(b.positions.size()) != T || int(b.seq_index.size()) != T)
    fail("forward_paged: tokens, positions and seq_index differ in length");
  // A decode-only batch (one token per sequence, each sampled) replays the graph of its bucket; one decode
  // row takes the fused batch-1 path.
  bool decode = S == T && R == T;
  for (int i = 0; decode && i < T; ++i) decode = b.seq_index[i] == i && b.logit_rows[i] == i;
  const bool fast = decode && T == 1 && m.fast_ok;
  const int TB =
      decode && !fast && m.opt.paged_graphs ? std::min(decode_bucket(T), std::min(m.mmax, m.pseqs)) : T;
  const Impl::HostPin hp = m.host_pin();
  int32_t *h_ids = hp.ids, *h_pos = hp.pos, *h_slot = hp.slot, *h_seq = hp.seq, *h_apos = hp.apos,
          *h_rows = hp.rows, *h_tab = hp.tab;
  for (int i = 0; i < T; ++i) {
    const int32_t id = b.tokens[i], p = b.positions[i], s = b.seq_index[i];
    if (id < 0 || id >= m.V) fail("forward_paged: token id ", id, " at row ", i, " outside [0, ", m.V, ")");
    if (s < 0 || s >= S) fail("forward_paged: row ", i, " names sequence ", s, " of ", S);
    if (p < 0 || p >= m.max_ctx) fail("forward_paged: position ", p, " outside the context of ", m.max_ctx);
    const auto& tab = b.block_tables[s];
    const size_t bi = size_t(p / m.pbs);
    if (bi >= tab.size()) fail("forward_paged: position ", p, " of sequence ", s, " has no KV block");
    const int32_t blk = tab[bi];
    if (blk < 0 || blk >= m.pnb) fail("forward_paged: KV block ", blk, " outside [0, ", m.pnb, ")");
    h_ids[i] = id;
    h_pos[i] = p;
    h_slot[i] = blk * m.pbs + p % m.pbs;
    h_seq[i] = s;
  }
  if (fast) {
    // The batch-1 path: token, position, slot and the sequence's block table go through their own small
    // buffer; the upload and the token's read-back are part of the captured graph.
    int32_t* hf = m.h_fin;
    hf[0] = h_ids[0];
    hf[1] = h_pos[0];
    hf[2] = h_slot[0];
    const auto& tab = b.block_tables[0];
    const size_t n = std::min(tab.size(), size_t(m.pmb));
    for (size_t j = 0; j < n; ++j) {
      if (tab[j] < 0 || tab[j] >= m.pnb)
        fail("forward_paged: KV block ", tab[j], " outside [0, ", m.pnb, ")");
      hf[3 + j] = tab[j];
    }
    m.paged_host_s += now_seconds() - t_host;
    if (m.opt.paged_graphs) {
      if (!m.fast_graph) m.capture_fast_graph();
      LLAMARUN_CUDA_CHECK(cudaGraphLaunch(m.fast_graph, m.stream));
    } else {
      m.fast_step();
    }
    ++m.fast_steps;
    if (!want_logits || want_logits[0])
      LLAMARUN_CUDA_CHECK(
          cudaMemcpyAsync(logits, m.plogits, size_t(m.V) * 4, cudaMemcpyDeviceToHost, m.stream));
    LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    ids[0] = m.h_pids[0];
    return;
  }
  m.pad_rows(T, TB);
  // Runs of rows of one sequence at consecutive positions, long enough for the tensor-core attention.
  std::copy(h_pos, h_pos + TB, h_apos);
  m.tc_chunks.clear();
  const int tc_min = decode ? 0 : m.opt.paged_tc_prefill_rows;
  for (int i = 0; tc_min > 0 && i < T;) {
    int e = i + 1;
    while (e < T && h_seq[e] == h_seq[i] && h_pos[e] == h_pos[e - 1] + 1) ++e;
    if (e - i >= tc_min) {
      m.tc_chunks.push_back({i, e - i, h_pos[i], h_seq[i]});
      std::fill(h_apos + i, h_apos + e, -1);
    }
    i = e;
  }
  for (int r = 0; r < R; ++r) {
    if (b.logit_rows[r] < 0 || b.logit_rows[r] >= T)
      fail("forward_paged: logit row ", b.logit_rows[r], " outside the batch");
    h_rows[r] = b.logit_rows[r];
  }
  for (int r = R; r < (decode ? TB : R); ++r) h_rows[r] = r;
  for (int s = 0; s < S; ++s) {
    const auto& tab = b.block_tables[s];
    const size_t n = std::min(tab.size(), size_t(m.pmb));
    for (size_t j = 0; j < n; ++j) {
      if (tab[j] < 0 || tab[j] >= m.pnb)
        fail("forward_paged: KV block ", tab[j], " outside [0, ", m.pnb, ")");
      h_tab[size_t(s) * m.pmb + j] = tab[j];
    }
    for (size_t j = n; j < size_t(m.pmb); ++j) h_tab[size_t(s) * m.pmb + j] = 0;
  }
  m.paged_host_s += now_seconds() - t_host;
  m.upload_pin(S);
  if (decode && m.opt.paged_graphs) {
    auto it = m.bucket_graphs.find(TB);
    if (it == m.bucket_graphs.end())
      m.capture_decode_graph(TB);  // its eager forward has run this batch
    else
      LLAMARUN_CUDA_CHECK(cudaGraphLaunch(it->second, m.stream));
  } else {
    m.forward_varlen(T, R);
  }
  LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.h_pids, m.pids, size_t(R) * 4, cudaMemcpyDeviceToHost, m.stream));
  // Logits of the rows that want them, in runs of consecutive rows.
  for (int r = 0; r < R;) {
    if (want_logits && !want_logits[r]) {
      ++r;
      continue;
    }
    int e = r + 1;
    while (e < R && (!want_logits || want_logits[e])) ++e;
    LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(logits + size_t(r) * m.V, m.plogits + size_t(r) * m.V,
                                        size_t(e - r) * m.V * 4, cudaMemcpyDeviceToHost, m.stream));
    r = e;
  }
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  std::copy(m.h_pids, m.h_pids + R, ids);
}

// The decode graph of bucket TB over the staged batch (pin): an eager forward first (cuBLASLt picks its
// algorithms outside the capture; it computes the batch), then the capture, kept in bucket_graphs.
void CudaLlama::Impl::capture_decode_graph(int TB) {
  forward_varlen(TB, TB);
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  LLAMARUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    forward_varlen(TB, TB);
  } catch (...) {
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  LLAMARUN_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
  cudaError_t err = cudaGraphInstantiate(&ge, g, 0);
  cudaGraphDestroy(g);
  LLAMARUN_CUDA_CHECK(err);
  bucket_graphs.emplace(TB, ge);
}

double CudaLlama::warm_up_paged() {
  Impl& m = *impl_;
  if (!m.k_pool) fail("warm_up_paged: call init_paged first");
  int cur_dev = -1;
  if (cudaGetDevice(&cur_dev) != cudaSuccess || cur_dev != m.device) set_device(m.device);
  const double t0 = now_seconds();
  // Every GEMM shape of a mixed step: the layer projections for batches above the GEMV's rows (their
  // inputs and outputs are the forward's own buffers; what they hold does not matter), the lm_head for up
  // to pseqs logit rows. One layer's weights stand for all (same shapes).
  const LayerWeights& lw = m.layers[0];
  for (int M = 9; M <= m.mmax; ++M) {  // up to 8 rows (up to qmax quantized) take GEMVs
    m.mm(lw.qkv, m.xn, m.qkv, false, M);
    m.mm(lw.o, m.attn, m.o, false, M);
    m.mm(lw.gate_up, m.xn, m.gu, false, M);
    m.mm(lw.down, m.mlp, m.down, false, M);
  }
  for (int R = 9; R <= m.pseqs; ++R) m.mm(m.lm_head, m.xn, m.plogits, true, R);
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  // The decode graphs, over a batch of padding rows (no position to attend to, no KV slot to store into).
  if (m.opt.paged_graphs) {
    m.tc_chunks.clear();  // decode batches have no prefill chunks (forward_varlen reads this list)
    // forward_paged pads a decode batch of T rows to min(decode_bucket(T), limit): those sizes, but one
    // row where the fast path takes it.
    const int limit = std::min(m.mmax, m.pseqs);
    const Impl::HostPin hp = m.host_pin();
    for (int b : kDecodeBuckets) {
      const int TB = std::min(b, limit);
      if (!(TB == 1 && m.fast_ok) && !m.bucket_graphs.count(TB)) {
        m.pad_rows(0, TB);
        std::copy(hp.pos, hp.pos + TB, hp.apos);
        for (int r = 0; r < TB; ++r) hp.rows[r] = r;
        std::fill(hp.tab, hp.tab + m.pmb, 0);  // sequence 0's table: never read
        m.upload_pin(1);
        m.capture_decode_graph(TB);
      }
      if (TB >= limit) break;
    }
    if (m.fast_ok && !m.fast_graph) m.capture_fast_graph();  // captured, not launched
  }
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.warmup_s = now_seconds() - t0;
  return m.warmup_s;
}

double CudaLlama::warmup_seconds() const { return impl_->warmup_s; }

int CudaLlama::paged_blocks() const { return impl_->pnb; }
int CudaLlama::paged_graph_count() const {
  return int(impl_->bucket_graphs.size()) + (impl_->fast_graph ? 1 : 0);
}
int64_t CudaLlama::fast_decode_steps() const { return impl_->fast_steps; }
double CudaLlama::paged_host_seconds() const { return impl_->paged_host_s; }

}  // namespace llamarun
