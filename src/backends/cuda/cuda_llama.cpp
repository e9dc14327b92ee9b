#include "backends/cuda/cuda_llama.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "formats/weight_map.h"
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

enum class Role { kAttnNorm, kQ, kK, kV, kO, kFfnNorm, kGate, kUp, kDown };

// Maps logical tensors to the names of one file family.
struct NameScheme {
  bool gguf = false;
  std::string embed() const { return gguf ? "token_embd.weight" : "model.embed_tokens.weight"; }
  std::string final_norm() const { return gguf ? "output_norm.weight" : "model.norm.weight"; }
  std::string lm_head() const { return gguf ? "output.weight" : "lm_head.weight"; }
  std::string layer(int i, Role r) const {
    static const char* hf[] = {
        "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
        "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
        "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight"};
    static const char* gg[] = {"attn_norm.weight", "attn_q.weight",      "attn_k.weight",
                               "attn_v.weight",    "attn_output.weight", "ffn_norm.weight",
                               "ffn_gate.weight",  "ffn_up.weight",      "ffn_down.weight"};
    return gguf ? detail::concat("blk.", i, ".", gg[int(r)])
                : detail::concat("model.layers.", i, ".", hf[int(r)]);
  }
};

struct LayerWeights {
  void* attn_norm = nullptr;  // [H]
  void* qkv = nullptr;        // [(nh + 2 nkv) hd, H]: q rows, then k rows, then v rows
  void* o = nullptr;          // [H, nh hd]
  void* ffn_norm = nullptr;   // [H]
  void* gate_up = nullptr;    // [2 I, H]: gate rows, then up rows
  void* down = nullptr;       // [H, I]
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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
  void* lm_head = nullptr;     // [V, H] (== embed when tied)
  std::vector<LayerWeights> layers;
  float* inv_freq = nullptr;  // [hd / 2]

  // KV cache: [L][nkv][max_ctx][hd] each.
  void* k_cache = nullptr;
  void* v_cache = nullptr;

  // Activations, sized for mmax rows.
  void* x = nullptr;        // [mmax, H] residual stream
  void* xn = nullptr;       // [mmax, H] normalised
  void* qkv = nullptr;      // [mmax, qkv_rows]
  void* q = nullptr;        // [mmax, nh hd] rotated queries
  void* attn = nullptr;     // [mmax, nh hd]
  void* o = nullptr;        // [mmax, H]
  void* gu = nullptr;       // [mmax, 2 I]
  void* mlp = nullptr;      // [mmax, I]
  void* down = nullptr;     // [mmax, H]
  float* logits = nullptr;  // [V]
  int32_t* ids = nullptr;   // [mmax]
  int32_t* pos = nullptr;   // [mmax]
  int32_t* step = nullptr;  // [2]: decode token, decode position (written before each graph replay)
  int32_t* next = nullptr;  // [1]: sampled token
  uint64_t* rng_counter = nullptr;
  int* merge_counters = nullptr;  // [nkv]: decode attention's fused merge (zero between launches)
  float* part_o = nullptr;
  float* part_stats = nullptr;
  DecodeAttnPlan attn_plan;
  void* workspace = nullptr;
  size_t workspace_bytes = 32u << 20;

  int32_t* h_io = nullptr;         // pinned: [0] token, [1] position, [2] result
  static constexpr int kRing = 4;  // decode_greedy: tokens in flight to the host
  int32_t* h_ring = nullptr;       // pinned [kRing]
  cudaEvent_t ring_ev[kRing] = {};

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t graph_exec = nullptr;

  // Serving (opt.paged): the paged pool and the varlen batch buffers.
  int pbs = 0, pnb = 0, pmb = 0;  // block size, blocks, block-table stride (blocks per sequence)
  int pseqs = 0;                  // most sequences (logit rows) per batch
  void* k_pool = nullptr;         // [L][nb][nkv][bs][hd]
  void* v_pool = nullptr;
  // Device batch inputs: ids [mmax] | pos [mmax] | slot [mmax] | seq [mmax] | apos [mmax] | rows [pseqs] |
  // tables. apos: the position paged_attention uses (-1 for the rows of chunks the tensor-core path takes).
  int32_t* pin = nullptr;
  int32_t* h_pin = nullptr;                      // pinned host mirror of pin
  void* xg = nullptr;                            // [pseqs, H] residual rows of the logit rows
  void* dg = nullptr;                            // [pseqs, H] their last down-projection rows
  float* plogits = nullptr;                      // [pseqs, V]
  int32_t* pids = nullptr;                       // [pseqs] argmax per logit row
  int32_t* h_pids = nullptr;                     // pinned
  std::map<int, cudaGraphExec_t> bucket_graphs;  // decode batch size -> graph
  void* k_scratch = nullptr;  // [nkv, max_ctx, hd]: one sequence's K / V for the tensor-core prefill path
  void* v_scratch = nullptr;
  struct PrefillChunk {
    int row0, n, start, seq;
  };
  std::vector<PrefillChunk> tc_chunks;  // this batch's chunks for the tensor-core path
  double paged_host_s = 0;              // forward_paged's host preparation, total

