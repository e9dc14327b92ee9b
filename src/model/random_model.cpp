#include "model/random_model.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/llama_tensors.h"
#include "model/quantize_model.h"

namespace llamarun {

LlamaConfig random_model_preset(const std::string& name) {
  LlamaConfig c;
  c.rms_eps = 1e-5f;
  c.bos_id = 1;
  c.eos_ids = {2};
  if (name == "tiny") {
    c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 176, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.max_position = 512;
  } else if (name == "smollm2-135m") {
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_layers = 30;
    c.num_heads = 9, c.num_kv_heads = 3, c.max_position = 8192, c.rope_theta = 100000.f;
    c.tie_embeddings = true;
  } else if (name == "llama-1b") {
    c.vocab_size = 32000, c.hidden_size = 2048, c.intermediate_size = 5632, c.num_layers = 22;
    c.num_heads = 32, c.num_kv_heads = 4, c.max_position = 2048;
  } else if (name == "llama2-7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_layers = 32;
    c.num_heads = 32, c.num_kv_heads = 32, c.max_position = 4096;
  } else {
    fail("unknown random-weights preset '", name, "' (known: tiny, smollm2-135m, llama-1b, llama2-7b)");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  return c;
}

namespace {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype;
};

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::unique_ptr<Model> make_random_model(const LlamaConfig& cfg, DType dtype, uint64_t seed, int max_batch,
                                         const QuantScheme* quant) {
  cfg.validate("random model");
  // Every tensor of the table under its Hugging Face name, in table order (global, then per layer);
  // lm_head only when untied. Norms are f32, matrices `dtype`.
  std::vector<Spec> specs;
  auto add = [&](const LlamaTensorSpec& t, int layer) {
    const std::string name = llama_tensor_name(t.role, layer, TensorNaming::kHf);
    const std::vector<int64_t> shape = llama_tensor_shape(t.role, cfg);
    const DType d =
        t.ndim == 1 ? DType::F32
        : quant     ? choose_quant_type(*quant, name, shape, DType::F32, cfg.num_layers, cfg.tie_embeddings)
                    : dtype;
    specs.push_back({name, shape, d});
  };
  for (const auto& t : llama_tensor_table())
    if (!t.per_layer && !(t.role == LlamaTensor::kLmHead && cfg.tie_embeddings)) add(t, -1);
  for (int l = 0; l < cfg.num_layers; ++l)
    for (const auto& t : llama_tensor_table())
      if (t.per_layer) add(t, l);
  for (const auto& s : specs)
    if (s.shape.back() % dtype_block_size(s.dtype))
      fail("random model: ", s.name, " has rows of ", s.shape.back(), " values, not whole ",
           dtype_name(s.dtype), " blocks of ", dtype_block_size(s.dtype));
  auto m = std::make_unique<Model>();
  m->path = "random";
  m->cfg = cfg;
  m->weights = std::make_shared<WeightMap>();
  size_t total = 0;
  for (auto& s : specs) {
    int64_t rows = s.shape.size() == 2 ? s.shape[0] : 1;
    total += (dtype_row_bytes(s.dtype, s.shape.back()) * rows + 63) / 64 * 64;
  }
  m->owned_storage.resize(total);
  size_t off = 0;
  uint64_t tensor_seed = seed;
  for (auto& s : specs) {
    const int64_t rows = s.shape.size() == 2 ? s.shape[0] : 1, cols = s.shape.back();
    const size_t rb = dtype_row_bytes(s.dtype, cols);
    uint8_t* base = m->owned_storage.data() + off;
    const float scale = s.shape.size() == 1 ? 0.0f : 1.0f / std::sqrt(float(cols));
    const uint64_t ts = splitmix(tensor_seed);
#pragma omp parallel
    {
      std::vector<float> row(cols);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        uint64_t st = ts ^ (uint64_t(r) * 0x9e3779b97f4a7c15ull);
        for (int64_t c = 0; c < cols; ++c) {
          double u = double(splitmix(st) >> 11) * 0x1.0p-53;  // [0, 1)
          row[c] = s.shape.size() == 1 ? 1.0f + 0.1f * float(u - 0.5) : scale * float(2 * u - 1);
        }
        quantize_row(s.dtype, row.data(), base + size_t(r) * rb, cols);
      }
    }
    TensorInfo t;
    t.name = s.name;
    t.dtype = s.dtype;
    t.shape = s.shape;
    t.data = base;
    t.nbytes = rb * size_t(rows);
    t.file = "random";
    m->weights->tensors[s.name] = t;
    off += (t.nbytes + 63) / 64 * 64;
  }
  LlamaWeights w = bind_llama_weights(cfg, *m->weights, TensorNaming::kHf, "random model");
  m->llama = std::make_unique<LlamaModel>(cfg, std::move(w), max_batch);
  return m;
}

}  // namespace llamarun
