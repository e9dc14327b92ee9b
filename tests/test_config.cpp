// Model config: config.json and GGUF metadata parsing, validation, and the tensor/config agreement check
// (bind_llama_weights, the one validator; the table's names are tested in test_llama_tensors.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "format_writers.h"
#include "formats/gguf.h"
#include "formats/model_files.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/llama_tensors.h"

using namespace llamarun;
using namespace llamarun::testing_util;

namespace {

// SmolLM2-135M-Instruct's config.json (abridged to the fields that matter).
const char* kSmolConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "max_position_embeddings": 8192,
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152})";

// Llama-3.2-1B's config.json (abridged).
const char* kLlama32Config = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64, "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "vocab_size": 128256})";

std::string hf_error(const std::string& text) {
  try {
    config_from_hf_json(text, "cfg/config.json");
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("cfg/config.json"), std::string::npos) << m;
    return m;
  }
  return "";
}

// A minimal config with one field replaced (or added). `value` is JSON text; "" removes the field.
std::string tiny_with(const std::string& key, const std::string& value) {
  std::map<std::string, std::string> f = {{"architectures", R"(["LlamaForCausalLM"])"},
                                          {"model_type", R"("llama")"},
                                          {"vocab_size", "100"},
                                          {"hidden_size", "64"},
                                          {"intermediate_size", "96"},
                                          {"num_hidden_layers", "2"},
                                          {"num_attention_heads", "4"},
                                          {"num_key_value_heads", "2"}};
  if (value.empty())
    f.erase(key);
  else
    f[key] = value;
  std::string s = "{";
  for (auto& [k, v] : f) s += (s.size() > 1 ? "," : "") + ("\"" + k + "\":" + v);
  return s + "}";
}

#define EXPECT_HF_ERROR(text, ...)                                                              \
  do {                                                                                          \
    std::string msg_ = hf_error(text);                                                          \
    ASSERT_FALSE(msg_.empty()) << "bad config accepted: " << (text);                            \
    for (const std::string& needle : std::vector<std::string>{__VA_ARGS__})                     \
      EXPECT_NE(msg_.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg_; \
  } while (0)

}  // namespace

TEST(ConfigHf, SmolLM2) {
  LlamaConfig c = config_from_hf_json(kSmolConfig, "config.json");
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position, 8192);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.f);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.rope_layout, RopeLayout::kHalf);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_ids, (std::vector<int>{2}));
}

TEST(ConfigHf, Llama32WithLlama3RopeScaling) {
  LlamaConfig c = config_from_hf_json(kLlama32Config, "config.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 32.f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.f);
  EXPECT_EQ(c.eos_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_id, 128000);
}

TEST(ConfigHf, Defaults) {
  LlamaConfig c = config_from_hf_json(tiny_with("num_key_value_heads", ""), "config.json");
  EXPECT_EQ(c.num_kv_heads, 4);  // = heads
  EXPECT_EQ(c.head_dim, 16);     // hidden / heads
  EXPECT_EQ(c.max_position, 2048);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.bos_id, -1);
  EXPECT_TRUE(c.eos_ids.empty());
  EXPECT_EQ(config_from_hf_json(tiny_with("num_key_value_heads", "null"), "c").num_kv_heads, 4);
  EXPECT_EQ(config_from_hf_json(tiny_with("architectures", ""), "c").hidden_size, 64);
  EXPECT_EQ(config_from_hf_json(tiny_with("head_dim", "32"), "c").head_dim, 32);
}

