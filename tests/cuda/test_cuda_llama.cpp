// CudaLlama (its one forward, forward_paged) against a small self-contained fp32 CPU reference forward pass
// on a tiny random model, and its batch-1 fast path against its general varlen path.
#include <algorithm>
#include <memory>

#include "../error_util.h"
#include "backends/cuda/cuda_llama.h"
#include "backends/cuda/fp8.h"
#include "backends/cuda/rope_freq.h"
#include "core/error.h"
#include "cuda_paged_seq.h"
#include "cuda_test_util.h"
#include "formats/weight_map.h"

namespace llamarun::cuda::test {
namespace {

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.f;
  return c;
}

// Host weights in a WeightMap (names HF or GGUF, stored dtypes chosen per tensor), plus the effective fp32
// values the GPU model computes with (stored value -> f32 -> rounded to the model dtype).
struct HostModel {
  WeightMap wm;
  std::map<std::string, std::vector<float>> eff;  // by HF-style logical key
  std::vector<std::unique_ptr<std::vector<uint8_t>>> store;

  DType act = DType::F16;
  void add(const std::string& name, const std::string& key, std::vector<int64_t> shape, DType st,
           std::vector<float> vals) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    auto buf = std::make_unique<std::vector<uint8_t>>(dtype_row_bytes(st, n));
    quantize_row(st, vals.data(), buf->data(), n);
    std::vector<float> back(n);
    dequantize_row(st, buf->data(), back.data(), n);
    for (auto& v : back) v = round_to(act, v);
    eff[key] = back;
    TensorInfo t;
    t.name = name;
    t.dtype = st;
    t.shape = shape;
    t.data = buf->data();
    t.nbytes = buf->size();
    t.file = "test-model";
    wm.tensors[name] = t;
    store.push_back(std::move(buf));
  }
};

// gguf: GGUF names with quantised linear weights (q8_0 / q4_1 / q4_0, or with kquants the k-quant types a
// Q4_K_M file mixes: q4_k / q5_k / q6_k) and f32 norms; else HF names stored in act.
HostModel make_host_model(const LlamaConfig& c, DType act, bool gguf, uint32_t seed, bool kquants = false) {
  std::mt19937 g(seed);
  HostModel m;
  m.act = act;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size,
                qd = int64_t(c.num_heads) * c.head_dim, kd = int64_t(c.num_kv_heads) * c.head_dim;
  auto lin = [&](int64_t rows, int64_t cols) {
    return rand_vec(g, rows * cols, -std::sqrt(3.f / cols), std::sqrt(3.f / cols));
  };
  DType lin_t = gguf ? DType::Q8_0 : act;
  DType norm_t = gguf ? DType::F32 : act;
  // k-quants: q / k / gate / up Q4_K, v / down / lm_head Q6_K, o Q5_K, the embedding Q4_K (dequantized at
  // load); the others as above.
  auto pick = [&](DType plain, DType kq) { return kquants ? kq : plain; };
  m.add(gguf ? "token_embd.weight" : "model.embed_tokens.weight", "embed", {V, H},
        gguf ? pick(DType::F16, DType::Q4_K) : act, rand_vec(g, V * H));
  m.add(gguf ? "output_norm.weight" : "model.norm.weight", "norm", {H}, norm_t, rand_vec(g, H, 0.8f, 1.2f));
  m.add(gguf ? "output.weight" : "lm_head.weight", "lm_head", {V, H}, pick(lin_t, DType::Q6_K), lin(V, H));
  for (int l = 0; l < c.num_layers; ++l) {
    std::string hp = "model.layers." + std::to_string(l) + ".", gp = "blk." + std::to_string(l) + ".";
    std::string k = std::to_string(l) + ".";
    m.add(gguf ? gp + "attn_norm.weight" : hp + "input_layernorm.weight", k + "attn_norm", {H}, norm_t,
          rand_vec(g, H, 0.8f, 1.2f));
    m.add(gguf ? gp + "attn_q.weight" : hp + "self_attn.q_proj.weight", k + "q", {qd, H},
          pick(lin_t, DType::Q4_K), lin(qd, H));
    m.add(gguf ? gp + "attn_k.weight" : hp + "self_attn.k_proj.weight", k + "k", {kd, H},
          gguf ? pick(DType::Q4_1, DType::Q4_K) : act, lin(kd, H));
    m.add(gguf ? gp + "attn_v.weight" : hp + "self_attn.v_proj.weight", k + "v", {kd, H},
          gguf ? pick(DType::Q4_0, DType::Q6_K) : act, lin(kd, H));
    m.add(gguf ? gp + "attn_output.weight" : hp + "self_attn.o_proj.weight", k + "o", {H, qd},
          pick(lin_t, DType::Q5_K), lin(H, qd));
    m.add(gguf ? gp + "ffn_norm.weight" : hp + "post_attention_layernorm.weight", k + "ffn_norm", {H}, norm_t,
          rand_vec(g, H, 0.8f, 1.2f));
    m.add(gguf ? gp + "ffn_gate.weight" : hp + "mlp.gate_proj.weight", k + "gate", {I, H},
          pick(lin_t, DType::Q4_K), lin(I, H));
    m.add(gguf ? gp + "ffn_up.weight" : hp + "mlp.up_proj.weight", k + "up", {I, H},
          gguf ? pick(DType::BF16, DType::Q4_K) : act, lin(I, H));
    m.add(gguf ? gp + "ffn_down.weight" : hp + "mlp.down_proj.weight", k + "down", {H, I},
          pick(lin_t, DType::Q6_K), lin(H, I));
  }
  return m;
}