  int cur_pos = 0;
  bool fused_decode = true;  // opt.fuse_decode and the fused GEMV's 48 KB staging limit
  bool pdl = false;          // opt.pdl on a Hopper (cc >= 9) GPU: decode kernels overlap their neighbours
  CudaLoadStats load;
  CudaMemoryStats mem;

  void init_common(const LlamaConfig& c, const CudaLlamaOptions& o);
  void check_fits(size_t extra);  // extra: transient buffers (upload staging)
  void allocate(size_t extra = 0);
  void load_weights(const WeightMap& wm);
  void random_weights(uint64_t seed);
  void forward(int M, bool decode, int start);
  void run_decode();
  void capture_graph();
  // The batch staged in pin: T tokens, R logit rows, tc_chunks through the tensor-core attention.
  void forward_varlen(int T, int R);
  size_t pin_ints() const { return 5 * size_t(mmax) + pseqs + size_t(pseqs) * pmb; }
  size_t pool_layer_bytes() const { return size_t(pnb) * nkv * pbs * hd * esz; }
  void start_step(int32_t id, const char* what);  // validates, uploads (token, position), runs the step
  int32_t finish_step();                          // copies the chosen token back, advances the position
  ~Impl();

  size_t lin_bytes(size_t rows, size_t cols) const { return rows * cols * esz; }
  char* kc_layer(int l) const { return static_cast<char*>(k_cache) + size_t(l) * nkv * max_ctx * hd * esz; }
  char* vc_layer(int l) const { return static_cast<char*>(v_cache) + size_t(l) * nkv * max_ctx * hd * esz; }
  size_t weight_bytes() const {
    size_t per_layer = lin_bytes(qkv_rows, H) + lin_bytes(H, size_t(nh) * hd) + lin_bytes(2 * size_t(I), H) +
                       lin_bytes(H, I) + 2 * lin_bytes(1, H);
    return size_t(L) * per_layer + lin_bytes(V, H) * (cfg.tie_embeddings ? 1 : 2) + lin_bytes(1, H);
  }
  size_t kv_bytes() const { return opt.paged ? 0 : 2 * size_t(L) * nkv * max_ctx * hd * esz; }
  size_t act_bytes() const {
    size_t m = mmax;
    size_t b = esz * m * (3 * size_t(H) + qkv_rows + 2 * size_t(nh) * hd + 2 * size_t(I) + I + H);
    b += 4 * size_t(V) + 8 * m + 64 + 4 * size_t(nkv) + 256 +
         (decode_attn_partial_floats(attn_plan, nh, hd) + decode_attn_stats_floats(attn_plan, nh)) * 4;
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
  if (o.max_prefill_chunk <= 0) fail("CudaLlama: max_prefill_chunk must be positive");
  qkv_rows = (nh + 2 * nkv) * hd;
  max_ctx = o.max_context;
  mmax = std::min(o.max_prefill_chunk, max_ctx);
  if (o.paged) {
    if (o.paged_max_tokens <= 0 || o.paged_max_seqs <= 0)
      fail("CudaLlama: paged_max_tokens and paged_max_seqs must be positive");
    mmax = o.paged_max_tokens;
    pseqs = std::min(o.paged_max_seqs, o.paged_max_tokens);
  }
  esz = 2;
  fused_decode = o.fuse_decode && size_t(std::max({H, I, nh * hd})) * 2 <= size_t(kGemvStageBytes);

  device = parse_device(o.device);
  set_device(device);
  DeviceInfo di = device_info(device);
  device_name = di.name;
  sm_count = di.sm_count;
  pdl = o.pdl && di.cc_major >= 9;
  attn_plan = make_decode_attn_plan(nkv, max_ctx, sm_count);
  LLAMARUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  LLAMARUN_CUDA_CHECK(cudaMallocHost(&h_io, 4 * sizeof(int32_t)));
}

void CudaLlama::Impl::check_fits(size_t extra) {
  size_t w = weight_bytes(), kv = kv_bytes(), a = act_bytes();
  require_fits(w + kv + a + workspace_bytes + extra,
               detail::concat("model on ", opt.device, " (", device_name, ": weights ", format_bytes(w),
                              ", KV cache ", format_bytes(kv), " for ", max_ctx, " positions, activations ",
                              format_bytes(a), ", workspace ", format_bytes(workspace_bytes), ")"),
               size_t(64) << 20);
}

void CudaLlama::Impl::allocate(size_t extra) {
  check_fits(extra);
  layers.resize(L);
  size_t before = alloc.allocated();
  embed = alloc.alloc(lin_bytes(V, H), "token embedding");
  final_norm = alloc.alloc(lin_bytes(1, H), "final norm");
  lm_head = cfg.tie_embeddings ? embed : alloc.alloc(lin_bytes(V, H), "lm_head");
  for (int l = 0; l < L; ++l) {
    LayerWeights& lw = layers[l];
    std::string n = detail::concat("layer ", l, " ");
    lw.attn_norm = alloc.alloc(lin_bytes(1, H), n + "attn_norm");
    lw.qkv = alloc.alloc(lin_bytes(qkv_rows, H), n + "qkv");
    lw.o = alloc.alloc(lin_bytes(H, size_t(nh) * hd), n + "o_proj");
    lw.ffn_norm = alloc.alloc(lin_bytes(1, H), n + "ffn_norm");
    lw.gate_up = alloc.alloc(lin_bytes(2 * size_t(I), H), n + "gate_up");
    lw.down = alloc.alloc(lin_bytes(H, I), n + "down_proj");
  }
  mem.weights = alloc.allocated() - before;
  before = alloc.allocated();
  if (kv_bytes() > 0) {
    k_cache = alloc.alloc(kv_bytes() / 2, "K cache");
    v_cache = alloc.alloc(kv_bytes() / 2, "V cache");
  }
  mem.kv_cache = alloc.allocated() - before;
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
  logits = alloc.alloc_n<float>(V, "logits");
  ids = alloc.alloc_n<int32_t>(m, "ids");
  pos = alloc.alloc_n<int32_t>(m, "positions");
  step = alloc.alloc_n<int32_t>(2, "decode step");
  next = alloc.alloc_n<int32_t>(1, "next token");
  rng_counter = alloc.alloc_n<uint64_t>(1, "rng counter");
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
  LLAMARUN_CUDA_CHECK(cudaMemset(rng_counter, 0, 8));
  LLAMARUN_CUDA_CHECK(cudaMemset(merge_counters, 0, sizeof(int) * nkv));
  load.device_weight_bytes = mem.weights;
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
  // Copies all of t (numel values) into dst (act dtype), converting on the GPU when t.dtype != act.
  void upload(const TensorInfo& t, void* dst) {
    const bool direct = t.dtype == act_;
    const size_t bb = dtype_block_bytes(t.dtype);
    const int64_t be = dtype_block_size(t.dtype);
    const int64_t nblocks = t.numel() / be;
    if (t.nbytes < size_t(nblocks) * bb)
      fail(t.file, ": tensor '", t.name, "' holds ", t.nbytes, " bytes, fewer than its shape needs");
    // The GPU converter knows F32/F16/BF16/Q8_0/Q4_0/Q4_1; other block types are dequantised to f32
    // on the host (dequantize_row, a chunk at a time into the pinned buffer) and converted from f32.
    const bool host_deq = dtype_is_quantized(t.dtype) && t.dtype != DType::Q8_0 && t.dtype != DType::Q4_0 &&
                          t.dtype != DType::Q4_1;
    const int64_t per_chunk = int64_t(staging_ / (host_deq ? size_t(be) * 4 : bb));
    const auto* src = static_cast<const uint8_t*>(t.data);
    for (int64_t b0 = 0; b0 < nblocks; b0 += per_chunk) {
      int64_t nb = std::min(per_chunk, nblocks - b0);
      size_t bytes = size_t(nb) * bb;
      int k = turn_;
      turn_ ^= 1;
      LLAMARUN_CUDA_CHECK(cudaEventSynchronize(done_[k]));  // buffer k free again
      char* out = static_cast<char*>(dst) + size_t(b0 * be) * 2;
      if (host_deq) {
        dequantize_row(t.dtype, src + size_t(b0) * bb, static_cast<float*>(host_[k]), nb * be);
        LLAMARUN_CUDA_CHECK(
            cudaMemcpyAsync(dev_[k], host_[k], size_t(nb * be) * 4, cudaMemcpyHostToDevice, stream_));
        convert_to_act(act_, DType::F32, dev_[k], out, nb * be, stream_);
      } else if (direct) {
        std::memcpy(host_[k], src + size_t(b0) * bb, bytes);
        LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(out, host_[k], bytes, cudaMemcpyHostToDevice, stream_));
      } else {
        std::memcpy(host_[k], src + size_t(b0) * bb, bytes);
        LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(dev_[k], host_[k], bytes, cudaMemcpyHostToDevice, stream_));
        convert_to_act(act_, t.dtype, dev_[k], out, nb * be, stream_);
      }
      LLAMARUN_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
      bytes_ += bytes;
    }
  }
  size_t bytes() const { return bytes_; }

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

