#include "model/quantize_model.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "core/progress.h"

namespace llamarun {

namespace {

struct SchemeRow {
  const char* name;
  DType base;
  uint32_t file_type;
  bool medium;
};
// llama.cpp's llama_ftype values (include/llama.h).
constexpr SchemeRow kSchemes[] = {
    {"F32", DType::F32, 0, false},     {"F16", DType::F16, 1, false},    {"BF16", DType::BF16, 32, false},
    {"Q4_0", DType::Q4_0, 2, false},   {"Q4_1", DType::Q4_1, 3, false},  {"Q8_0", DType::Q8_0, 7, false},
    {"Q5_0", DType::Q5_0, 8, false},   {"Q5_1", DType::Q5_1, 9, false},  {"Q4_K_M", DType::Q4_K, 15, true},
    {"Q5_K_M", DType::Q5_K, 17, true}, {"Q6_K", DType::Q6_K, 18, false},
};

// llama.cpp's use_more_bits: the first and last eighth of the layers, and every third layer between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// llama-quant.cpp's tensor_type_fallback: a row length that is not a multiple of the type's block takes
// a 32-value type of similar size (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), and F16 when even 32 does
// not divide it.
DType fallback(DType t, int64_t cols) {
  if (cols % dtype_block_size(t) == 0) return t;
  DType r = t;
  switch (t) {
    case DType::Q2_K:
    case DType::Q3_K:
      r = DType::Q4_0;
      break;
    case DType::Q4_K:
      r = DType::Q5_0;
      break;
    case DType::Q5_K:
      r = DType::Q5_1;
      break;
    case DType::Q6_K:
      r = DType::Q8_0;
      break;
    case DType::IQ4_XS:
      r = DType::IQ4_NL;
      break;
    default:
      break;
  }
  return cols % dtype_block_size(r) == 0 ? r : DType::F16;
}

}  // namespace

QuantScheme parse_quant_scheme(const std::string& name) {
  std::string up;
  for (char c : name) up += char(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& r : kSchemes)
    if (up == r.name) return {r.name, r.base, r.file_type, r.medium};
  fail("unknown quantization type '", name, "': use one of ", quant_scheme_names());
}

const char* quant_scheme_names() {
  return "Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q5_0, Q5_1, Q4_0, Q4_1, F16, BF16, F32";
}

TensorRole tensor_role(const std::string& n) {
  TensorRole r;
  for (const char* prefix : {"blk.", "model.layers."}) {
    const std::string p = prefix;
    if (n.rfind(p, 0) == 0) {
      size_t i = p.size(), j = i;
      while (j < n.size() && std::isdigit(static_cast<unsigned char>(n[j]))) ++j;
      if (j > i && j - i < 7) r.layer = std::atoi(n.substr(i, j - i).c_str());
    }
  }
  auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
  if (n == "output.weight" || n == "lm_head.weight")
    r.kind = TensorRole::Output;
  else if (n == "token_embd.weight" || n == "model.embed_tokens.weight")
    r.kind = TensorRole::TokenEmbd;
  else if (has("norm.weight") || has("layernorm.weight"))
    r.kind = TensorRole::Norm;
  else if (has("attn_v.weight") || has("self_attn.v_proj.weight"))
    r.kind = TensorRole::AttnV;
  else if (has("attn_k.weight") || has("self_attn.k_proj.weight"))
    r.kind = TensorRole::AttnK;
  else if (has("attn_q.weight") || has("self_attn.q_proj.weight"))
    r.kind = TensorRole::AttnQ;
  else if (has("attn_output.weight") || has("self_attn.o_proj.weight"))
    r.kind = TensorRole::AttnOut;
  else if (has("ffn_up") || has("mlp.up_proj"))
    r.kind = TensorRole::FfnUp;
  else if (has("ffn_gate") || has("mlp.gate_proj"))
    r.kind = TensorRole::FfnGate;
  else if (has("ffn_down") || has("mlp.down_proj"))
    r.kind = TensorRole::FfnDown;
  return r;
}

bool gguf_tensor_order_less(const std::string& a, const std::string& b) {
  auto rank = [](const std::string& n) {
    const TensorRole r = tensor_role(n);
    return r.kind == TensorRole::TokenEmbd ? -2L
           : r.layer >= 0                  ? long(r.layer)
           : n == "rope_freqs.weight"      ? -1L
                                           : 1L << 30;
  };
  const long ra = rank(a), rb = rank(b);
  return ra != rb ? ra < rb : a < b;
}

// The rules, from llama.cpp's src/llama-quant.cpp (llama_tensor_get_type and tensor_type_fallback) for a
// dense Llama model, no importance matrix, restricted to the schemes above:
//  1. Only tensors of 2+ dims whose name ends in "weight" and holds no "norm" are quantised; the rest keep
//     their type (F32 norms, rope_freqs).
//  2. The output projection (output.weight; with tied embeddings token_embd.weight, which serves as both):
//     Q8_0 if its row length is not a multiple of the base type's block, else Q6_K unless the base is Q8_0
//     (so Q4_0/Q4_1/Q5_x/K-quant files all get a Q6_K output). Untied token_embd keeps the base type.
//  3. attn_v with Q4_K_M / Q5_K_M: Q6_K in the layers use_more_bits picks (i < n/8, i >= 7n/8, or
//     (i - n/8) % 3 == 2); in a 70B model (80 layers) Q4_K attn_v becomes Q5_K.
//  4. ffn_down with Q4_K_M / Q5_K_M: Q6_K in the use_more_bits layers.
//  5. A row length the chosen type's block does not divide falls back: Q4_K -> Q5_0, Q5_K -> Q5_1,
//     Q6_K -> Q8_0, and to F16 if 32 does not divide it either.
//  6. A tensor already of the chosen type is copied unchanged (llama-quantize --allow-requantize does so).
DType choose_quant_type(const QuantScheme& s, const std::string& name, const std::vector<int64_t>& shape,
                        DType src, int n_layers, bool tied) {
  if (shape.size() < 2 || !name.ends_with("weight")) return src;
  const TensorRole role = tensor_role(name);
  if (role.kind == TensorRole::Norm) return src;
  if (!dtype_is_quantized(s.base)) return s.base;  // F32 / F16 / BF16 files convert every matrix
  const int64_t cols = shape.back();
  DType t = s.base;
  if (role.kind == TensorRole::Output || (tied && role.kind == TensorRole::TokenEmbd)) {
    if (cols % dtype_block_size(s.base) != 0)
      t = DType::Q8_0;
    else if (s.base != DType::Q8_0)
      t = DType::Q6_K;
  } else if (role.kind == TensorRole::AttnV && s.medium) {
    if (role.layer >= 0 && use_more_bits(role.layer, n_layers))
      t = DType::Q6_K;
    else if (n_layers == 80 && t == DType::Q4_K)
      t = DType::Q5_K;
  } else if (role.kind == TensorRole::FfnDown && s.medium) {
    if (role.layer >= 0 && use_more_bits(role.layer, n_layers)) t = DType::Q6_K;
  }
  return fallback(t, cols);
}

void convert_tensor(const TensorInfo& t, DType dtype, uint8_t* dst) {
  if (t.shape.empty()) fail("tensor '", t.name, "' has no shape");
  const int64_t cols = t.shape.back(), rows = t.numel() / cols;
  if (t.dtype == dtype) {
    std::copy(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes, dst);
    return;
  }
  const size_t in_row = dtype_row_bytes(t.dtype, cols), out_row = dtype_row_bytes(dtype, cols);
  const auto* src = static_cast<const uint8_t*>(t.data);
  std::string error;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      try {
        dequantize_row(t.dtype, src + size_t(r) * in_row, row.data(), cols);
        quantize_row(dtype, row.data(), dst + size_t(r) * out_row, cols);
      } catch (const Error& e) {
#pragma omp critical
        error = e.what();
      }
    }
  }
  if (!error.empty())
    fail("tensor '", t.name, "' (", dtype_name(t.dtype), " -> ", dtype_name(dtype), "): ", error);
}