TEST(ConfigHf, RopeScalingVariants) {
  LlamaConfig lin = config_from_hf_json(tiny_with("rope_scaling", R"({"type":"linear","factor":2.0})"), "c");
  EXPECT_EQ(lin.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_FLOAT_EQ(lin.rope_scaling.factor, 2.f);
  LlamaConfig def = config_from_hf_json(tiny_with("rope_scaling", R"({"rope_type":"default"})"), "c");
  EXPECT_EQ(def.rope_scaling.type, RopeScaling::Type::kNone);
  // transformers 5: rope_parameters carries theta and scaling.
  LlamaConfig v5 = config_from_hf_json(
      tiny_with("rope_parameters", R"({"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,)"
                                   R"("low_freq_factor":1.0,"high_freq_factor":4.0,)"
                                   R"("original_max_position_embeddings":8192})"),
      "c");
  EXPECT_FLOAT_EQ(v5.rope_theta, 500000.f);
  EXPECT_EQ(v5.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(v5.rope_scaling.factor, 8.f);
  LlamaConfig v5d = config_from_hf_json(
      tiny_with("rope_parameters", R"({"rope_type":"default","rope_theta":1234.0})"), "c");
  EXPECT_FLOAT_EQ(v5d.rope_theta, 1234.f);
  EXPECT_EQ(v5d.rope_scaling.type, RopeScaling::Type::kNone);
}

// Issue 9, fault 9: the same rope rule with and without rope_parameters.
TEST(ConfigHf, RopeOneRuleWithRopeParameters) {
  auto with2 = [](const std::string& k1, const std::string& v1, const std::string& k2,
                  const std::string& v2) {
    std::string s = tiny_with(k1, v1);
    s.pop_back();
    return s + ",\"" + k2 + "\":" + v2 + "}";
  };
  const std::string params = R"({"rope_type":"default","rope_theta":10000.0})";
  EXPECT_HF_ERROR(with2("rope_parameters", params, "rope_scaling", R"({"type":"yarn","factor":4})"),
                  "unsupported rope scaling type 'yarn'");
  EXPECT_HF_ERROR(with2("rope_parameters", params, "rope_scaling", R"({"type":"x"})"), "'x'");
  EXPECT_HF_ERROR(with2("rope_parameters", params, "rope_theta", "-1"), "rope_theta", "positive");
  EXPECT_HF_ERROR(with2("rope_parameters", params, "rope_theta", "20000"), "rope_theta", "differ");
  EXPECT_HF_ERROR(with2("rope_parameters", params, "rope_scaling", R"({"type":"linear","factor":2})"),
                  "rope_scaling", "rope_parameters");
  EXPECT_HF_ERROR(tiny_with("rope_parameters", R"({"rope_type":"default","rope_theta":-1})"), "rope_theta");
  // Agreeing copies (transformers 5 keeps both) load.
  const LlamaConfig ok = config_from_hf_json(
      with2("rope_parameters", R"({"rope_type":"linear","factor":2.0,"rope_theta":500.0})", "rope_scaling",
            R"({"type":"linear","factor":2.0})"),
      "c");
  EXPECT_EQ(ok.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_FLOAT_EQ(ok.rope_theta, 500.f);
  EXPECT_FLOAT_EQ(
      config_from_hf_json(with2("rope_parameters", params, "rope_theta", "10000"), "c").rope_theta, 10000.f);
}

TEST(ConfigHf, Errors) {
  EXPECT_HF_ERROR("{not json", "not valid JSON");
  EXPECT_HF_ERROR("[1]", "JSON object");
  EXPECT_HF_ERROR(tiny_with("architectures", R"(["MistralForCausalLM"])"), "unsupported architecture",
                  "MistralForCausalLM");
  EXPECT_HF_ERROR(tiny_with("model_type", R"("qwen2")"), "unsupported model_type", "qwen2");
  EXPECT_HF_ERROR(tiny_with("hidden_size", ""), "'hidden_size'", "missing");
  EXPECT_HF_ERROR(tiny_with("hidden_size", R"("64")"), "'hidden_size'", "integer");
  EXPECT_HF_ERROR(tiny_with("hidden_size", "64.5"), "'hidden_size'", "integer");
  EXPECT_HF_ERROR(tiny_with("vocab_size", "-5"), "vocab_size", "-5");
  EXPECT_HF_ERROR(tiny_with("vocab_size", "99999999999"), "vocab_size");
  EXPECT_HF_ERROR(tiny_with("num_attention_heads", "0"), "num_attention_heads", "0");
  EXPECT_HF_ERROR(tiny_with("num_key_value_heads", "3"), "num_heads 4", "num_kv_heads 3");
  EXPECT_HF_ERROR(tiny_with("num_key_value_heads", "8"), "num_kv_heads = 8");
  EXPECT_HF_ERROR(tiny_with("head_dim", "15"), "head_dim 15", "even");
  EXPECT_HF_ERROR(tiny_with("num_attention_heads", "5"), "hidden_size 64", "not divisible");
  EXPECT_HF_ERROR(tiny_with("num_hidden_layers", "100000"), "num_layers = 100000");
  EXPECT_HF_ERROR(tiny_with("rms_norm_eps", "-1"), "rms_norm_eps");
  EXPECT_HF_ERROR(tiny_with("rope_theta", "0"), "rope_theta");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"({"type":"yarn","factor":4})"),
                  "unsupported rope scaling type 'yarn'");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"({"rope_type":"dynamic","factor":4})"), "'dynamic'");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"({"type":"linear"})"), "needs 'factor'");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"({"type":"linear","factor":-2})"), "factor");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"({"rope_type":"llama3","factor":8})"), "llama3",
                  "low_freq_factor");
  EXPECT_HF_ERROR(tiny_with("rope_scaling", R"("linear")"), "rope_scaling", "object");
  EXPECT_HF_ERROR(tiny_with("tie_word_embeddings", "1"), "tie_word_embeddings");
  EXPECT_HF_ERROR(tiny_with("bos_token_id", "100"), "bos_token_id = 100");
  EXPECT_HF_ERROR(tiny_with("eos_token_id", "[1, 200]"), "eos_token_id = 200");
  EXPECT_HF_ERROR(tiny_with("eos_token_id", R"(["x"])"), "eos_token_id");
  EXPECT_HF_ERROR(tiny_with("attention_bias", "true"), "attention_bias", "not supported");
  EXPECT_HF_ERROR(tiny_with("mlp_bias", "true"), "mlp_bias", "not supported");
  EXPECT_HF_ERROR(tiny_with("hidden_act", R"("gelu")"), "hidden_act", "gelu");
  EXPECT_EQ(hf_error(tiny_with("attention_bias", "false")), "");
  EXPECT_EQ(hf_error(tiny_with("hidden_act", R"("silu")")), "");
}