const TensorInfo& get_checked(const WeightMap& wm, const std::string& name, std::vector<int64_t> shape) {
  const TensorInfo& t = wm.get(name);
  bool ok = t.shape == shape;
  // 1-D norms may come as {H} or {1, H}; accept equal element counts for vectors only.
  if (!ok && shape.size() == 1 && t.numel() == shape[0]) ok = true;
  if (!ok) {
    std::string want, got;
    for (auto d : shape) want += detail::concat(want.empty() ? "" : ", ", d);
    for (auto d : t.shape) got += detail::concat(got.empty() ? "" : ", ", d);
    fail(t.file.empty() ? std::string("weights") : t.file, ": tensor '", name, "' has shape [", got,
         "], expected [", want, "]");
  }
  if (dtype_is_quantized(t.dtype) && t.numel() % kQuantBlock)
    fail(t.file, ": tensor '", name, "' of ", dtype_name(t.dtype), " has ", t.numel(),
         " values, not whole blocks");
  return t;
}

}  // namespace

void CudaLlama::Impl::load_weights(const WeightMap& wm) {
  NameScheme ns;
  if (wm.find("token_embd.weight"))
    ns.gguf = true;
  else if (!wm.find("model.embed_tokens.weight"))
    fail(
        "weights: neither 'model.embed_tokens.weight' (Hugging Face) nor 'token_embd.weight' (GGUF) is "
        "present");
  if (!cfg.tie_embeddings && !wm.find(ns.lm_head())) cfg.tie_embeddings = true;  // no lm_head: tied
  const size_t staging = std::max<size_t>(opt.staging_bytes, 1u << 20);
  allocate(2 * staging);
  double t0 = now_s();
  {
    Uploader up(alloc, stream, act, staging);
    int64_t h = H, inter = I, qd = int64_t(nh) * hd, kd = int64_t(nkv) * hd;
    up.upload(get_checked(wm, ns.embed(), {V, h}), embed);
    up.upload(get_checked(wm, ns.final_norm(), {h}), final_norm);
    if (!cfg.tie_embeddings) up.upload(get_checked(wm, ns.lm_head(), {V, h}), lm_head);
    for (int l = 0; l < L; ++l) {
      LayerWeights& lw = layers[l];
      char* qkvp = static_cast<char*>(lw.qkv);
      char* gup = static_cast<char*>(lw.gate_up);
      up.upload(get_checked(wm, ns.layer(l, Role::kAttnNorm), {h}), lw.attn_norm);
      up.upload(get_checked(wm, ns.layer(l, Role::kQ), {qd, h}), qkvp);
      up.upload(get_checked(wm, ns.layer(l, Role::kK), {kd, h}), qkvp + lin_bytes(qd, h));
      up.upload(get_checked(wm, ns.layer(l, Role::kV), {kd, h}), qkvp + lin_bytes(qd + kd, h));
      up.upload(get_checked(wm, ns.layer(l, Role::kO), {h, qd}), lw.o);
      up.upload(get_checked(wm, ns.layer(l, Role::kFfnNorm), {h}), lw.ffn_norm);
      up.upload(get_checked(wm, ns.layer(l, Role::kGate), {inter, h}), gup);
      up.upload(get_checked(wm, ns.layer(l, Role::kUp), {inter, h}), gup + lin_bytes(inter, h));
      up.upload(get_checked(wm, ns.layer(l, Role::kDown), {h, inter}), lw.down);
    }
    LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(stream));
    load.host_bytes = up.bytes();
  }
  load.seconds = now_s() - t0;
  load.gb_per_s = load.seconds > 0 ? double(load.host_bytes) / load.seconds / 1e9 : 0;
}