size_t quantize_weight_map(WeightMap& wm, const QuantScheme& s, int n_layers, bool gguf_names,
                           std::vector<uint8_t>& storage, const QuantProgress& progress) {
  const bool tied = !wm.find(gguf_names ? "output.weight" : "lm_head.weight");
  struct Job {
    TensorInfo* t;
    DType to;
    size_t offset, bytes;
  };
  std::vector<Job> jobs;
  size_t total = 0;
  for (auto& [name, t] : wm.tensors) {
    const DType to = choose_quant_type(s, name, t.shape, t.dtype, n_layers, tied);
    if (to == t.dtype) continue;
    const int64_t cols = t.shape.back();
    const size_t bytes = dtype_row_bytes(to, cols) * size_t(t.numel() / cols);
    jobs.push_back({&t, to, total, bytes});
    total += (bytes + 63) / 64 * 64;  // keep every tensor 64-byte aligned
  }
  storage.assign(total, 0);
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& j = jobs[i];
    convert_tensor(*j.t, j.to, storage.data() + j.offset);
    j.t->dtype = j.to;
    j.t->data = storage.data() + j.offset;
    j.t->nbytes = j.bytes;
    if (progress) progress(i + 1, jobs.size(), j.t->name);
  }
  return jobs.size();
}

QuantProgress stderr_progress(const std::string& what) {
  // The shared terminal bar (core/progress.h), made at the first call, when the tensor count is known.
  auto bar = std::make_shared<std::unique_ptr<Progress>>();
  return [what, bar](size_t done, size_t total, const std::string&) {
    if (!*bar) *bar = std::make_unique<Progress>(what, total, Progress::Unit::kCount);
    (*bar)->set(done);
    if (done == total) (*bar)->finish();
  };
}

}  // namespace llamarun