// ---------------------------------------------------------------- GGUF metadata

namespace {

WeightMap tiny_gguf_meta() {
  WeightMap wm;
  wm.meta["general.architecture"] = std::string("llama");
  wm.meta["llama.block_count"] = int64_t(2);
  wm.meta["llama.embedding_length"] = int64_t(64);
  wm.meta["llama.feed_forward_length"] = int64_t(96);
  wm.meta["llama.attention.head_count"] = int64_t(4);
  wm.meta["llama.attention.head_count_kv"] = int64_t(2);
  wm.meta["llama.rope.freq_base"] = 500000.0;
  wm.meta["llama.attention.layer_norm_rms_epsilon"] = 1e-6;
  wm.meta["llama.context_length"] = int64_t(4096);
  wm.meta["llama.rope.dimension_count"] = int64_t(16);
  wm.meta["tokenizer.ggml.tokens"] = std::vector<std::string>(100, "x");
  wm.meta["tokenizer.ggml.bos_token_id"] = int64_t(1);
  wm.meta["tokenizer.ggml.eos_token_id"] = int64_t(2);
  wm.meta["tokenizer.ggml.eot_token_id"] = int64_t(3);
  return wm;
}

std::string gguf_cfg_error(const WeightMap& wm) {
  try {
    config_from_gguf(wm, "m.gguf");
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("m.gguf"), std::string::npos) << m;
    return m;
  }
  return "";
}

}  // namespace

TEST(ConfigGguf, FromMetadata) {
  WeightMap wm = tiny_gguf_meta();
  LlamaConfig c = config_from_gguf(wm, "m.gguf");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 100);  // from the token list
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_EQ(c.max_position, 4096);
  EXPECT_EQ(c.rope_layout, RopeLayout::kInterleaved);
  EXPECT_TRUE(c.tie_embeddings);  // no output.weight
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_ids, (std::vector<int>{2, 3}));

  wm.meta["llama.vocab_size"] = int64_t(120);
  wm.meta["llama.rope.scaling.type"] = std::string("linear");
  wm.meta["llama.rope.scaling.factor"] = 4.0;
  wm.tensors["output.weight"] = TensorInfo{};
  c = config_from_gguf(wm, "m.gguf");
  EXPECT_EQ(c.vocab_size, 120);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 4.f);
  EXPECT_FALSE(c.tie_embeddings);
}