void CudaLlama::Impl::random_weights(uint64_t seed) {
  allocate();
  double t0 = now_s();
  uint64_t s = seed * 0x100000001b3ull + 17;
  auto rnd = [&](void* p, size_t rows, size_t cols) {
    fill_random(act, p, int64_t(rows * cols), std::sqrt(3.f / float(cols)), s++, stream);
  };
  fill_random(act, embed, int64_t(V) * H, 1.f, s++, stream);
  fill_const(act, final_norm, H, 1.f, stream);
  if (!cfg.tie_embeddings) rnd(lm_head, V, H);
  for (int l = 0; l < L; ++l) {
    LayerWeights& lw = layers[l];
    fill_const(act, lw.attn_norm, H, 1.f, stream);
    fill_const(act, lw.ffn_norm, H, 1.f, stream);
    rnd(lw.qkv, qkv_rows, H);
    rnd(lw.o, H, size_t(nh) * hd);
    rnd(lw.gate_up, 2 * size_t(I), H);
    rnd(lw.down, H, I);
  }
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  load.seconds = now_s() - t0;
}

// The forward pass over M tokens already placed in ids/pos (prefill, positions start..start+M-1) or over
// the one decode token in step[0] at position step[1] (decode: reads everything from device memory, so
// the sequence can be captured once and replayed). Leaves the last token's logits in `logits`.
void CudaLlama::Impl::forward(int M, bool decode, int start) {
  const int32_t* tok = decode ? step : ids;
  const int32_t* p = decode ? step + 1 : pos;
  const float scale = 1.f / std::sqrt(float(hd));
  const int qd = nh * hd;
  embedding(act, tok, M, embed, V, H, x, stream);
  if (decode && fused_decode) {
    // 7 launches per layer: RMSNorm runs in the QKV / gate-up GEMVs' staging of x, SiLU-mul in the down
    // GEMV's, and the residual adds in the o / down GEMVs' epilogues (x is updated in place). With pdl,
    // every kernel after the embedding may start while its predecessor drains (GEMVs prefetch weights).
    // With fuse_rope_attn, 5: RoPE and the KV append run in the QKV GEMV's epilogue and the attention's
    // split merge in its last block.
    GemvFusion base;
    base.persistent = opt.persistent_gemv;
    base.blocks_per_sm = opt.gemv_blocks_per_sm;
    base.wide = opt.gemv_wide;
    base.narrow = opt.gemv_narrow;
    base.l2_256 = opt.gemv_l2_256;
    base.prefetch_bytes = pdl ? size_t(std::max(opt.gemv_prefetch_mb, 0)) << 20 : 0;
    GemvFusion norm_attn = base, add = base, silu_add = base;
    norm_attn.prologue = GemvPrologue::kRmsNorm;
    norm_attn.eps = cfg.rms_eps;
    add.add_to_y = true;
    silu_add.prologue = GemvPrologue::kSiluMul;
    silu_add.add_to_y = true;
    const bool fuse2 = opt.fuse_rope_attn;
    auto variant = [&](GemvFusion f, unsigned bit) {  // the per-GEMV load variants
      f.wide = f.wide || (opt.gemv_wide_mask & bit);
      f.l2_256 = f.l2_256 || (opt.gemv_l2_mask & bit);
      if (opt.gemv_prefetch_mask && !(opt.gemv_prefetch_mask & bit)) f.prefetch_bytes = 0;
      return f;
    };
    for (int l = 0; l < L; ++l) {
      const LayerWeights& lw = layers[l];
      GemvFusion qkv_f = norm_attn;
      qkv_f.norm_weight = lw.attn_norm;
      if (fuse2) {
        qkv_f.rope_layout = cfg.rope_layout;
        qkv_f.rope_pos = p;
        qkv_f.rope_inv_freq = inv_freq;
        qkv_f.rope_nh = nh;
        qkv_f.rope_nkv = nkv;
        qkv_f.rope_hd = hd;
        qkv_f.rope_max_ctx = max_ctx;
        qkv_f.rope_q_out = q;
        qkv_f.rope_k_cache = kc_layer(l);
        qkv_f.rope_v_cache = vc_layer(l);
      }
      gemv_fused(act, lw.qkv, x, qkv, false, 1, qkv_rows, H, variant(qkv_f, 1), stream, pdl);
      if (!fuse2)
        rope_store_kv(act, cfg.rope_layout, qkv, p, inv_freq, 1, nh, nkv, hd, max_ctx, q, kc_layer(l),
                      vc_layer(l), stream, pdl);
      decode_attention(act, q, kc_layer(l), vc_layer(l), p, nh, nkv, hd, max_ctx, scale, attn_plan, part_o,
                       part_stats, attn, stream, pdl, fuse2 ? merge_counters : nullptr);
      gemv_fused(act, lw.o, attn, x, false, 1, H, qd, variant(add, 2), stream, pdl);
      norm_attn.norm_weight = lw.ffn_norm;
      gemv_fused(act, lw.gate_up, x, gu, false, 1, 2 * I, H, variant(norm_attn, 4), stream, pdl);
      gemv_fused(act, lw.down, gu, x, false, 1, H, I, variant(silu_add, 8), stream, pdl);
    }
    norm_attn.norm_weight = final_norm;
    gemv_fused(act, lm_head, x, logits, true, 1, V, H, variant(norm_attn, 16), stream, pdl);
    argmax(logits, V, next, stream, pdl, step);  // step: the next replay's input (decode_greedy)
    return;
  }
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = layers[l];
    add_rmsnorm(act, x, l == 0 ? nullptr : down, lw.attn_norm, xn, M, H, cfg.rms_eps, stream);
    linear(*lt, act, lw.qkv, xn, qkv, false, M, qkv_rows, H, stream);
    rope_store_kv(act, cfg.rope_layout, qkv, p, inv_freq, M, nh, nkv, hd, max_ctx, q, kc_layer(l),
                  vc_layer(l), stream);
    if (decode)
      decode_attention(act, q, kc_layer(l), vc_layer(l), p, nh, nkv, hd, max_ctx, scale, attn_plan, part_o,
                       part_stats, attn, stream);
    else
      prefill_attention(act, q, kc_layer(l), vc_layer(l), M, start, nh, nkv, hd, max_ctx, scale, attn,
                        stream);
    linear(*lt, act, lw.o, attn, o, false, M, H, qd, stream);
    add_rmsnorm(act, x, o, lw.ffn_norm, xn, M, H, cfg.rms_eps, stream);
    linear(*lt, act, lw.gate_up, xn, gu, false, M, 2 * I, H, stream);
    silu_mul(act, gu, mlp, M, I, stream);
    linear(*lt, act, lw.down, mlp, down, false, M, H, I, stream);
  }
  // Only the last row's logits are needed.
  size_t last = size_t(M - 1) * H * esz;
  add_rmsnorm(act, static_cast<char*>(x) + last, static_cast<char*>(down) + last, final_norm, xn, 1, H,
              cfg.rms_eps, stream);
  gemv(act, lm_head, xn, logits, true, 1, V, H, stream);
  if (decode) argmax(logits, V, next, stream, false, step);
}