// The plain fp32 reference forward, one token at a time (HF Llama semantics).
class CpuLlama {
 public:
  CpuLlama(const LlamaConfig& c, const std::map<std::string, std::vector<float>>& w, int max_ctx)
      : c_(c), w_(w), max_ctx_(max_ctx) {
    inv_ = rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
    size_t n = size_t(c.num_layers) * c.num_kv_heads * max_ctx * c.head_dim;
    kc_.assign(n, 0.f);
    vc_.assign(n, 0.f);
  }
  std::vector<float> step(int token) {
    const int H = c_.hidden_size, I = c_.intermediate_size, nh = c_.num_heads, nkv = c_.num_kv_heads,
              hd = c_.head_dim, G = nh / nkv;
    std::vector<float> x(w_.at("embed").begin() + size_t(token) * H,
                         w_.at("embed").begin() + size_t(token + 1) * H);
    for (int l = 0; l < c_.num_layers; ++l) {
      std::string k = std::to_string(l) + ".";
      auto h = rmsnorm(x, w_.at(k + "attn_norm"));
      auto q = matvec(w_.at(k + "q"), h, nh * hd), kk = matvec(w_.at(k + "k"), h, nkv * hd),
           v = matvec(w_.at(k + "v"), h, nkv * hd);
      for (int i = 0; i < nh; ++i) rope(q, size_t(i) * hd);
      for (int i = 0; i < nkv; ++i) rope(kk, size_t(i) * hd);
      for (int i = 0; i < nkv; ++i)
        for (int d = 0; d < hd; ++d) {
          kc_[cidx(l, i, pos_, d)] = kk[size_t(i) * hd + d];
          vc_[cidx(l, i, pos_, d)] = v[size_t(i) * hd + d];
        }
      std::vector<float> att(size_t(nh) * hd);
      for (int i = 0; i < nh; ++i) {
        std::vector<double> s(pos_ + 1);
        double mx = -1e300;
        for (int p = 0; p <= pos_; ++p) {
          double d = 0;
          for (int e = 0; e < hd; ++e) d += double(q[size_t(i) * hd + e]) * kc_[cidx(l, i / G, p, e)];
          s[p] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[p]);
        }
        double den = 0;
        for (auto& e : s) den += (e = std::exp(e - mx));
        for (int e = 0; e < hd; ++e) {
          double o = 0;
          for (int p = 0; p <= pos_; ++p) o += s[p] * vc_[cidx(l, i / G, p, e)];
          att[size_t(i) * hd + e] = float(o / den);
        }
      }
      auto o = matvec(w_.at(k + "o"), att, H);
      for (int i = 0; i < H; ++i) x[i] += o[i];
      h = rmsnorm(x, w_.at(k + "ffn_norm"));
      auto gt = matvec(w_.at(k + "gate"), h, I), up = matvec(w_.at(k + "up"), h, I);
      for (int i = 0; i < I; ++i) gt[i] = float(gt[i] / (1 + std::exp(-double(gt[i]))) * up[i]);
      auto dn = matvec(w_.at(k + "down"), gt, H);
      for (int i = 0; i < H; ++i) x[i] += dn[i];
    }
    auto h = rmsnorm(x, w_.at("norm"));
    ++pos_;
    return matvec(w_.at("lm_head"), h, c_.vocab_size);
  }

 private:
  size_t cidx(int l, int kvh, int p, int d) const {
    return ((size_t(l) * c_.num_kv_heads + kvh) * max_ctx_ + p) * c_.head_dim + d;
  }
  std::vector<float> rmsnorm(const std::vector<float>& x, const std::vector<float>& w) const {
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    double inv = 1.0 / std::sqrt(ss / x.size() + c_.rms_eps);
    std::vector<float> o(x.size());
    for (size_t i = 0; i < x.size(); ++i) o[i] = float(x[i] * inv * w[i]);
    return o;
  }
  static std::vector<float> matvec(const std::vector<float>& W, const std::vector<float>& x, int rows) {
    std::vector<float> y(rows);
    size_t K = x.size();
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (size_t k = 0; k < K; ++k) s += double(W[r * K + k]) * x[k];
      y[r] = float(s);
    }
    return y;
  }
  void rope(std::vector<float>& v, size_t off) const {
    int hd = c_.head_dim;
    bool il = c_.rope_layout == RopeLayout::kInterleaved;
    for (int i = 0; i < hd / 2; ++i) {
      int i0 = il ? 2 * i : i, i1 = il ? 2 * i + 1 : i + hd / 2;
      double a = double(pos_) * inv_[i], cs = std::cos(a), sn = std::sin(a);
      double x0 = v[off + i0], x1 = v[off + i1];
      v[off + i0] = float(x0 * cs - x1 * sn);
      v[off + i1] = float(x1 * cs + x0 * sn);
    }
  }
  LlamaConfig c_;
  const std::map<std::string, std::vector<float>>& w_;
  int max_ctx_;
  int pos_ = 0;
  std::vector<float> inv_, kc_, vc_;
};