TEST(ConfigGguf, Errors) {
  struct Case {
    std::string key;
    MetaValue value;
    bool erase;
    const char* needle;
  };
  std::vector<Case> cases = {
      {"general.architecture", std::string("qwen2"), false, "unsupported architecture 'qwen2'"},
      {"general.architecture", MetaValue{}, true, "general.architecture' is missing"},
      {"llama.block_count", MetaValue{}, true, "'llama.block_count' is missing"},
      {"llama.block_count", int64_t(5000), false, "num_layers = 5000"},
      {"llama.block_count", int64_t(1) << 40, false, "llama.block_count"},
      {"llama.attention.head_count", std::vector<int64_t>{4, 4}, false,
       "llama.attention.head_count' must be"},
      {"llama.attention.head_count", int64_t(0), false, "head_count = 0"},
      {"llama.attention.head_count", int64_t(5), false, "not divisible"},
      {"llama.attention.head_count_kv", int64_t(3), false, "num_kv_heads 3"},
      {"llama.rope.dimension_count", int64_t(8), false, "rope.dimension_count 8"},
      {"llama.rope.freq_base", std::string("1e4"), false, "llama.rope.freq_base' must be a number"},
      {"llama.rope.scaling.type", std::string("yarn"), false, "'yarn'"},
      {"llama.vocab_size", int64_t(-1), false, "vocab_size = -1"},
      {"tokenizer.ggml.bos_token_id", int64_t(100), false, "bos_token_id = 100"},
      {"tokenizer.ggml.eos_token_id", int64_t(-7), false, "eos_token_id = -7"},
      {"tokenizer.ggml.tokens", MetaValue{}, true, "vocabulary size"},
      {"llama.expert_count", int64_t(8), false, "mixture-of-experts"},
  };
  for (const auto& cs : cases) {
    WeightMap wm = tiny_gguf_meta();
    if (cs.erase)
      wm.meta.erase(cs.key);
    else
      wm.meta[cs.key] = cs.value;
    std::string m = gguf_cfg_error(wm);
    EXPECT_NE(m.find(cs.needle), std::string::npos) << cs.key << ": '" << cs.needle << "' not in: " << m;
  }
}

// rope_freqs.weight (llama.cpp bakes Llama 3 scaling into it) is read as per-dimension divisors.
TEST(ConfigGguf, Llama3RopeFreqs) {
  WeightMap wm = tiny_gguf_meta();
  const int hd = 16;
  const double theta = 500000.0, factor = 8.0, low = 1.0, high = 4.0, orig = 8192.0;
  std::vector<float> f(hd / 2);
  for (int i = 0; i < hd / 2; ++i) {
    double freq = 1.0 / std::pow(theta, 2.0 * i / hd);
    double wavelen = 2 * M_PI / freq;
    if (wavelen < orig / high)
      f[i] = 1.0f;
    else if (wavelen > orig / low)
      f[i] = float(factor);
    else {
      double smooth = (orig / wavelen - low) / (high - low);
      f[i] = float(1.0 / ((1 - smooth) / factor + smooth));
    }
  }
  TensorInfo t;
  t.name = "rope_freqs.weight";
  t.dtype = DType::F32;
  t.shape = {hd / 2};
  t.data = f.data();
  t.nbytes = f.size() * 4;
  wm.tensors[t.name] = t;
  LlamaConfig c = config_from_gguf(wm, "m.gguf");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  ASSERT_EQ(c.rope_freq_factors.size(), size_t(hd / 2));
  for (int i = 0; i < hd / 2; ++i) EXPECT_EQ(c.rope_freq_factors[i], f[i]);
  f[3] = -1.0f;
  EXPECT_NE(gguf_cfg_error(wm).find("rope_freqs.weight[3] = -1 is not positive"), std::string::npos);
  f[3] = 1.0f;
  wm.tensors[t.name].shape = {3};
  EXPECT_NE(gguf_cfg_error(wm).find("rope_freqs.weight must be f32 [8]"), std::string::npos);
}