void CudaLlama::Impl::capture_graph() {
  // With pdl, a driver that cannot capture or instantiate programmatic-launch edges gets a second
  // capture with plain launches.
  for (int attempt = 0; attempt < 2; ++attempt) {
    LLAMARUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      forward(1, true, 0);
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      if (!pdl) throw;
      pdl = false;
      continue;
    }
    LLAMARUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaError_t err = cudaGraphInstantiate(&graph_exec, graph, 0);
    if (err == cudaSuccess) return;
    cudaGetLastError();
    cudaGraphDestroy(graph);
    graph = nullptr;
    graph_exec = nullptr;
    if (!pdl) LLAMARUN_CUDA_CHECK(err);
    pdl = false;
  }
}

void CudaLlama::Impl::run_decode() {
  if (opt.use_graph) {
    if (!graph_exec) capture_graph();
    LLAMARUN_CUDA_CHECK(cudaGraphLaunch(graph_exec, stream));
  } else {
    forward(1, true, 0);
  }
}

CudaLlama::Impl::~Impl() {
  if (stream) cudaStreamSynchronize(stream);
  for (cudaEvent_t& e : ring_ev)
    if (e) cudaEventDestroy(e);
  if (h_ring) cudaFreeHost(h_ring);
  for (auto& [b, g] : bucket_graphs) cudaGraphExecDestroy(g);
  if (h_pin) cudaFreeHost(h_pin);
  if (h_pids) cudaFreeHost(h_pids);
  if (graph_exec) cudaGraphExecDestroy(graph_exec);
  if (graph) cudaGraphDestroy(graph);
  lt.reset();
  alloc.free_all();
  if (h_io) cudaFreeHost(h_io);
  if (stream) cudaStreamDestroy(stream);
}

