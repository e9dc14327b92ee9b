// The Llama tensor table (src/model/llama_tensors.h) and its validator, bind_llama_weights:
//   - its names against independent references: the gguf package's own source-name -> GGUF-name map
//     (tests/fixtures/tensor_names, made by tools/make_tensor_name_map.py; it lists Hugging Face and Meta's
//     original .pth names), the transformers-written golden safetensors, the golden GGUF files and, where
//     present, the default model (converted by llama.cpp's tools);
//   - the validator's rules: presence, shapes, stored bytes, dtypes, bias tensors and when the lm_head is
//   tied;
//   - the same outcome on the CPU path (load_model) and the CUDA path (CudaLlama's WeightMap constructor:
//     detect_tensor_naming + bind_llama_weights, run here without a GPU).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_util.h"
#include "core/error.h"
#include "error_util.h"
#include "format_writers.h"
#include "formats/model_files.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/llama_tensors.h"
#include "model/model.h"
#include "model/random_model.h"

using namespace llamarun;
using namespace llamarun::testing_util;

namespace {

const std::string kSrc = LLAMARUN_SOURCE_DIR;
constexpr TensorNaming kNamings[] = {TensorNaming::kHf, TensorNaming::kGguf, TensorNaming::kMeta};

std::string strip_weight(const std::string& s) {
  const std::string suf = ".weight";
  EXPECT_TRUE(s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0) << s;
  return s.substr(0, s.size() - suf.size());
}

using testutil::error_of;

}  // namespace