// ---------------------------------------------------------------- tensors vs config

namespace {

// A tensor of `shape` and `dt` (no data: the validator reads only names, shapes, dtypes and sizes).
void add(WeightMap& wm, const std::string& name, std::vector<int64_t> shape, DType dt = DType::F32) {
  TensorInfo t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  t.nbytes = cols % dtype_block_size(dt) ? 0 : dtype_row_bytes(dt, cols) * size_t(t.numel() / cols);
  wm.tensors[name] = t;
}

// HF-named tensors for vocab 100, hidden 64, inter 96, 2 layers, 4 heads, 2 kv heads, head_dim 16.
WeightMap tiny_hf_tensors(bool with_lm_head) {
  WeightMap wm;
  add(wm, "model.embed_tokens.weight", {100, 64});
  add(wm, "model.norm.weight", {64});
  if (with_lm_head) add(wm, "lm_head.weight", {100, 64});
  for (int l = 0; l < 2; ++l) {
    std::string b = "model.layers." + std::to_string(l) + ".";
    add(wm, b + "input_layernorm.weight", {64});
    add(wm, b + "post_attention_layernorm.weight", {64});
    add(wm, b + "self_attn.q_proj.weight", {64, 64});
    add(wm, b + "self_attn.k_proj.weight", {32, 64});
    add(wm, b + "self_attn.v_proj.weight", {32, 64});
    add(wm, b + "self_attn.o_proj.weight", {64, 64});
    add(wm, b + "mlp.gate_proj.weight", {96, 64});
    add(wm, b + "mlp.up_proj.weight", {96, 64});
    add(wm, b + "mlp.down_proj.weight", {64, 96});
  }
  return wm;
}

std::string check_error(const LlamaConfig& c, const WeightMap& wm, bool gguf) {
  try {
    bind_llama_weights(c, wm, gguf ? TensorNaming::kGguf : TensorNaming::kHf, "dir/config.json");
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind("dir/config.json: ", 0), 0u) << m;
    return m;
  }
  return "";
}

}  // namespace

TEST(ConfigTensors, HfNamesAgree) {
  LlamaConfig c = config_from_hf_json(tiny_with("tie_word_embeddings", "false"), "c");
  EXPECT_EQ(check_error(c, tiny_hf_tensors(true), false), "");
  std::string m = check_error(c, tiny_hf_tensors(false), false);
  EXPECT_NE(m.find("lm_head.weight"), std::string::npos) << m;
  EXPECT_NE(m.find("tie_word_embeddings is false"), std::string::npos) << m;
  c.tie_embeddings = true;
  EXPECT_EQ(check_error(c, tiny_hf_tensors(false), false), "");
}

TEST(ConfigTensors, HiddenSizeMismatchNamesBoth) {
  LlamaConfig c = config_from_hf_json(tiny_with("tie_word_embeddings", "true"), "c");
  WeightMap wm = tiny_hf_tensors(false);
  add(wm, "model.embed_tokens.weight", {100, 32});
  std::string m = check_error(c, wm, false);
  for (const char* needle : {"dir/config.json", "hidden_size = 64", "model.embed_tokens.weight", "[100, 32]",
                             "expected [100, 64]"})
    EXPECT_NE(m.find(needle), std::string::npos) << "'" << needle << "' not in: " << m;
}