CudaLlama::CudaLlama(const LlamaConfig& config, const WeightMap& weights, const CudaLlamaOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  impl_->init_common(config, opt);
  impl_->load_weights(weights);
  impl_->mem.allocated = impl_->alloc.allocated();
}

CudaLlama::CudaLlama(const LlamaConfig& config, uint64_t seed, const CudaLlamaOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  impl_->init_common(config, opt);
  impl_->random_weights(seed);
}

CudaLlama::~CudaLlama() = default;

std::vector<float> CudaLlama::prefill(const int32_t* tokens, int n) {
  Impl& m = *impl_;
  if (m.opt.paged) fail("prefill: this model serves a paged KV cache (use forward_paged)");
  if (n <= 0) fail("prefill: empty prompt");
  if (m.cur_pos + n > m.max_ctx)
    fail("prefill: ", n, " tokens at position ", m.cur_pos, " exceed the context of ", m.max_ctx,
         " positions");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.V)
      fail("prefill: token id ", tokens[i], " at index ", i, " is outside the vocabulary [0, ", m.V, ")");
  std::vector<int32_t> pbuf(std::min(n, m.mmax));
  for (int done = 0; done < n;) {
    int c = std::min(m.mmax, n - done);
    for (int i = 0; i < c; ++i) pbuf[i] = m.cur_pos + i;
    LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.ids, tokens + done, c * 4, cudaMemcpyHostToDevice, m.stream));
    LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.pos, pbuf.data(), c * 4, cudaMemcpyHostToDevice, m.stream));
    m.forward(c, false, m.cur_pos);
    LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // pbuf is reused
    m.cur_pos += c;
    done += c;
  }
  std::vector<float> out(m.V);
  LLAMARUN_CUDA_CHECK(cudaMemcpy(out.data(), m.logits, size_t(m.V) * 4, cudaMemcpyDeviceToHost));
  return out;
}

void CudaLlama::Impl::start_step(int32_t id, const char* what) {
  Impl& m = *this;
  if (m.opt.paged) fail(what, ": this model serves a paged KV cache (use forward_paged)");
  if (m.cur_pos >= m.max_ctx) fail(what, ": the context of ", m.max_ctx, " positions is full");
  if (id < 0 || id >= m.V) fail(what, ": token id ", id, " is outside the vocabulary [0, ", m.V, ")");
  m.h_io[0] = id;
  m.h_io[1] = m.cur_pos;
  LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.step, m.h_io, 8, cudaMemcpyHostToDevice, m.stream));
  m.run_decode();
}
int32_t CudaLlama::Impl::finish_step() {
  Impl& m = *this;
  LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.h_io + 2, m.next, 4, cudaMemcpyDeviceToHost, m.stream));
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.cur_pos++;
  return m.h_io[2];
}

int32_t CudaLlama::decode_step(int32_t id) {
  impl_->start_step(id, "decode_step");
  return impl_->finish_step();
}

int CudaLlama::decode_greedy(int32_t id, int max_tokens, const std::function<bool(int32_t)>& on_token) {
  Impl& m = *impl_;
  if (max_tokens <= 0) return 0;
  m.start_step(id, "decode_greedy");  // validates, uploads (id, position), runs the first step
  if (!m.h_ring) {
    LLAMARUN_CUDA_CHECK(cudaMallocHost(&m.h_ring, Impl::kRing * sizeof(int32_t)));
    for (cudaEvent_t& e : m.ring_ev)
      LLAMARUN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  // Each step appends one position; the graph's argmax feeds the token and position of the next one.
  const int n = std::min(max_tokens, m.max_ctx - m.cur_pos);
  constexpr int kAhead = 2;  // steps queued ahead of the host (< kRing)
  int launched = 0, delivered = 0;
  auto fetch = [&] {  // the token of step `launched` to the host, then the event that says it is there
    const int k = launched % Impl::kRing;
    LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.h_ring + k, m.next, 4, cudaMemcpyDeviceToHost, m.stream));
    LLAMARUN_CUDA_CHECK(cudaEventRecord(m.ring_ev[k], m.stream));
    ++launched;
  };
  fetch();  // step 0 ran in start_step
  while (launched < std::min(n, kAhead)) {
    m.run_decode();
    fetch();
  }
  while (delivered < launched) {
    const int k = delivered % Impl::kRing;
    LLAMARUN_CUDA_CHECK(cudaEventSynchronize(m.ring_ev[k]));
    ++delivered;
    m.cur_pos++;  // the step's input is in the cache
    if (!on_token(m.h_ring[k])) break;
    if (launched < n) {
      m.run_decode();
      fetch();
    }
  }
  LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  return delivered;
}