// Logits tolerance for a 2-layer model whose intermediates are rounded to the dtype at every step.
double logits_tol(DType t) { return t == DType::F16 ? 1e-2 : 6e-2; }
// With quantized weights kept on the GPU, each matmul also quantizes its input to int8 per 32 values
// (about 0.6% rms error per product, as llama.cpp's q8_1 activations do).
double quant_logits_tol(DType t) { return t == DType::F16 ? 4e-2 : 8e-2; }
// FP8 (E4M3) weights: 3 mantissa bits, about 3.6% rms error per weight (and per activation in the GEMM
// path), several percent per product; a swapped or missing scale gives errors of order 1.
double fp8_logits_tol(DType t) { return t == DType::F16 ? 0.15 : 0.18; }

int argmax_of(const std::vector<float>& v) { return int(std::max_element(v.begin(), v.end()) - v.begin()); }

using testutil::error_of;

class CudaLlamaTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { LLAMARUN_REQUIRE_GPU(); }
  DType t() const { return GetParam(); }
};

// A model of max_context positions with a paged pool of num_blocks blocks of block_size.
CudaLlamaOptions options(DType t, int max_context, int max_tokens = 64) {
  CudaLlamaOptions o;
  o.dtype = t;
  o.max_context = max_context;
  o.paged_max_tokens = max_tokens;
  o.paged_max_seqs = 8;
  return o;
}

// Prefill in chunks of `chunk` tokens, then 6 decode rows, against the CPU reference. block_size 8 with
// shuffled blocks: the prompt and the decode steps cross block boundaries.
// gguf models keep their quantized weights on the GPU (the quantized GEMV for batches of up to qmax rows,
// the dequantize + GEMM path above) unless keep_quantized is off.
void check_against_reference(const LlamaConfig& cfg, DType t, bool gguf, int prompt_len, int chunk,
                             bool fast = true, bool kquants = false, int qmax = 64,
                             bool keep_quantized = true, bool input_once = false, bool fp8 = false,
                             bool fp8_search_fused = false) {
  HostModel hm = make_host_model(cfg, t, gguf, 42, kquants);
  CudaLlamaOptions opt = options(t, 128);
  opt.fp8_weights = fp8;
  if (fp8_search_fused) {  // the FP8 options still off by default
    opt.fp8_weight_scale = Fp8Scale::kSearch;
    opt.fp8_fused_act_quant = true;
  }
  opt.staging_bytes = 1 << 20;  // several chunks per tensor, both staging buffers in use
  opt.fast_decode = fast;
  opt.quant_gemv_max_rows = qmax;
  opt.keep_quantized = keep_quantized;
  opt.quantize_input_once = input_once;
  const bool quantized = gguf && keep_quantized;
  auto tol = [quantized, fp8](DType d) {
    return fp8 ? fp8_logits_tol(d) : quantized ? quant_logits_tol(d) : logits_tol(d);
  };
  CudaLlama gpu(cfg, hm.wm, opt);
  gpu.init_paged(8, 40, 0);
  PagedSeq seq(gpu, shuffled_blocks(40, 11));
  CpuLlama cpu(cfg, hm.eff, opt.max_context);
  std::mt19937 g(3);
  std::vector<int32_t> prompt(prompt_len);
  for (auto& id : prompt) id = int32_t(g() % cfg.vocab_size);
  std::vector<float> ref;
  for (int id : prompt) ref = cpu.step(id);
  auto got = seq.prefill(prompt, chunk);
  EXPECT_EQ(seq.position(), prompt_len);
  EXPECT_LT(rel_l2(got, ref), tol(t)) << "prefill of " << prompt_len << " chunk " << chunk;
  EXPECT_EQ(seq.last(), argmax_of(got));
  int tok = argmax_of(ref);
  for (int s = 0; s < 6; ++s) {
    ref = cpu.step(tok);
    got = seq.step_logits(tok);
    EXPECT_LT(rel_l2(got, ref), tol(t)) << "decode step " << s;
    EXPECT_EQ(seq.last(), argmax_of(got)) << "device argmax, step " << s;
    tok = argmax_of(ref);
  }
  EXPECT_EQ(seq.position(), prompt_len + 6);
  // The batch-1 graph (forward_decode1 or, all projections quantized, forward_decode1q) runs unless a
  // projection mixes quantized and act parts (the legacy-type model's up projection is BF16).
  const bool mixed = quantized && !kquants;
  EXPECT_EQ(gpu.fast_decode_steps(), fast && !mixed ? 6 : 0);
  EXPECT_GT(gpu.load_stats().host_bytes, 0u);
}