TEST(ConfigTensors, EachConfigValueChecked) {
  LlamaConfig base = config_from_hf_json(tiny_with("tie_word_embeddings", "true"), "c");
  struct Case {
    void (*mutate)(LlamaConfig&);
    const char* needle;
  };
  std::vector<Case> cases = {
      {[](LlamaConfig& c) { c.vocab_size = 99; }, "vocab_size = 99"},
      {[](LlamaConfig& c) { c.num_kv_heads = 4; }, "num_key_value_heads x head_dim = 64"},
      {[](LlamaConfig& c) { c.num_heads = 2; }, "num_attention_heads x head_dim = 32"},
      {[](LlamaConfig& c) { c.intermediate_size = 128; }, "intermediate_size = 128"},
      {[](LlamaConfig& c) { c.num_layers = 3; },
       "model.layers.2.input_layernorm.weight' (attn_norm of layer 2) is missing"},
  };
  for (const auto& cs : cases) {
    LlamaConfig c = base;
    cs.mutate(c);
    std::string m = check_error(c, tiny_hf_tensors(false), false);
    EXPECT_NE(m.find(cs.needle), std::string::npos) << "'" << cs.needle << "' not in: " << m;
  }
  WeightMap wm = tiny_hf_tensors(false);
  add(wm, "model.norm.weight", {64, 1});
  EXPECT_NE(check_error(base, wm, false).find("1-D"), std::string::npos);
  add(wm, "model.norm.weight", {64}, DType::Q8_0);
  EXPECT_NE(check_error(base, wm, false).find("must be f32, f16 or bf16"), std::string::npos);
  WeightMap wb = tiny_hf_tensors(false);
  add(wb, "model.layers.0.self_attn.q_proj.bias", {64});
  EXPECT_NE(check_error(base, wb, false).find("q_proj.bias': bias tensors are not supported"),
            std::string::npos);
}

TEST(ConfigTensors, GgufNames) {
  WeightMap wm = tiny_gguf_meta();
  add(wm, "token_embd.weight", {100, 64}, DType::Q8_0);
  add(wm, "output_norm.weight", {64});
  for (int l = 0; l < 2; ++l) {
    std::string b = "blk." + std::to_string(l) + ".";
    add(wm, b + "attn_norm.weight", {64});
    add(wm, b + "ffn_norm.weight", {64});
    add(wm, b + "attn_q.weight", {64, 64}, DType::Q4_1);
    add(wm, b + "attn_k.weight", {32, 64}, DType::Q4_1);
    add(wm, b + "attn_v.weight", {32, 64}, DType::Q4_1);
    add(wm, b + "attn_output.weight", {64, 64}, DType::Q4_0);
    add(wm, b + "ffn_gate.weight", {96, 64});
    add(wm, b + "ffn_up.weight", {96, 64});
    add(wm, b + "ffn_down.weight", {64, 96});
  }
  LlamaConfig c = config_from_gguf(wm, "m.gguf");
  EXPECT_EQ(check_error(c, wm, true), "");
  add(wm, "output.weight", {100, 32});
  c = config_from_gguf(wm, "m.gguf");
  std::string m = check_error(c, wm, true);
  EXPECT_NE(m.find("llama.embedding_length = 64"), std::string::npos) << m;
  EXPECT_NE(m.find("output.weight"), std::string::npos) << m;
  add(wm, "output.weight", {100, 64});
  add(wm, "blk.1.attn_k.weight", {64, 64});
  m = check_error(c, wm, true);
  EXPECT_NE(m.find("llama.attention.head_count_kv x head_dim = 32"), std::string::npos) << m;
  EXPECT_NE(m.find("blk.1.attn_k.weight"), std::string::npos) << m;
}

// End to end: a tiny HF model directory written here loads, parses and checks.
TEST(ConfigTensors, HfDirectoryEndToEnd) {
  TempDir dir;
  std::string header = "{";
  Bytes data;
  WeightMap shapes = tiny_hf_tensors(false);
  for (auto& [name, t] : shapes.tensors) {
    size_t n = size_t(t.numel()) * 2;
    header += (header.size() > 1 ? "," : "") + ("\"" + name + "\":{\"dtype\":\"BF16\",\"shape\":[");
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header +=
        "],\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + n) + "]}";
    data.resize(data.size() + n);
  }
  header += "}";
  write_bytes(dir.file("model.safetensors"), safetensors_bytes(header, data));
  write_text(dir.file("config.json"), tiny_with("tie_word_embeddings", "true"));
  WeightMap wm = load_weights(dir.path());
  LlamaConfig c = config_from_hf_json(read_text_file(dir.file("config.json")), dir.file("config.json"));
  EXPECT_NO_THROW(bind_llama_weights(c, wm, TensorNaming::kHf, dir.file("config.json")));
  EXPECT_EQ(wm.get("model.layers.1.mlp.down_proj.weight").dtype, DType::BF16);
}