std::vector<float> CudaLlama::decode_step_logits(int32_t id) {
  Impl& m = *impl_;
  m.start_step(id, "decode_step_logits");
  m.finish_step();
  std::vector<float> out(m.V);
  LLAMARUN_CUDA_CHECK(cudaMemcpy(out.data(), m.logits, size_t(m.V) * 4, cudaMemcpyDeviceToHost));
  return out;
}

int32_t CudaLlama::decode_step_sample(int32_t id, const CudaSampling& s) {
  Impl& m = *impl_;
  m.start_step(id, "decode_step_sample");
  sample_top_k_top_p(m.logits, m.V, s.temperature, s.top_k, s.top_p, s.seed, m.rng_counter, m.next, m.stream);
  return m.finish_step();
}

void CudaLlama::reset() { impl_->cur_pos = 0; }
void CudaLlama::reset_sample_counter() {
  LLAMARUN_CUDA_CHECK(cudaMemsetAsync(impl_->rng_counter, 0, sizeof(uint64_t), impl_->stream));
}
void CudaLlama::truncate(int p) {
  if (p < 0 || p > impl_->cur_pos) fail("truncate: position ", p, " outside [0, ", impl_->cur_pos, "]");
  impl_->cur_pos = p;
}
int CudaLlama::position() const { return impl_->cur_pos; }
int CudaLlama::max_context() const { return impl_->max_ctx; }
const LlamaConfig& CudaLlama::config() const { return impl_->cfg; }
DType CudaLlama::dtype() const { return impl_->act; }
CudaLoadStats CudaLlama::load_stats() const { return impl_->load; }
std::string CudaLlama::device_name() const { return impl_->device_name; }
bool CudaLlama::pdl_active() const { return impl_->pdl && impl_->fused_decode; }

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
  return 2 * size_t(m.L) * m.nkv * size_t(p + 1) * m.hd * m.esz;
}

// ---- serving: paged KV pool, varlen batches ----

namespace {
// Decode batches are padded up to one of these sizes, so a few captured graphs serve every batch.
int decode_bucket(int n) {
  static const int kBuckets[] = {1,  2,   4,   8,   16,  24,  32,  48,  64,  80,
                                 96, 128, 160, 192, 224, 256, 320, 384, 448, 512};
  for (int b : kBuckets)
    if (b >= n) return b;
  return n;
}
}  // namespace

int CudaLlama::init_paged(int block_size, int num_blocks, size_t kv_bytes) {
  Impl& m = *impl_;
  if (!m.opt.paged) fail("init_paged: the model was not created with CudaLlamaOptions::paged");
  if (m.k_pool) fail("init_paged: the paged KV cache exists already");
  if (block_size < 1 || block_size > 1024) fail("init_paged: block_size ", block_size, " outside [1, 1024]");
  m.pbs = block_size;
  m.pmb = (m.max_ctx + block_size - 1) / block_size;
  const size_t per_block = 2 * size_t(m.L) * m.nkv * block_size * m.hd * m.esz;
  // Batch buffers first: the pool takes what is left.
  size_t before = m.alloc.allocated();
  m.pin = m.alloc.alloc_n<int32_t>(m.pin_ints(), "batch inputs");
  m.xg = m.alloc.alloc(m.esz * size_t(m.pseqs) * m.H, "logit rows x");
  m.dg = m.alloc.alloc(m.esz * size_t(m.pseqs) * m.H, "logit rows down");
  m.plogits = m.alloc.alloc_n<float>(size_t(m.pseqs) * m.V, "batch logits");
  m.pids = m.alloc.alloc_n<int32_t>(m.pseqs, "batch argmax");
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
  embedding(act, d_ids, T, embed, V, H, x, stream);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& lw = layers[l];
    char* kp = static_cast<char*>(k_pool) + size_t(l) * pool_layer_bytes();
    char* vp = static_cast<char*>(v_pool) + size_t(l) * pool_layer_bytes();
    add_rmsnorm(act, x, l == 0 ? nullptr : down, lw.attn_norm, xn, T, H, cfg.rms_eps, stream);
    linear(*lt, act, lw.qkv, xn, qkv, false, T, qkv_rows, H, stream);
    rope_store_kv_paged(act, cfg.rope_layout, qkv, d_pos, d_slot, inv_freq, T, nh, nkv, hd, pbs, q, kp, vp,
                        stream);
    paged_attention(act, q, kp, vp, d_tables, pmb, d_seq, d_apos, T, nh, nkv, hd, pbs, scale, attn, stream);
    for (const PrefillChunk& c : tc_chunks) {
      gather_kv_pages(act, kp, vp, d_tables + size_t(c.seq) * pmb, c.start + c.n, nkv, hd, pbs, max_ctx,
                      k_scratch, v_scratch, stream);
      const size_t off = size_t(c.row0) * qd * esz;
      prefill_attention(act, static_cast<char*>(q) + off, k_scratch, v_scratch, c.n, c.start, nh, nkv, hd,
                        max_ctx, scale, static_cast<char*>(attn) + off, stream);
    }
    linear(*lt, act, lw.o, attn, o, false, T, H, qd, stream);
    add_rmsnorm(act, x, o, lw.ffn_norm, xn, T, H, cfg.rms_eps, stream);
    linear(*lt, act, lw.gate_up, xn, gu, false, T, 2 * I, H, stream);
    silu_mul(act, gu, mlp, T, I, stream);
    linear(*lt, act, lw.down, mlp, down, false, T, H, I, stream);
  }
  if (R == 0) return;  // a step of prefill chunks that sample nothing yet
  gather_rows(act, x, d_rows, R, H, xg, stream);
  gather_rows(act, down, d_rows, R, H, dg, stream);
  add_rmsnorm(act, xg, dg, final_norm, xn, R, H, cfg.rms_eps, stream);
  linear(*lt, act, lm_head, xn, plogits, true, R, V, H, stream);
  argmax_rows(plogits, R, V, pids, stream);
}