TEST_P(CudaLlamaTest, HfNamesMatchCpuReference) {
  check_against_reference(tiny_config(), t(), false, 20, 64);  // prefill through cuBLASLt (M > 8)
}

TEST_P(CudaLlamaTest, ChunkedPrefillThroughGemvMatchesCpuReference) {
  check_against_reference(tiny_config(), t(), false, 13, 5);  // chunks of 5, 5, 3: the GEMV path
}

TEST_P(CudaLlamaTest, GeneralDecodePathMatchesCpuReference) {
  check_against_reference(tiny_config(), t(), false, 11, 64, /*fast=*/false);
}

// FP8 weights (opt.fp8_weights, quantized on the GPU at load): a 20-token prefill through per-token E4M3
// activations and cuBLASLt's FP8 GEMM, 5-token chunks through the FP8 GEMV, decode through the fused batch-1
// path and through the general path; the (untied) lm_head is FP8 too.
TEST_P(CudaLlamaTest, Fp8WeightsMatchCpuReference) {
  if (!fp8_supported(0)) GTEST_SKIP() << "no FP8 tensor cores (compute capability < 8.9)";
  check_against_reference(tiny_config(), t(), false, 20, 64, true, false, 64, false, false, /*fp8=*/true);
  check_against_reference(tiny_config(), t(), false, 13, 5, true, false, 64, false, false, /*fp8=*/true);
  check_against_reference(tiny_config(), t(), false, 11, 64, false, false, 64, false, false, /*fp8=*/true);
  // Scale search and the fused activation quantization: a 20-token prefill takes add_rmsnorm_fp8 /
  // silu_mul_fp8.
  check_against_reference(tiny_config(), t(), false, 20, 64, true, false, 64, false, false, true, true);
}

TEST_P(CudaLlamaTest, GgufNamesQuantizedInterleavedRopeMatchCpuReference) {
  LlamaConfig c = tiny_config();
  c.rope_layout = RopeLayout::kInterleaved;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position = 64;
  c.rope_theta = 500000.f;
  check_against_reference(c, t(), true, 17, 64);
}

TEST_P(CudaLlamaTest, GgufLegacyTypesDequantizedAtLoadMatchCpuReference) {
  check_against_reference(tiny_config(), t(), true, 17, 64, true, false, 64, /*keep_quantized=*/false);
}

// Q4_K / Q5_K / Q6_K weights stay quantized: prefill chunks of 7 rows through the quantized GEMV (8 + ...
// rows in steps of 8 with qmax 16) and a 20-row chunk through dequantize + GEMM; decode through the GEMV.
TEST_P(CudaLlamaTest, KQuantsStayQuantizedAndMatchCpuReference) {
  check_against_reference(tiny_config(), t(), true, 27, 7, true, /*kquants=*/true, 16);
  check_against_reference(tiny_config(), t(), true, 20, 64, true, /*kquants=*/true, 16);
  check_against_reference(tiny_config(), t(), true, 12, 12, true, /*kquants=*/true, 16);
}

// Without keep_quantized the k-quants are dequantized at load on the GPU (repacked on the host, qdequant).
TEST_P(CudaLlamaTest, KQuantsDequantizedAtLoadMatchCpuReference) {
  check_against_reference(tiny_config(), t(), true, 17, 64, true, /*kquants=*/true, 64,
                          /*keep_quantized=*/false);
}

// The same with each projection's input quantized once (qquantize_x) for the GEMV.
TEST_P(CudaLlamaTest, KQuantsInputQuantizedOnceMatchCpuReference) {
  check_against_reference(tiny_config(), t(), true, 27, 7, true, /*kquants=*/true, 16, true, true);
  check_against_reference(tiny_config(), t(), true, 12, 12, true, /*kquants=*/true, 16, true, true);
}