TEST(LlamaTensorTable, NamesMatchTheGgufPackagesMap) {
  std::ifstream in(kSrc + "/tests/fixtures/tensor_names/gguf_llama_name_map.json");
  ASSERT_TRUE(in) << "missing fixture";
  const auto j = nlohmann::json::parse(in);
  const auto& sources = j.at("sources");
  const int n_blocks = j.at("n_blocks");
  ASSERT_GE(n_blocks, 2);
  int checked = 0;
  for (const auto& s : llama_tensor_table()) {
    for (int l = s.per_layer ? 0 : -1; l < (s.per_layer ? n_blocks : 0); ++l) {
      const std::string g = strip_weight(llama_tensor_name(s.role, l, TensorNaming::kGguf));
      ASSERT_TRUE(sources.contains(g)) << g << " (" << s.role_name << ") is not a GGUF llama tensor";
      const auto& from = sources.at(g);
      for (TensorNaming n : {TensorNaming::kHf, TensorNaming::kMeta}) {
        const std::string name = strip_weight(llama_tensor_name(s.role, l, n));
        EXPECT_NE(std::find(from.begin(), from.end(), name), from.end())
            << tensor_naming_name(n) << " name " << name << " does not convert to " << g << " in gguf's map";
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 2 * (3 + 9 * n_blocks));
}

TEST(LlamaTensorTable, SpelledOutNames) {
  // Spot checks, written out by hand from each project's own code (transformers' LlamaForCausalLM,
  // llama.cpp's LLM_TENSOR_NAMES, Meta's llama/model.py).
  struct Row {
    LlamaTensor t;
    int layer;
    const char* hf;
    const char* gguf;
    const char* meta;
  };
  for (const Row& r : std::vector<Row>{
           {LlamaTensor::kTokEmbd, -1, "model.embed_tokens.weight", "token_embd.weight",
            "tok_embeddings.weight"},
           {LlamaTensor::kOutNorm, -1, "model.norm.weight", "output_norm.weight", "norm.weight"},
           {LlamaTensor::kLmHead, -1, "lm_head.weight", "output.weight", "output.weight"},
           {LlamaTensor::kAttnNorm, 5, "model.layers.5.input_layernorm.weight", "blk.5.attn_norm.weight",
            "layers.5.attention_norm.weight"},
           {LlamaTensor::kQ, 0, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight",
            "layers.0.attention.wq.weight"},
           {LlamaTensor::kO, 31, "model.layers.31.self_attn.o_proj.weight", "blk.31.attn_output.weight",
            "layers.31.attention.wo.weight"},
           {LlamaTensor::kFfnNorm, 2, "model.layers.2.post_attention_layernorm.weight",
            "blk.2.ffn_norm.weight", "layers.2.ffn_norm.weight"},
           {LlamaTensor::kGate, 1, "model.layers.1.mlp.gate_proj.weight", "blk.1.ffn_gate.weight",
            "layers.1.feed_forward.w1.weight"},
           {LlamaTensor::kUp, 1, "model.layers.1.mlp.up_proj.weight", "blk.1.ffn_up.weight",
            "layers.1.feed_forward.w3.weight"},
           {LlamaTensor::kDown, 1, "model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight",
            "layers.1.feed_forward.w2.weight"},
       }) {
    EXPECT_EQ(llama_tensor_name(r.t, r.layer, TensorNaming::kHf), r.hf);
    EXPECT_EQ(llama_tensor_name(r.t, r.layer, TensorNaming::kGguf), r.gguf);
    EXPECT_EQ(llama_tensor_name(r.t, r.layer, TensorNaming::kMeta), r.meta);
  }
}

TEST(LlamaTensorTable, ParseRoundTripsAndTranslates) {
  for (TensorNaming n : kNamings) {
    for (const auto& s : llama_tensor_table()) {
      for (int l : s.per_layer ? std::vector<int>{0, 7, 10, 123} : std::vector<int>{-1}) {
        const std::string name = llama_tensor_name(s.role, l, n);
        auto id = parse_llama_tensor_name(name, n);
        ASSERT_TRUE(id) << name;
        EXPECT_EQ(id->role, s.role) << name;
        EXPECT_EQ(id->layer, l) << name;
        // Each other naming gives the same role back: HF <-> GGUF <-> Meta.
        for (TensorNaming m : kNamings) {
          auto back = parse_llama_tensor_name(llama_tensor_name(id->role, id->layer, m), m);
          ASSERT_TRUE(back);
          EXPECT_EQ(back->role, s.role);
          EXPECT_EQ(back->layer, l);
        }
      }
    }
  }
  for (const char* bad : {"rope_freqs.weight", "model.layers.0.self_attn.rotary_emb.inv_freq",
                          "model.layers.x.input_layernorm.weight", "model.layers.01.input_layernorm.weight",
                          "model.layers..input_layernorm.weight", "model.layers.0.input_layernorm.bias",
                          "model.layers.0", "blk.0.attn_q.weight", "model.embed_tokens", ""})
    EXPECT_FALSE(parse_llama_tensor_name(bad, TensorNaming::kHf)) << bad;
  EXPECT_FALSE(parse_llama_tensor_name("model.layers.0.self_attn.q_proj.weight", TensorNaming::kGguf));
  EXPECT_FALSE(parse_llama_tensor_name("layers.0.attention.wq.weight", TensorNaming::kGguf));
}

TEST(LlamaTensorTable, ShapesAndDtypesFromTheConfig) {
  LlamaConfig c = random_model_preset("llama-1b");
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kTokEmbd, c), (std::vector<int64_t>{32000, 2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kOutNorm, c), (std::vector<int64_t>{2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kQ, c), (std::vector<int64_t>{2048, 2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kK, c), (std::vector<int64_t>{256, 2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kO, c), (std::vector<int64_t>{2048, 2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kUp, c), (std::vector<int64_t>{5632, 2048}));
  EXPECT_EQ(llama_tensor_shape(LlamaTensor::kDown, c), (std::vector<int64_t>{2048, 5632}));
  EXPECT_EQ(dtype_set_str(kNormDTypes), "f32, f16 or bf16");
  EXPECT_EQ(dtype_set_str(kMatrixDTypes),
            "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl or iq4_xs");
  for (const auto& s : llama_tensor_table()) {
    EXPECT_EQ(s.dtypes, s.ndim == 1 ? kNormDTypes : kMatrixDTypes) << s.role_name;
    EXPECT_FALSE(dtype_in(DType::Q8_0, s.dtypes) && s.ndim == 1) << s.role_name << ": norms never quantised";
  }
}

// Every golden model: the transformers-written safetensors hold exactly the table's HF names and shapes;
// each GGUF conversion holds the same tensors under the table's GGUF names (plus rope_freqs); both bind,
// with the lm_head tied in both or in neither.
TEST(LlamaTensorTable, GoldenFixturesHoldExactlyTheTablesTensors) {
  int models = 0, ggufs = 0;
  for (const auto& dir : std::filesystem::directory_iterator(kSrc + "/tests/fixtures/golden")) {
    if (!dir.is_directory()) continue;
    const std::string d = dir.path().string();
    SCOPED_TRACE(d);
    WeightMap hf = load_weights(d);
    LlamaConfig hc = config_from_hf_json(read_text_file(d + "/config.json"), d + "/config.json");
    std::set<std::string> want, got;
    for (const auto& s : llama_tensor_table())
      for (int l = s.per_layer ? 0 : -1; l < (s.per_layer ? hc.num_layers : 0); ++l)
        if (!(s.role == LlamaTensor::kLmHead && hc.tie_embeddings)) {
          const std::string name = llama_tensor_name(s.role, l, TensorNaming::kHf);
          want.insert(name);
          if (const TensorInfo* t = hf.find(name)) {
            EXPECT_EQ(t->shape, llama_tensor_shape(s.role, hc)) << name;
          }
        }
    for (const auto& [name, _] : hf.tensors) got.insert(name);
    EXPECT_EQ(got, want);
    EXPECT_EQ(detect_tensor_naming(hf, d), TensorNaming::kHf);
    LlamaWeights hw = bind_llama_weights(hc, hf, TensorNaming::kHf, d);
    const bool hf_tied = hw.lm_head.data == hw.tok_embd.data;
    EXPECT_EQ(hf_tied, hc.tie_embeddings);
    ++models;
    for (const auto& f : std::filesystem::directory_iterator(d)) {
      const std::string p = f.path().string();
      if (f.path().extension() != ".gguf") continue;
      SCOPED_TRACE(p);
      WeightMap gg = load_weights(p);
      for (const auto& [name, t] : gg.tensors) {
        if (name == "rope_freqs.weight") continue;
        auto id = parse_llama_tensor_name(name, TensorNaming::kGguf);
        ASSERT_TRUE(id) << name << " is not in the table";
        const TensorInfo* h = hf.find(llama_tensor_name(id->role, id->layer, TensorNaming::kHf));
        ASSERT_NE(h, nullptr) << name;
        EXPECT_EQ(t.shape, h->shape) << name;
      }
      EXPECT_EQ(gg.tensors.size() - (gg.find("rope_freqs.weight") ? 1 : 0), hf.tensors.size());
      EXPECT_EQ(detect_tensor_naming(gg, p), TensorNaming::kGguf);
      LlamaConfig gc = config_from_gguf(gg, p);
      LlamaWeights gw = bind_llama_weights(gc, gg, TensorNaming::kGguf, p);
      EXPECT_EQ(gw.lm_head.data == gw.tok_embd.data, hf_tied);
      EXPECT_EQ(gc.tie_embeddings, hf_tied);
      ++ggufs;
    }
  }
  EXPECT_GE(models, 8);
  EXPECT_GE(ggufs, 8);
}

// The default model was converted by llama.cpp's own convert_hf_to_gguf.py.
TEST(LlamaTensorTable, DefaultModelNamesAreTheTables) {
  const std::string path = kSrc + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << "default model not present (scripts/get-default-model.sh)";
  WeightMap wm = load_weights(path);
  for (const auto& [name, _] : wm.tensors)
    EXPECT_TRUE(parse_llama_tensor_name(name, TensorNaming::kGguf) || name == "rope_freqs.weight") << name;
  LlamaConfig c = config_from_gguf(wm, path);
  LlamaWeights w = bind_llama_weights(c, wm, TensorNaming::kGguf, path);
  EXPECT_EQ(w.lm_head.data, w.tok_embd.data);  // SmolLM2 ties; its GGUF has no output.weight
  EXPECT_EQ(wm.find("output.weight"), nullptr);
  EXPECT_EQ(w.layers.size(), 30u);
}

// ---------------------------------------------------------------- the validator

namespace {

// A tensor of `shape` and `dt` with data, so the views can be compared.
struct Weights {
  WeightMap wm;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> store;
  void add(const std::string& name, std::vector<int64_t> shape, DType dt = DType::F32,
           std::string file = "") {
    TensorInfo t;
    t.name = name;
    t.dtype = dt;
    t.shape = std::move(shape);
    const int64_t cols = t.shape.back();
    t.nbytes = dtype_row_bytes(dt, cols) * size_t(t.numel() / cols);
    store.push_back(std::make_unique<std::vector<uint8_t>>(t.nbytes));
    t.data = store.back()->data();
    t.file = file;
    wm.tensors[name] = t;
  }
};

// vocab 64, hidden 64, inter 96, 2 layers, 4 heads, 2 kv heads, head_dim 16.
LlamaConfig tiny_cfg(bool tie) {
  LlamaConfig c;
  c.vocab_size = 64, c.hidden_size = 64, c.intermediate_size = 96, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 16, c.tie_embeddings = tie;
  return c;
}

// The tiny model's tensors written out by hand in one naming (matrices `mat`, norms f32).
Weights tiny_weights(TensorNaming n, bool with_head, DType mat = DType::F16) {
  Weights w;
  const bool hf = n == TensorNaming::kHf, gg = n == TensorNaming::kGguf;
  w.add(hf ? "model.embed_tokens.weight" : gg ? "token_embd.weight" : "tok_embeddings.weight", {64, 64}, mat);
  w.add(hf ? "model.norm.weight" : gg ? "output_norm.weight" : "norm.weight", {64});
  if (with_head) w.add(hf ? "lm_head.weight" : "output.weight", {64, 64}, mat);
  for (int l = 0; l < 2; ++l) {
    const std::string p = (hf ? "model.layers." : gg ? "blk." : "layers.") + std::to_string(l) + ".";
    w.add(p + (hf ? "input_layernorm.weight" : gg ? "attn_norm.weight" : "attention_norm.weight"), {64});
    w.add(p + (hf ? "post_attention_layernorm.weight" : "ffn_norm.weight"), {64});
    w.add(p + (hf ? "self_attn.q_proj.weight" : gg ? "attn_q.weight" : "attention.wq.weight"), {64, 64}, mat);
    w.add(p + (hf ? "self_attn.k_proj.weight" : gg ? "attn_k.weight" : "attention.wk.weight"), {32, 64}, mat);
    w.add(p + (hf ? "self_attn.v_proj.weight" : gg ? "attn_v.weight" : "attention.wv.weight"), {32, 64}, mat);
    w.add(p + (hf   ? "self_attn.o_proj.weight"
               : gg ? "attn_output.weight"
                    : "attention.wo.weight"),
          {64, 64}, mat);
    w.add(p + (hf   ? "mlp.gate_proj.weight"
               : gg ? "ffn_gate.weight"
                    : "feed_forward.w1.weight"),
          {96, 64}, mat);
    w.add(p + (hf ? "mlp.up_proj.weight" : gg ? "ffn_up.weight" : "feed_forward.w3.weight"), {96, 64}, mat);
    w.add(p + (hf   ? "mlp.down_proj.weight"
               : gg ? "ffn_down.weight"
                    : "feed_forward.w2.weight"),
          {64, 96}, mat);
  }
  return w;
}

std::string bind_error(const LlamaConfig& c, const WeightMap& wm, TensorNaming n) {
  std::string m = error_of([&] { bind_llama_weights(c, wm, n, "m/model"); });
  if (!m.empty()) {
    EXPECT_EQ(m.rfind("m/model: ", 0), 0u) << m;
  }
  return m;
}

void expect_has(const std::string& m, std::initializer_list<const char*> needles) {
  for (const char* s : needles) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
}

}  // namespace

TEST(LlamaTensorValidator, BindsEveryNamingToTheSameViews) {
  for (TensorNaming n : kNamings) {
    SCOPED_TRACE(tensor_naming_name(n));
    Weights w = tiny_weights(n, true);
    EXPECT_EQ(detect_tensor_naming(w.wm, "m"), n);
    LlamaWeights b = bind_llama_weights(tiny_cfg(false), w.wm, n, "m/model");
    ASSERT_EQ(b.layers.size(), 2u);
    for (const auto& s : llama_tensor_table())
      for (int l = s.per_layer ? 0 : -1; l < (s.per_layer ? 2 : 0); ++l) {
        const WeightView& v = llama_weight(b, s.role, l);
        const TensorInfo& t = w.wm.get(llama_tensor_name(s.role, l, n));
        EXPECT_EQ(v.data, t.data) << t.name;
        EXPECT_EQ(v.dtype, t.dtype) << t.name;
        EXPECT_EQ(v.cols, t.shape.back()) << t.name;
        EXPECT_EQ(v.rows, s.ndim == 2 ? t.shape[0] : 1) << t.name;
      }
  }
  EXPECT_NE(error_of([] { detect_tensor_naming(WeightMap{}, "x.bin"); }).find("x.bin: no token embedding"),
            std::string::npos);
}

TEST(LlamaTensorValidator, HfTiesOnlyWhereTheConfigSays) {
  Weights untied = tiny_weights(TensorNaming::kHf, true), bare = tiny_weights(TensorNaming::kHf, false);
  LlamaWeights b = bind_llama_weights(tiny_cfg(false), untied.wm, TensorNaming::kHf, "m");
  EXPECT_EQ(b.lm_head.data, untied.wm.get("lm_head.weight").data);
  EXPECT_NE(b.lm_head.data, b.tok_embd.data);
  // tie_word_embeddings false and no lm_head: an error naming both, never a silent tie.
  expect_has(bind_error(tiny_cfg(false), bare.wm, TensorNaming::kHf),
             {"'lm_head.weight'", "tie_word_embeddings is false", "model.embed_tokens.weight"});
  b = bind_llama_weights(tiny_cfg(true), bare.wm, TensorNaming::kHf, "m");
  EXPECT_EQ(b.lm_head.data, b.tok_embd.data);
  // Tied in the config: the lm_head is the embedding even where the file also stores one (as transformers).
  b = bind_llama_weights(tiny_cfg(true), untied.wm, TensorNaming::kHf, "m");
  EXPECT_EQ(b.lm_head.data, b.tok_embd.data);
  EXPECT_TRUE(llama_lm_head_tied(tiny_cfg(true), untied.wm, TensorNaming::kHf));
  EXPECT_FALSE(llama_lm_head_tied(tiny_cfg(false), bare.wm, TensorNaming::kHf));
}

TEST(LlamaTensorValidator, GgufAndMetaTieWhereTheFileHasNoOutputWeight) {
  for (TensorNaming n : {TensorNaming::kGguf, TensorNaming::kMeta}) {
    SCOPED_TRACE(tensor_naming_name(n));
    Weights bare = tiny_weights(n, false), untied = tiny_weights(n, true);
    EXPECT_TRUE(llama_lm_head_tied(tiny_cfg(false), bare.wm, n));
    EXPECT_FALSE(llama_lm_head_tied(tiny_cfg(true), untied.wm, n));
    LlamaWeights b = bind_llama_weights(tiny_cfg(true), bare.wm, n, "m");
    EXPECT_EQ(b.lm_head.data, b.tok_embd.data);
    b = bind_llama_weights(tiny_cfg(false), untied.wm, n, "m");
    EXPECT_EQ(b.lm_head.data, untied.wm.get("output.weight").data);
    // A config that disagrees with the file is an error, not a guess.
    expect_has(bind_error(tiny_cfg(false), bare.wm, n), {"tie_embeddings = false", "has no 'output.weight'"});
    expect_has(bind_error(tiny_cfg(true), untied.wm, n), {"tie_embeddings = true", "has 'output.weight'"});
  }
  // config_from_gguf takes the rule from the table: no output.weight -> tied.
  Weights g = tiny_weights(TensorNaming::kGguf, false);
  g.wm.meta["general.architecture"] = std::string("llama");
  g.wm.meta["llama.block_count"] = int64_t(2);
  g.wm.meta["llama.embedding_length"] = int64_t(64);
  g.wm.meta["llama.feed_forward_length"] = int64_t(96);
  g.wm.meta["llama.attention.head_count"] = int64_t(4);
  g.wm.meta["llama.attention.head_count_kv"] = int64_t(2);
  LlamaConfig c = config_from_gguf(g.wm, "m.gguf");
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_NO_THROW(bind_llama_weights(c, g.wm, TensorNaming::kGguf, "m.gguf"));
  g.add("output.weight", {64, 64}, DType::Q8_0);
  c = config_from_gguf(g.wm, "m.gguf");
  EXPECT_FALSE(c.tie_embeddings);
  LlamaWeights b = bind_llama_weights(c, g.wm, TensorNaming::kGguf, "m.gguf");
  EXPECT_EQ(b.lm_head.dtype, DType::Q8_0);
}

TEST(LlamaTensorValidator, ErrorsNameFileTensorShapeDtypeAndTheConfig) {
  const LlamaConfig c = tiny_cfg(false);
  {  // missing
    Weights w = tiny_weights(TensorNaming::kGguf, true);
    w.wm.tensors.erase("blk.1.ffn_up.weight");
    expect_has(bind_error(c, w.wm, TensorNaming::kGguf),
               {"'blk.1.ffn_up.weight' (ffn_up of layer 1) is missing"});
  }
  {  // wrong shape, in a named shard
    Weights w = tiny_weights(TensorNaming::kHf, true);
    w.add("model.layers.0.self_attn.k_proj.weight", {64, 64}, DType::F16,
          "m/model-00002-of-00003.safetensors");
    expect_has(bind_error(c, w.wm, TensorNaming::kHf),
               {"num_key_value_heads x head_dim = 32",
                "'model.layers.0.self_attn.k_proj.weight' (attn_k of layer 0)",
                "is [64, 64] (expected [32, 64])", "(in m/model-00002-of-00003.safetensors)"});
    w.add("model.layers.0.self_attn.k_proj.weight", {32, 64, 1}, DType::F16);
    expect_has(bind_error(c, w.wm, TensorNaming::kHf),
               {"is [32, 64, 1] but the config expects 2-D [32, 64]"});
  }
  {  // GGUF labels the config values by their metadata keys
    Weights w = tiny_weights(TensorNaming::kGguf, true);
    w.add("blk.0.ffn_down.weight", {64, 128}, DType::F16);
    expect_has(
        bind_error(c, w.wm, TensorNaming::kGguf),
        {"llama.feed_forward_length = 96", "'blk.0.ffn_down.weight'", "[64, 128]", "expected [64, 96]"});
  }
  {  // quantised norm
    Weights w = tiny_weights(TensorNaming::kGguf, true);
    w.add("blk.1.attn_norm.weight", {64}, DType::Q8_0);
    expect_has(bind_error(c, w.wm, TensorNaming::kGguf),
               {"'blk.1.attn_norm.weight' (attn_norm of layer 1) is q8_0 but attn_norm weights must be f32, "
                "f16 or bf16"});
  }
  {  // quantised matrix with rows of part blocks
    LlamaConfig odd = c;
    odd.intermediate_size = 80;
    Weights w = tiny_weights(TensorNaming::kHf, true, DType::F32);
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
      w.add(p + "gate_proj.weight", {80, 64}, DType::Q4_0);
      w.add(p + "up_proj.weight", {80, 64}, DType::Q4_0);
      w.wm.tensors.erase(p + "down_proj.weight");
      TensorInfo t;
      t.name = p + "down_proj.weight";
      t.dtype = DType::Q4_0;
      t.shape = {64, 80};
      t.nbytes = 64 * 3 * 18;
      w.wm.tensors[t.name] = t;
    }
    expect_has(bind_error(odd, w.wm, TensorNaming::kHf),
               {"'model.layers.0.mlp.down_proj.weight'", "q4_0 with rows of 80 values", "32-value blocks"});
  }
  {  // stored bytes disagree with the shape
    Weights w = tiny_weights(TensorNaming::kHf, true);
    w.wm.tensors["model.norm.weight"].nbytes = 100;
    expect_has(bind_error(c, w.wm, TensorNaming::kHf),
               {"'model.norm.weight' (out_norm) holds 100 bytes", "needs 256"});
  }
  {  // bias tensors
    Weights w = tiny_weights(TensorNaming::kHf, true);
    w.add("model.layers.1.mlp.up_proj.bias", {96});
    expect_has(bind_error(c, w.wm, TensorNaming::kHf), {"'model.layers.1.mlp.up_proj.bias': bias tensors"});
  }
  {  // an inconsistent config
    LlamaConfig bad = c;
    bad.num_kv_heads = 3;
    Weights w = tiny_weights(TensorNaming::kHf, true);
    expect_has(bind_error(bad, w.wm, TensorNaming::kHf), {"not divisible by num_kv_heads 3"});
  }
  {  // tensors outside the table are ignored
    Weights w = tiny_weights(TensorNaming::kHf, true);
    w.add("model.layers.0.self_attn.rotary_emb.inv_freq", {8});
    EXPECT_EQ(bind_error(c, w.wm, TensorNaming::kHf), "");
  }
}

// The CPU loads through load_model, the GPU through CudaLlama's WeightMap constructor (detect the naming,
// then bind_llama_weights): the same rule decides, so a model one refuses the other refuses too.
TEST(LlamaTensorValidator, CpuAndCudaPathsSeeTheSameOutcome) {
  TempDir dir;
  Weights w = tiny_weights(TensorNaming::kHf, false, DType::BF16);
  std::string header = "{";
  Bytes data;
  for (auto& [name, t] : w.wm.tensors) {
    header += (header.size() > 1 ? "," : "") + ("\"" + name + "\":{\"dtype\":\"" +
                                                (t.dtype == DType::BF16 ? "BF16" : "F32") + "\",\"shape\":[");
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + t.nbytes) + "]}";
    data.resize(data.size() + t.nbytes);
  }
  header += "}";
  write_bytes(dir.file("model.safetensors"), safetensors_bytes(header, data));
  const std::string cfg_json =
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "tie_word_embeddings": TIE})";
  auto with_tie = [&](const char* tie) {
    std::string s = cfg_json;
    s.replace(s.find("TIE"), 3, tie);
    write_text(dir.file("config.json"), s);
    return config_from_hf_json(s, dir.file("config.json"));
  };
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.max_batch = 4;
  // Untied without lm_head.weight: both refuse, with the same message after the location.
  LlamaConfig c = with_tie("false");
  const std::string cpu = error_of([&] { load_model(dir.path(), lo); });
  WeightMap wm = load_weights(dir.path());
  const std::string gpu =
      error_of([&] { bind_llama_weights(c, wm, detect_tensor_naming(wm, "weights"), "weights"); });
  ASSERT_NE(cpu, "");
  ASSERT_NE(gpu, "");
  auto after_where = [](const std::string& m) { return m.substr(m.find(": tensor ")); };
  EXPECT_EQ(after_where(cpu), after_where(gpu));
  expect_has(cpu, {"lm_head.weight", "tie_word_embeddings is false"});
  // Tied: both load, the lm_head being the embedding.
  c = with_tie("true");
  auto m = load_model(dir.path(), lo);
  EXPECT_EQ(m->llama->weights().lm_head.data, m->llama->weights().tok_embd.data);
  LlamaWeights g = bind_llama_weights(c, wm, detect_tensor_naming(wm, "weights"), "weights");
  EXPECT_EQ(g.lm_head.data, g.tok_embd.data);
}

TEST(LlamaTensorValidator, RandomModelsUseTheTablesNamesAndShapes) {
  LlamaConfig c = random_model_preset("tiny");
  for (bool tie : {false, true}) {
    c.tie_embeddings = tie;
    auto m = make_random_model(c, DType::BF16, 3, 4);
    size_t n = 0;
    for (const auto& s : llama_tensor_table())
      for (int l = s.per_layer ? 0 : -1; l < (s.per_layer ? c.num_layers : 0); ++l) {
        if (s.role == LlamaTensor::kLmHead && tie) continue;
        const TensorInfo* t = m->weights->find(llama_tensor_name(s.role, l, TensorNaming::kHf));
        ASSERT_NE(t, nullptr) << s.role_name << " " << l;
        EXPECT_EQ(t->shape, llama_tensor_shape(s.role, c));
        EXPECT_EQ(t->dtype, s.ndim == 1 ? DType::F32 : DType::BF16);
        ++n;
      }
    EXPECT_EQ(m->weights->tensors.size(), n);
    EXPECT_EQ(m->llama->weights().lm_head.data == m->llama->weights().tok_embd.data, tie);
  }
  // Quantised random weights need whole blocks per row (tiny's intermediate 176 is not).
  EXPECT_NE(error_of([&] { make_random_model(c, DType::Q8_0); }).find("mlp.down_proj.weight has rows of 176"),
            std::string::npos);
}

// `llamarun info --tensors` shows each tensor's role from the table (none for tensors outside it).
TEST(LlamaTensorTable, InfoListsEachTensorsRole) {
  const std::string p = kSrc + "/tests/fixtures/golden/llama3_rope/model-f16.gguf";
  auto r = llamarun::testutil::run_llamarun({"info", "-m", p, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& t : j.at("tensors")) by_name[t.at("name")] = t;
  EXPECT_EQ(by_name.at("blk.1.ffn_gate.weight").at("role"), "ffn_gate");
  EXPECT_EQ(by_name.at("blk.1.ffn_gate.weight").at("layer"), 1);
  EXPECT_EQ(by_name.at("token_embd.weight").at("role"), "tok_embd");
  EXPECT_TRUE(by_name.at("token_embd.weight").at("layer").is_null());
  EXPECT_TRUE(by_name.at("rope_freqs.weight").at("role").is_null());
  r = llamarun::testutil::run_llamarun({"info", "-m", p, "--tensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("blk.0.attn_output.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("attn_o"), std::string::npos) << r.out;
}