void CudaLlama::forward_paged(const BatchInput& b, const uint8_t* want_logits, int32_t* ids, float* logits) {
  Impl& m = *impl_;
  if (!m.k_pool) fail("forward_paged: call init_paged first");
  set_device(m.device);  // the engine calls from its own thread
  const double t_host = now_s();
  const int T = b.size(), S = int(b.block_tables.size()), R = int(b.logit_rows.size());
  if (T == 0) return;
  if (T > m.mmax) fail("forward_paged: ", T, " tokens exceed paged_max_tokens ", m.mmax);
  if (S > m.pseqs || R > m.pseqs)
    fail("forward_paged: ", S, " sequences / ", R, " logit rows exceed paged_max_seqs ", m.pseqs);
  if (int(b.positions.size()) != T || int(b.seq_index.size()) != T)
    fail("forward_paged: tokens, positions and seq_index differ in length");
  // A decode-only batch (one token per sequence, each sampled) replays the graph of its bucket.
  bool decode = S == T && R == T;
  for (int i = 0; decode && i < T; ++i) decode = b.seq_index[i] == i && b.logit_rows[i] == i;
  const int TB = decode && m.opt.paged_graphs ? std::min(decode_bucket(T), std::min(m.mmax, m.pseqs)) : T;
  int32_t* h = m.h_pin;
  int32_t *h_ids = h, *h_pos = h + m.mmax, *h_slot = h + 2 * size_t(m.mmax), *h_seq = h + 3 * size_t(m.mmax);
  int32_t* h_apos = h + 4 * size_t(m.mmax);
  int32_t* h_rows = h + 5 * size_t(m.mmax);
  int32_t* h_tab = h_rows + m.pseqs;
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
  for (int i = T; i < TB; ++i) {  // padding rows: attend to nothing, store nothing
    h_ids[i] = 0;
    h_pos[i] = -1;
    h_slot[i] = -1;
    h_seq[i] = 0;
  }
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
  const size_t n_up = 5 * size_t(m.mmax) + m.pseqs + size_t(std::max(S, 1)) * m.pmb;
  m.paged_host_s += now_s() - t_host;
  LLAMARUN_CUDA_CHECK(cudaMemcpyAsync(m.pin, h, n_up * 4, cudaMemcpyHostToDevice, m.stream));
  if (decode && m.opt.paged_graphs) {
    auto it = m.bucket_graphs.find(TB);
    if (it == m.bucket_graphs.end()) {
      m.forward_varlen(TB, TB);  // eager first: cuBLASLt picks its algorithms outside the capture
      LLAMARUN_CUDA_CHECK(cudaStreamSynchronize(m.stream));
      cudaGraph_t g = nullptr;
      cudaGraphExec_t ge = nullptr;
      LLAMARUN_CUDA_CHECK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
      try {
        m.forward_varlen(TB, TB);
      } catch (...) {
        cudaStreamEndCapture(m.stream, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      LLAMARUN_CUDA_CHECK(cudaStreamEndCapture(m.stream, &g));
      cudaError_t err = cudaGraphInstantiate(&ge, g, 0);
      cudaGraphDestroy(g);
      LLAMARUN_CUDA_CHECK(err);
      it = m.bucket_graphs.emplace(TB, ge).first;
    } else {
      LLAMARUN_CUDA_CHECK(cudaGraphLaunch(it->second, m.stream));
    }
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

int CudaLlama::paged_blocks() const { return impl_->pnb; }
int CudaLlama::paged_graph_count() const { return int(impl_->bucket_graphs.size()); }
double CudaLlama::paged_host_seconds() const { return impl_->paged_host_s; }

}  // namespace llamarun
