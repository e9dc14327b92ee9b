// The quantisers of src/core/quantize.cpp against llama.cpp's (ggml_quantize_chunk) and the gguf package's,
// from tests/fixtures/quant/quantizer_vectors.json (tools/make_quantizer_vectors.py); the mixing rules of
// model/quantize_model.cpp against llama.cpp's for known models; the GGUF writer read back by our reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/quantize.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "model/quantize_model.h"

using namespace llamarun;

namespace {

const std::string kQuantDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/quant";

nlohmann::json load_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(f);
}

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> v(s.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return v;
}

DType dtype_of(const std::string& n) {
  if (n == "Q8_0") return DType::Q8_0;
  if (n == "Q5_0") return DType::Q5_0;
  if (n == "Q5_1") return DType::Q5_1;
  if (n == "Q4_K") return DType::Q4_K;
  if (n == "Q5_K") return DType::Q5_K;
  if (n == "Q6_K") return DType::Q6_K;
  throw std::runtime_error("unknown type " + n);
}

}  // namespace

// Every type, every case: our bytes are llama.cpp's bytes (Q8_0/Q5_0/Q5_1 are also the gguf package's: the
// generator checks that). The k-quants run a floating-point search, so a last-bit difference in a sum
// could flip one level; none does on these inputs, and the test requires them identical.
TEST(Quantizer, MatchesLlamaCpp) {
  auto j = load_json(kQuantDir + "/quantizer_vectors.json");
  ASSERT_EQ(j["format_version"], 1);
  int checked = 0;
  for (auto& c : j["cases"]) {
    std::vector<float> x = c["input"].get<std::vector<float>>();
    for (auto& [tname, ref] : c["types"].items()) {
      const DType t = dtype_of(tname);
      const auto want = from_hex(ref["bytes_hex"].get<std::string>());
      std::vector<uint8_t> got(dtype_row_bytes(t, int64_t(x.size())));
      ASSERT_EQ(got.size(), want.size()) << tname;
      quantize_row(t, x.data(), got.data(), int64_t(x.size()));
      size_t diff = 0, first = got.size();
      for (size_t i = 0; i < got.size(); ++i)
        if (got[i] != want[i]) diff++, first = std::min(first, i);
      EXPECT_EQ(diff, 0u) << c["name"] << " " << tname << ": " << diff << " of " << got.size()
                          << " bytes differ, first at byte " << first << " (block "
                          << first / dtype_block_bytes(t) << ")";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 60);
}

// The error of llama.cpp's quantization, dequantized by the gguf package, is what the fixture records;
// our quantizer's bytes are the same (above), so its error is the same. This pins the error levels the
// formats reach on Gaussian data, independently of any dequantiser of ours.
TEST(Quantizer, ReferenceErrorLevels) {
  auto j = load_json(kQuantDir + "/quantizer_vectors.json");
  const std::map<std::string, double> bound = {{"Q8_0", 0.006}, {"Q6_K", 0.02},  {"Q5_K", 0.04},
                                               {"Q5_1", 0.045}, {"Q5_0", 0.045}, {"Q4_K", 0.08}};
  for (auto& c : j["cases"]) {
    if (c["name"] != "normal") continue;
    for (auto& [tname, ref] : c["types"].items())
      EXPECT_LT(ref["rel_rms"].get<double>(), bound.at(tname)) << tname;
  }
}

// Round trip through our own dequantiser where this build has one for the type (the k-quant dequantisers
// come with the block-format loader): the values are the gguf package's dequantization of the same bytes.
TEST(Quantizer, DequantizedEqualsGgufPackage) {
  auto j = load_json(kQuantDir + "/quantizer_vectors.json");
  int checked = 0;
  for (auto& c : j["cases"]) {
    std::vector<float> x = c["input"].get<std::vector<float>>();
    for (auto& [tname, ref] : c["types"].items()) {
      const DType t = dtype_of(tname);
      std::vector<uint8_t> q(dtype_row_bytes(t, int64_t(x.size())));
      quantize_row(t, x.data(), q.data(), int64_t(x.size()));
      std::vector<float> y(x.size());
      try {
        dequantize_row(t, q.data(), y.data(), int64_t(y.size()));
      } catch (const Error&) {
        continue;  // no dequantiser for this type in this build
      }
      auto want = ref["dequantized"].get<std::vector<float>>();
      for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], want[i]) << c["name"] << " " << tname << " " << i;
      ++checked;
    }
  }
  EXPECT_GE(checked, 10);  // Q8_0 at least, in every build
}

TEST(Quantizer, KQuantScaleMinPacking) {
  // 6-bit pairs survive the 12-byte packing for every position.
  std::mt19937 rng(3);
  std::vector<float> x(256);
  std::normal_distribution<float> nd(0.5f, 1.f);
  for (auto& v : x) v = nd(rng);
  BlockQ4_K b;
  quantize_row(DType::Q4_K, x.data(), &b, 256);
  for (int j = 0; j < 8; ++j) {
    int sc, mn;
    kquant_scale_min(b.scales, j, &sc, &mn);
    EXPECT_GE(sc, 0);
    EXPECT_LE(sc, 63);
    EXPECT_LE(mn, 63);
  }
  int sc0, mn0;
  kquant_scale_min(b.scales, 0, &sc0, &mn0);
  EXPECT_GT(sc0, 0);
}