// Two models of the same weights under options a and b, each with one paged sequence (the same shuffled
// blocks), for tests that two code paths give the same bits.
struct Twins {
  CudaLlama ga, gb;
  PagedSeq sa, sb;
  Twins(const LlamaConfig& cfg, const HostModel& hm, const CudaLlamaOptions& a, const CudaLlamaOptions& b)
      : ga(cfg, hm.wm, a), gb(cfg, hm.wm, b), sa(init(ga)), sb(init(gb)) {}
  static PagedSeq init(CudaLlama& m) {
    m.init_paged(8, 40, 0);
    return PagedSeq(m, shuffled_blocks(40, 11));
  }
  // n greedy decode steps on both from token 7: the same logits at each.
  void expect_same_steps(int n) {
    int tok = 7;
    for (int s = 0; s < n; ++s) {
      const auto la = sa.step_logits(tok), lb = sb.step_logits(tok);
      ASSERT_EQ(la, lb) << "step " << s;
      tok = argmax_of(la);
    }
  }
};
const std::vector<int32_t> kPrompt = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};

// The quantized batch-1 graph with programmatic dependent launch (each kernel may start while its
// predecessor drains; the GEMVs load their first weights before waiting) against the same kernels launched
// in order: the same bits at every step, staged or pre-quantized GEMV input.
TEST_P(CudaLlamaTest, QuantizedDecodeGivesTheSameBitsWithAndWithoutPdl) {
  LlamaConfig cfg = tiny_config();
  HostModel hm = make_host_model(cfg, t(), true, 42, /*kquants=*/true);
  for (bool once : {false, true}) {
    SCOPED_TRACE(once ? "input quantized once" : "input staged per block");
    CudaLlamaOptions a = options(t(), 128);
    a.keep_quantized = true;
    a.quantize_input_once = once;
    CudaLlamaOptions b = a;
    b.quant_pdl = false;
    Twins tw(cfg, hm, a, b);
    EXPECT_EQ(tw.sa.prefill(kPrompt, 64), tw.sb.prefill(kPrompt, 64));
    tw.expect_same_steps(10);
    EXPECT_EQ(tw.ga.fast_decode_steps(), 10);
    EXPECT_FALSE(tw.gb.pdl_active());
    int dev = 0, cc = 0;
    CUDA_OK(cudaGetDevice(&dev));
    CUDA_OK(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
    EXPECT_EQ(tw.ga.pdl_active(), cc >= 9);
  }
}

// Prefill dequantizing each next weight on a side stream (quant_dequant_ahead) against the same forward
// dequantizing on the main stream: the same bits, for the k-quant model (every projection quantized) and the
// legacy-type one (its BF16 up part copied into the scratch), over several prefill forwards, graph replays
// of the decode steps in between.
TEST_P(CudaLlamaTest, PrefillDequantizingAheadGivesTheSameBits) {
  LlamaConfig cfg = tiny_config();
  for (bool kq : {true, false}) {
    SCOPED_TRACE(kq ? "k-quants" : "legacy types");
    HostModel hm = make_host_model(cfg, t(), true, 42, kq);
    CudaLlamaOptions a = options(t(), 128);
    a.keep_quantized = true;
    a.quant_gemv_max_rows = 8;
    CudaLlamaOptions b = a;
    b.quant_dequant_ahead = true;
    Twins tw(cfg, hm, a, b);
    std::mt19937 g(5);
    std::vector<int32_t> prompt(30);
    for (auto& id : prompt) id = int32_t(g() % cfg.vocab_size);
    EXPECT_EQ(tw.sa.prefill(prompt, 12), tw.sb.prefill(prompt, 12));  // forwards of 12, 12 and 6 rows
    tw.expect_same_steps(3);
    EXPECT_EQ(tw.sa.prefill(prompt, 30), tw.sb.prefill(prompt, 30));
  }
}

// The FP8 KV cache (kv_fp8): half the bytes per cached position, the batch-1 fused path off, and logits
// near the fp16 / bf16 cache's over a prefill (chunks of 20: the tensor-core path's gather from the E4M3
// pool) and decode steps (paged_attention over it). Measured, not exact: E4M3 keeps 3 mantissa bits.
TEST_P(CudaLlamaTest, Fp8KvCacheStaysNearTheActivationDtypeCache) {
  LlamaConfig cfg = tiny_config();
  HostModel hm = make_host_model(cfg, t(), false, 42);
  CudaLlamaOptions a = options(t(), 128);
  CudaLlamaOptions b = a;
  b.kv_fp8 = true;
  Twins tw(cfg, hm, a, b);
  EXPECT_EQ(2 * tw.gb.kv_bytes_per_token(0), tw.ga.kv_bytes_per_token(0));
  std::mt19937 g(9);
  std::vector<int32_t> prompt(40);
  for (auto& id : prompt) id = int32_t(g() % cfg.vocab_size);
  const auto pa = tw.sa.prefill(prompt, 20), pb = tw.sb.prefill(prompt, 20);
  const double e0 = rel_l2(pb, pa);
  EXPECT_LT(e0, 0.1) << "prefill logits";
  EXPECT_GT(e0, 0.0) << "the E4M3 cache rounds K and V";
  int tok = argmax_of(pa);
  for (int s = 0; s < 6; ++s) {
    const auto la = tw.sa.step_logits(tok), lb = tw.sb.step_logits(tok);
    EXPECT_LT(rel_l2(lb, la), 0.1) << "step " << s;
    tok = argmax_of(la);
  }
  EXPECT_GT(tw.ga.fast_decode_steps(), 0);
  EXPECT_EQ(tw.gb.fast_decode_steps(), 0);
}

TEST_P(CudaLlamaTest, MhaHeadDim128MatchesCpuReference) {
  LlamaConfig c = tiny_config();
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.num_layers = 1;
  check_against_reference(c, t(), false, 9, 64);
}

TEST_P(CudaLlamaTest, GraphReplayEqualsDirectLaunchAndGreedyMatchesLogits) {
  LlamaConfig cfg = tiny_config();
  HostModel hm = make_host_model(cfg, t(), false, 5);
  CudaLlamaOptions a = options(t(), 64), b = a;
  b.paged_graphs = false;  // a: the fast path's graph; b: the same kernels launched directly. Same bits.
  CudaLlama ga(cfg, hm.wm, a), gb(cfg, hm.wm, b), gc(cfg, hm.wm, a);
  for (CudaLlama* m : {&ga, &gb, &gc}) m->init_paged(16, 8, 0);
  PagedSeq sa(ga, shuffled_blocks(8, 1)), sb(gb, shuffled_blocks(8, 1)), sc(gc, shuffled_blocks(8, 2));
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  sa.prefill(prompt, 64);
  sb.prefill(prompt, 64);
  sc.prefill(prompt, 64);
  int tok = 11;
  for (int s = 0; s < 8; ++s) {
    auto la = sa.step_logits(tok);
    auto lb = sb.step_logits(tok);
    ASSERT_EQ(la, lb) << "graph replay differs from direct launches at step " << s;
    int greedy = sc.step(tok);
    EXPECT_EQ(greedy, argmax_of(la)) << "step " << s;
    tok = greedy;
  }
  EXPECT_EQ(ga.paged_graph_count(), 1);
  EXPECT_EQ(gb.paged_graph_count(), 0);
  // A new sequence at position 0 over the same blocks: same prompt, same logits.
  sa.reset();
  sb.reset();
  EXPECT_EQ(sa.prefill(prompt, 64), sb.prefill(prompt, 64));
}

// The batch-1 fast path (fused GEMVs, split-K attention through the block table) against the general varlen
// path (cuBLASLt / GEMV, paged_attention) on the same weights and the same batches: two sequences with
// interleaved shuffled blocks of 4 positions, each decoded alone (one row: the fast path on model `fast`)
// and, every third step, both in one batch (the general path on both models, reading K / V the fast path
// wrote). Logits within a tight tolerance, greedy tokens identical.
// The fast path's token reaches the host either written by its argmax kernel into mapped pinned memory
// (the default) or by a copy node after it (fast_token_direct = false): both are checked.
// One decode batch of two sequences of model m (their next tokens ta, tb): the logits of both rows and their
// argmax ids; the sequences advance by those ids.
std::vector<float> decode_pair(CudaLlama& m, PagedSeq& a, PagedSeq& b, int32_t ta, int32_t tb,
                               int32_t ids[2]) {
  std::vector<float> logits(2 * size_t(m.config().vocab_size));
  BatchInput batch;
  a.add_decode_row(batch, ta);
  b.add_decode_row(batch, tb);
  m.forward_paged(batch, nullptr, ids, logits.data());
  a.advance(ids[0]);
  b.advance(ids[1]);
  return logits;
}

void fast_vs_general(DType dt, bool token_direct) {
  SCOPED_TRACE(token_direct ? "token written by the argmax kernel" : "token copied back");
  LlamaConfig cfg = tiny_config();
  HostModel hm = make_host_model(cfg, dt, false, 13);
  CudaLlamaOptions of = options(dt, 128), og = of;
  of.fast_token_direct = token_direct;
  og.fast_decode = false;
  CudaLlama mf(cfg, hm.wm, of), mg(cfg, hm.wm, og);
  mf.init_paged(4, 64, 0);
  mg.init_paged(4, 64, 0);
  const std::vector<int32_t> blocks = shuffled_blocks(64, 5);
  std::vector<int32_t> ta, tb;  // interleaved: A gets the even entries, B the odd ones
  for (size_t i = 0; i < blocks.size(); ++i) (i % 2 ? tb : ta).push_back(blocks[i]);
  PagedSeq fa(mf, ta), fb(mf, tb), ga(mg, ta), gb(mg, tb);
  const std::vector<int32_t> pa = {5, 17, 99, 3, 42, 7, 8, 200, 13, 1}, pb = {77, 6, 150, 21, 9, 33};
  fa.prefill(pa, 64);
  fb.prefill(pb, 3);
  ga.prefill(pa, 64);
  gb.prefill(pb, 3);
  ASSERT_EQ(fa.last(), ga.last());
  ASSERT_EQ(fb.last(), gb.last());
  const double tol = dt == DType::F16 ? 4e-3 : 2e-2;
  int32_t a = fa.last(), b = fb.last();
  for (int s = 0; s < 24; ++s) {
    if (s % 3 == 2) {  // both sequences in one batch: the general path on both models
      int32_t idf[2], idg[2];
      const auto lf = decode_pair(mf, fa, fb, a, b, idf), lg = decode_pair(mg, ga, gb, a, b, idg);
      EXPECT_LT(rel_l2(lf, lg), tol) << "batched step " << s;
      ASSERT_EQ(idf[0], idg[0]) << "step " << s;
      ASSERT_EQ(idf[1], idg[1]) << "step " << s;
    } else {
      auto lfa = fa.step_logits(a), lga = ga.step_logits(a);
      EXPECT_LT(rel_l2(lfa, lga), tol) << "sequence A, step " << s << ", position " << fa.position() - 1;
      ASSERT_EQ(fa.last(), ga.last()) << "sequence A, step " << s;
      ASSERT_EQ(fa.last(), argmax_of(lfa));
      const int32_t nb = fb.step(b);
      ASSERT_EQ(nb, gb.step(b)) << "sequence B, step " << s;
    }
    a = fa.last();
    b = fb.last();
  }
  EXPECT_EQ(mf.fast_decode_steps(), 32);  // 16 single-row steps of each sequence
  EXPECT_EQ(mg.fast_decode_steps(), 0);
  EXPECT_EQ(fa.position(), 34);  // 10 + 24: 9 blocks of 4, none of them adjacent in the pool
}

TEST_P(CudaLlamaTest, FastDecodePathEqualsGeneralPath) {
  fast_vs_general(t(), true);
  fast_vs_general(t(), false);
}

// The serving warm-up (paged_warmup, warm_up_paged): a model that warmed up has the decode graphs of every
// bucket up to min(paged_max_tokens, paged_max_seqs) = 8 (2, 4, 8) and the fast path's before its first
// step, and computes the same bits as one that did not, on the FP8 and quantized-weight paths too: the
// warm-up's padding rows store nothing into the pool, and its GEMMs only write scratch activations.
TEST_P(CudaLlamaTest, WarmUpCapturesGraphsAndChangesNoResult) {
  LlamaConfig cfg = tiny_config();
  for (int variant = 0; variant < 3; ++variant) {
    const bool fp8 = variant == 1, quant = variant == 2;
    if (fp8 && !fp8_supported(0)) continue;
    SCOPED_TRACE(fp8 ? "fp8 weights" : quant ? "quantized weights" : "plain weights");
    HostModel hm = make_host_model(cfg, t(), quant, 21);
    CudaLlamaOptions cold = options(t(), 128), warm = cold;
    cold.fp8_weights = warm.fp8_weights = fp8;
    cold.keep_quantized = warm.keep_quantized = quant;
    warm.paged_warmup = true;
    CudaLlama mc(cfg, hm.wm, cold), mw(cfg, hm.wm, warm);
    mc.init_paged(4, 64, 0);
    mw.init_paged(4, 64, 0);
    EXPECT_EQ(mc.paged_graph_count(), 0);
    EXPECT_EQ(mc.warmup_seconds(), 0.0);
    EXPECT_EQ(mw.paged_graph_count(), 4) << "buckets 2, 4, 8 and the batch-1 fast path";
    EXPECT_GT(mw.warmup_seconds(), 0.0);
    const std::vector<int32_t> blocks = shuffled_blocks(64, 9);
    std::vector<int32_t> ta(blocks.begin(), blocks.begin() + 32), tb(blocks.begin() + 32, blocks.end());
    PagedSeq ca(mc, ta), cb(mc, tb), wa(mw, ta), wb(mw, tb);
    const std::vector<int32_t> pa = {5, 17, 99, 3, 42, 7, 8, 200, 13, 1, 4, 4}, pb = {77, 6, 150, 21, 9};
    ASSERT_EQ(ca.prefill(pa, 64), wa.prefill(pa, 64));
    ASSERT_EQ(cb.prefill(pb, 3), wb.prefill(pb, 3));
    int32_t a = ca.last(), b = cb.last();
    for (int s = 0; s < 6; ++s) {
      int32_t idc[2], idw[2];
      ASSERT_EQ(decode_pair(mc, ca, cb, a, b, idc), decode_pair(mw, wa, wb, a, b, idw))
          << "decode batch of 2, step " << s;
      ASSERT_EQ(ca.step_logits(idc[0]), wa.step_logits(idw[0])) << "batch-1 step " << s;
      a = ca.last();
      b = cb.last();
    }
    EXPECT_EQ(mw.paged_graph_count(), 4) << "no graph captured after the warm-up";
  }
}

TEST_P(CudaLlamaTest, RandomWeightsAreDeterministicAndFinite) {
  LlamaConfig cfg = cuda_preset_config("tiny");
  CudaLlamaOptions o = options(t(), 256);
  CudaLlama a(cfg, 7, o), b(cfg, 7, o);
  a.init_paged(16, 16, 0);
  b.init_paged(16, 16, 0);
  PagedSeq sa(a, shuffled_blocks(16, 3)), sb(b, shuffled_blocks(16, 4));
  std::vector<int32_t> prompt(40);
  for (int i = 0; i < 40; ++i) prompt[i] = (i * 37) % cfg.vocab_size;
  auto la = sa.prefill(prompt, 64), lb = sb.prefill(prompt, 64);
  for (float v : la) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(la, lb);
  int ta = argmax_of(la), tb = ta;
  for (int s = 0; s < 20; ++s) {
    ta = sa.step(ta);
    tb = sb.step(tb);
    ASSERT_EQ(ta, tb);
  }
  CudaMemoryStats m = a.memory_stats();
  EXPECT_GT(m.weights, 0u);
  EXPECT_GT(m.kv_cache, 0u);
  EXPECT_GE(m.peak, m.allocated);
  EXPECT_EQ(a.kv_bytes_per_token(0), size_t(2) * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2);
}

TEST_P(CudaLlamaTest, ErrorsNameTheProblem) {
  LlamaConfig cfg = tiny_config();
  HostModel hm = make_host_model(cfg, t(), false, 9);
  CudaLlamaOptions o = options(t(), 16);
  {
    HostModel bad = make_host_model(cfg, t(), false, 9);
    bad.wm.tensors.erase("model.layers.1.mlp.up_proj.weight");
    std::string e = error_of([&] { CudaLlama m(cfg, bad.wm, o); });
    EXPECT_NE(e.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
  }
  {
    HostModel bad = make_host_model(cfg, t(), false, 9);
    bad.wm.tensors["model.layers.0.self_attn.k_proj.weight"].shape = {64, 256};
    std::string e = error_of([&] { CudaLlama m(cfg, bad.wm, o); });
    EXPECT_NE(e.find("k_proj"), std::string::npos) << e;
    EXPECT_NE(e.find("expected [128, 256]"), std::string::npos) << e;
  }
  CudaLlama m(cfg, hm.wm, o);
  EXPECT_NE(error_of([&] { PagedSeq(m, {0}).step(1); }).find("init_paged"), std::string::npos);
  m.init_paged(4, 8, 0);
  PagedSeq seq(m, {3, 1, 0, 2});
  EXPECT_NE(error_of([&] { PagedSeq(m, {0}).step(cfg.vocab_size); }).find("outside [0, 256)"),
            std::string::npos);
  std::vector<int32_t> ids(16, 1);
  seq.prefill(ids, 64);
  EXPECT_NE(error_of([&] { seq.step(1); }).find("outside the context of 16"), std::string::npos);
  EXPECT_NE(error_of([&] { PagedSeq(m, {9}).step(1); }).find("KV block 9 outside [0, 8)"), std::string::npos);
  CudaLlamaOptions bad_dev = o;
  bad_dev.device = "cuda:63";
  EXPECT_NE(error_of([&] { CudaLlama x(cfg, hm.wm, bad_dev); }).find("out of range"), std::string::npos);
  CudaLlama big(cfg, 1, o);
  std::string e = error_of([&] { big.init_paged(16, 1 << 24, 0); });  // a KV pool of terabytes
  EXPECT_NE(e.find("paged KV cache"), std::string::npos) << e;
  EXPECT_NE(e.find("is free"), std::string::npos) << e;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLlamaTest, ::testing::Values(DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(dname(i.param));
                         });

}  // namespace
}  // namespace llamarun::cuda::test