TEST(QuantMix, SchemeNames) {
  EXPECT_EQ(parse_quant_scheme("q4_k_m").base, DType::Q4_K);
  EXPECT_EQ(parse_quant_scheme("Q4_K_M").file_type, 15u);
  EXPECT_EQ(parse_quant_scheme("q5_k_m").file_type, 17u);
  EXPECT_EQ(parse_quant_scheme("Q6_K").file_type, 18u);
  EXPECT_EQ(parse_quant_scheme("q8_0").file_type, 7u);
  EXPECT_THROW(parse_quant_scheme("q3_k_xl"), Error);
}

// llama.cpp's choices for a 32-layer 4096-wide Llama (Llama-2-7B Q4_K_M as llama-quantize writes it:
// output Q6_K, attn_v/ffn_down Q6_K in layers 0-3, 28-31 and (i-4)%3==2, the rest Q4_K) and for
// SmolLM2-135M (576 = 2.25 x 256: Q4_K falls back to Q5_0, Q6_K to Q8_0; tied embeddings get the output
// rule).
TEST(QuantMix, LlamaCppRules) {
  const QuantScheme q4 = parse_quant_scheme("Q4_K_M"), q5 = parse_quant_scheme("Q5_K_M"),
                    q6 = parse_quant_scheme("Q6_K"), q8 = parse_quant_scheme("Q8_0"),
                    q40 = parse_quant_scheme("Q4_0");
  const std::vector<int64_t> sq = {4096, 4096}, down = {4096, 11008}, emb = {32000, 4096};
  auto t7 = [&](const QuantScheme& s, const std::string& n, const std::vector<int64_t>& shape) {
    return choose_quant_type(s, n, shape, DType::F16, 32, false);
  };
  EXPECT_EQ(t7(q4, "output.weight", emb), DType::Q6_K);
  EXPECT_EQ(t7(q4, "token_embd.weight", emb), DType::Q4_K);
  EXPECT_EQ(t7(q4, "blk.0.attn_norm.weight", {4096}), DType::F16);
  EXPECT_EQ(t7(q4, "blk.0.attn_q.weight", sq), DType::Q4_K);
  // use_more_bits(i, 32): i < 4, i >= 28, (i - 4) % 3 == 2 -> 6, 9, ..., 27.
  for (int i = 0; i < 32; ++i) {
    const bool more = i < 4 || i >= 28 || (i - 4) % 3 == 2;
    const std::string p = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(t7(q4, p + "attn_v.weight", sq), more ? DType::Q6_K : DType::Q4_K) << i;
    EXPECT_EQ(t7(q4, p + "ffn_down.weight", down), more ? DType::Q6_K : DType::Q4_K) << i;
    EXPECT_EQ(t7(q5, p + "ffn_down.weight", down), more ? DType::Q6_K : DType::Q5_K) << i;
    EXPECT_EQ(t7(q4, p + "ffn_gate.weight", {11008, 4096}), DType::Q4_K) << i;
    EXPECT_EQ(t7(q6, p + "ffn_down.weight", down), DType::Q6_K) << i;
  }
  EXPECT_EQ(t7(q8, "output.weight", emb), DType::Q8_0);
  EXPECT_EQ(t7(q40, "output.weight", emb), DType::Q6_K);
  // Hugging Face names map to the same roles.
  EXPECT_EQ(t7(q4, "model.layers.0.mlp.down_proj.weight", down), DType::Q6_K);
  EXPECT_EQ(t7(q4, "model.layers.5.self_attn.v_proj.weight", sq), DType::Q4_K);
  EXPECT_EQ(t7(q4, "lm_head.weight", emb), DType::Q6_K);
  EXPECT_EQ(t7(q4, "model.norm.weight", {4096}), DType::F16);

  // SmolLM2-135M: 30 layers, hidden 576, ffn 1536, tied embeddings.
  auto ts = [&](const QuantScheme& s, const std::string& n, const std::vector<int64_t>& shape) {
    return choose_quant_type(s, n, shape, DType::Q4_1, 30, true);
  };
  EXPECT_EQ(ts(q4, "token_embd.weight", {49152, 576}), DType::Q8_0);
  EXPECT_EQ(ts(q4, "blk.0.attn_v.weight", {192, 576}), DType::Q8_0);  // Q6_K -> Q8_0
  EXPECT_EQ(ts(q4, "blk.3.attn_v.weight", {192, 576}), DType::Q5_0);  // Q4_K -> Q5_0
  EXPECT_EQ(ts(q4, "blk.0.ffn_down.weight", {576, 1536}), DType::Q6_K);
  EXPECT_EQ(ts(q4, "blk.3.ffn_down.weight", {576, 1536}), DType::Q4_K);
  EXPECT_EQ(ts(q5, "blk.3.ffn_up.weight", {1536, 576}), DType::Q5_1);  // Q5_K -> Q5_1
  EXPECT_EQ(ts(q6, "blk.3.ffn_up.weight", {1536, 576}), DType::Q8_0);
  EXPECT_EQ(ts(parse_quant_scheme("Q4_1"), "blk.3.ffn_up.weight", {1536, 576}), DType::Q4_1);
  // Rows 32 does not divide fall back to F16.
  EXPECT_EQ(ts(q40, "blk.3.ffn_up.weight", {1536, 100}), DType::F16);
}

TEST(GgufWriter, RoundTripThroughOurReader) {
  const std::string path = testing::TempDir() + "/llamarun_writer_test.gguf";
  GgufWriter w;
  w.set_str("general.architecture", "llama");
  w.set_u32("llama.block_count", 3);
  w.set_f32("llama.rope.freq_base", 10000.f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_strs("tokenizer.ggml.tokens", {"a", "bc", ""});
  w.set_i32s("tokenizer.ggml.token_type", {1, 1, 3});
  w.set_f32s("tokenizer.ggml.scores", {0.f, -1.5f, 2.f});
  w.set_u32("general.alignment", 64);
  w.set_u32("llama.block_count", 4);  // replaces
  std::vector<float> a(3 * 64), b(7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(float(i));
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(i);
  w.add_tensor("blk.0.attn_q.weight", DType::Q8_0, {3, 64});
  w.add_tensor("norm.weight", DType::F32, {7});
  w.add_tensor("emb.weight", DType::F16, {2, 3});
  EXPECT_THROW(w.add_tensor("bad.weight", DType::Q4_K, {2, 100}), Error);
  w.write(path, [&](size_t i, uint8_t* dst, size_t n) {
    if (i == 0) quantize_row(DType::Q8_0, a.data(), dst, 192);
    if (i == 1) std::memcpy(dst, b.data(), n);
    if (i == 2) quantize_row(DType::F16, b.data(), dst, 6);
  });
  WeightMap wm = read_gguf(path);
  EXPECT_EQ(meta_int(wm, "llama.block_count", 0), 4);
  EXPECT_EQ(meta_str(wm, "general.architecture", ""), "llama");
  EXPECT_DOUBLE_EQ(meta_float(wm, "llama.rope.freq_base", 0), 10000.0);
  EXPECT_TRUE(meta_bool(wm, "tokenizer.ggml.add_bos_token", false));
  EXPECT_EQ(*meta_strs(wm, "tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(*meta_ints(wm, "tokenizer.ggml.token_type"), (std::vector<int64_t>{1, 1, 3}));
  EXPECT_EQ(*meta_floats(wm, "tokenizer.ggml.scores"), (std::vector<double>{0.0, -1.5, 2.0}));
  const TensorInfo& q = wm.get("blk.0.attn_q.weight");
  EXPECT_EQ(q.dtype, DType::Q8_0);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{3, 64}));
  std::vector<float> y(192);
  dequantize_row(DType::Q8_0, q.data, y.data(), 192);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], a[i], 1.0 / 127 + 1e-6);
  const TensorInfo& n = wm.get("norm.weight");
  EXPECT_EQ(n.shape, (std::vector<int64_t>{7}));
  EXPECT_EQ(std::memcmp(n.data, b.data(), 28), 0);
  EXPECT_EQ(wm.get("emb.weight").shape, (std::vector<int64_t>{2, 3}));
  // Data offsets honour the 64-byte alignment.
  const uint8_t* base = wm.files.front()->data();
  for (auto& [name, t] : wm.tensors) EXPECT_EQ((static_cast<const uint8_t*>(t.data) - base) % 64, 0) << name;
  // The raw key/values come back with their GGUF types.
  auto kvs = read_gguf_kvs(path);
  ASSERT_EQ(kvs.size(), 8u);
  EXPECT_EQ(kvs[1].key, "llama.block_count");
  EXPECT_EQ(kvs[1].type, GgufValueType::U32);
  EXPECT_EQ(kvs[3].type, GgufValueType::Bool);
  std::remove(path.c_str());
}

TEST(GgufWriter, FailedFillLeavesNoFile) {
  const std::string path = testing::TempDir() + "/llamarun_writer_fail.gguf";
  std::remove(path.c_str());
  GgufWriter w;
  w.add_tensor("x.weight", DType::F32, {4});
  EXPECT_THROW(w.write(path, [](size_t, uint8_t*, size_t) { fail("boom"); }), Error);
  EXPECT_FALSE(std::ifstream(path).good());
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
  EXPECT_THROW(w.write("/nonexistent-dir/x.gguf", [](size_t, uint8_t*, size_t) {}), Error);
}
