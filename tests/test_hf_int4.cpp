// AWQ / GPTQ int4 checkpoints repacked into Q4_1 at load (formats/hf_int4.h). Fixtures:
// tests/fixtures/awq_gptq/{awq,gptq,gptq_v2}/ made by tools/make_awq_gptq_fixtures.py from the float
// model tests/fixtures/golden/gqa_untied; each reference.json holds dequantized values that the script
// computed from the written int32 tensors with the published formulas (numpy, no llamarun code).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "core/fp16.h"
#include "error_util.h"
#include "format_writers.h"
#include "formats/model_files.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace llamarun;
using llamarun::testing_util::Bytes;
using llamarun::testing_util::TempDir;

namespace {

const std::string kDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/awq_gptq";
const std::string kFloatDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/golden/gqa_untied";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

using testutil::error_of;

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

class HfInt4Fixture : public ::testing::TestWithParam<std::string> {};

// Every reference row: llamarun's Q4_1 bytes, dequantized by dequantize_row, equal the published
// dequantization s * (q - z) up to the fp16 rounding of m = -s * z (|error| <= |s * z| * 2^-11; d = s is
// exact for fp16 scales and the nibbles are copied).
TEST_P(HfInt4Fixture, RepackedQ4_1DequantizesToTheReference) {
  const std::string dir = kDir + "/" + GetParam();
  const auto ref = read_json(dir + "/reference.json");
  WeightMap wm = load_weights(dir);
  EXPECT_EQ(wm.repacked_from, ref["quant_method"].get<std::string>());
  EXPECT_TRUE(wm.int_tensors.empty());
  EXPECT_EQ(wm.find("model.layers.0.self_attn.q_proj.qweight"), nullptr);
  EXPECT_EQ(wm.find("model.layers.0.self_attn.q_proj.scales"), nullptr);
  ASSERT_FALSE(ref["tensors"].empty());
  for (auto& [name, r] : ref["tensors"].items()) {
    const TensorInfo& t = wm.get(name);
    EXPECT_EQ(t.dtype, DType::Q4_1) << name;
    const auto shape = r["shape"].get<std::vector<int64_t>>();
    ASSERT_EQ(t.shape, shape) << name;
    const int64_t in = shape[1];
    ASSERT_EQ(t.nbytes, size_t(shape[0]) * dtype_row_bytes(DType::Q4_1, in));
    const double tol = r["max_abs_scale_times_zero"].get<double>() * std::ldexp(1.0, -11) + 1e-7;
    double max_err = 0;
    std::vector<float> row(static_cast<size_t>(in));
    const auto rows = r["rows"].get<std::vector<int64_t>>();
    for (size_t k = 0; k < rows.size(); ++k) {
      dequantize_row(DType::Q4_1,
                     static_cast<const uint8_t*>(t.data) + size_t(rows[k]) * dtype_row_bytes(DType::Q4_1, in),
                     row.data(), in);
      for (int64_t i = 0; i < in; ++i) {
        const double want = r["values"][k][size_t(i)].get<double>();
        max_err = std::max(max_err, std::fabs(row[size_t(i)] - want));
        ASSERT_LE(std::fabs(row[size_t(i)] - want), tol)
            << name << " row " << rows[k] << " input " << i << ": got " << row[size_t(i)] << ", reference "
            << want;
      }
    }
    RecordProperty(name + "_max_err", std::to_string(max_err));
  }
  // The other matrices are repacked too and the float tensors kept.
  EXPECT_EQ(wm.get("model.layers.1.mlp.up_proj.weight").dtype, DType::Q4_1);
  EXPECT_EQ(wm.get("model.embed_tokens.weight").dtype, DType::F16);
  EXPECT_EQ(wm.get("model.norm.weight").dtype, DType::F32);
}

// The whole model on the CPU against transformers' logits of the float model it was quantized from
// (golden.json of gqa_untied; 28 prompt positions x 257 logits). 4-bit groups move these logits a lot on
// this tiny random model: llama.cpp's Q4_1 of the same weights, run by transformers (golden-q4_1.json),
// is at per-position correlation min 0.856 / mean 0.939, mean |difference| 0.333, max 1.88, argmax equal
// at 13 of 28 positions. The bounds leave room for that and still fail for a wrong packing: with the AWQ
// nibble order taken as 0..7 (unreordered) the correlation mean is -0.04, mean |d| 1.42, argmax 0/28
// (measured when writing this).
TEST_P(HfInt4Fixture, LogitsTrackTheFloatModel) {
  const std::string dir = kDir + "/" + GetParam();
  const auto g = read_json(kFloatDir + "/golden.json");
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.activations = "f32";
  auto m = load_model(dir, lo);
  const int V = m->cfg.vocab_size;
  int agree = 0, total = 0;
  double corr_sum = 0, corr_min = 1, abs_sum = 0, max_d = 0;
  for (size_t p = 0; p < g["prompts"].size(); ++p) {
    const auto prompt = g["prompts"][p].get<std::vector<int32_t>>();
    const std::vector<float> got = m->llama->prompt_logits(prompt);
    ASSERT_EQ(got.size(), prompt.size() * size_t(V));
    for (size_t t = 0; t < prompt.size(); ++t) {
      double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
      int ref_arg = 0, got_arg = 0;
      for (int v = 0; v < V; ++v) {
        const double y = g["logits"][p][t][size_t(v)].get<double>(), x = got[t * size_t(V) + size_t(v)];
        sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
        max_d = std::max(max_d, std::fabs(x - y));
        abs_sum += std::fabs(x - y);
        if (x > got[t * size_t(V) + size_t(got_arg)]) got_arg = v;
        if (y > g["logits"][p][t][size_t(ref_arg)].get<double>()) ref_arg = v;
      }
      const double cov = sxy / V - sx / V * sy / V;
      const double corr = cov / std::sqrt((sxx / V - sx / V * sx / V) * (syy / V - sy / V * sy / V));
      corr_sum += corr;
      corr_min = std::min(corr_min, corr);
      agree += got_arg == ref_arg;
      ++total;
    }
  }
  const double corr_mean = corr_sum / total, abs_mean = abs_sum / (double(total) * V);
  std::printf(
      "%s vs float golden: correlation min %.3f mean %.3f, mean |d| %.3f, max |d| %.2f, argmax %d/%d\n",
      GetParam().c_str(), corr_min, corr_mean, abs_mean, max_d, agree, total);
  EXPECT_GT(corr_mean, 0.90);
  EXPECT_GT(corr_min, 0.75);
  EXPECT_LT(abs_mean, 0.5);
  EXPECT_LT(max_d, 3.5);
  EXPECT_GE(agree, 8) << "of " << total;  // chance: 28 / 257
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfInt4Fixture, ::testing::Values("awq", "gptq", "gptq_v2"));

// `llamarun info` shows the repacked tensors as q4_1 and names the source.
TEST(HfInt4, InfoShowsQ4_1AndTheSource) {
  auto r = testutil::run_llamarun({"info", "-m", kDir + "/awq", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_HAS(j["repacked_from"].get<std::string>(), "awq");
  bool seen = false;
  for (auto& t : j["tensors"])
    if (t["name"] == "model.layers.0.mlp.down_proj.weight") {
      seen = true;
      EXPECT_EQ(t["dtype"], "q4_1");
      EXPECT_EQ(t["shape"], nlohmann::json({64, 192}));
    }
  EXPECT_TRUE(seen);
  auto r2 = testutil::run_llamarun({"info", "-m", kDir + "/gptq"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_HAS(r2.out, "gptq int4");
}

// `llamarun convert DIR out.gguf` keeps the repacked Q4_1 matrices (Q/K rows permuted for GGUF's RoPE
// layout, whole blocks moved): the GGUF model computes the same logits as the AWQ directory.
TEST(HfInt4, ConvertsToGgufWithTheSameLogits) {
  TempDir td;
  const std::string out = td.file("awq.gguf");
  auto r = testutil::run_llamarun({"convert", kDir + "/awq", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  LoadOptions lo;
  lo.load_tokenizer = false;
  lo.activations = "f32";
  auto a = load_model(kDir + "/awq", lo);
  auto b = load_model(out, lo);
  EXPECT_EQ(b->weights->get("blk.0.attn_q.weight").dtype, DType::Q4_1);
  const std::vector<int32_t> prompt = {1, 17, 200, 3, 45, 99, 7};
  const std::vector<float> x = a->llama->prompt_logits(prompt), y = b->llama->prompt_logits(prompt);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], 1e-4) << i;
}

// ---- refusals: each an Error naming the file / field / tensor, never a crash ----

// A copy of fixture `name` with config.json's quantization_config[key] = value.
void copy_with_config(const std::string& name, const TempDir& td, const std::string& key,
                      const nlohmann::json& value) {
  fs::copy_file(kDir + "/" + name + "/model.safetensors", td.file("model.safetensors"));
  auto cfg = read_json(kDir + "/" + name + "/config.json");
  cfg["quantization_config"][key] = value;
  testing_util::write_text(td.file("config.json"), cfg.dump());
}

TEST(HfInt4, RefusesBitsOtherThan4) {
  TempDir td;
  copy_with_config("gptq", td, "bits", 8);
  const std::string e = error_of([&] { load_weights(td.path()); });
  EXPECT_HAS(e, "config.json");
  EXPECT_HAS(e, "bits = 8");
  EXPECT_HAS(e, "only 4-bit");
  // and through load_model (what the commands call)
  EXPECT_HAS(error_of([&] { load_model(td.path()); }), "bits = 8");
}

TEST(HfInt4, RefusesUnknownMethodsAndPackings) {
  {
    TempDir td;
    copy_with_config("awq", td, "quant_method", "bitsandbytes");
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "quant_method 'bitsandbytes' is not supported");
  }
  {
    TempDir td;
    copy_with_config("awq", td, "version", "gemv");
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "version 'gemv' is not supported");
  }
  {
    TempDir td;
    copy_with_config("gptq", td, "checkpoint_format", "marlin");
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "checkpoint_format 'marlin' is not supported");
  }
  {
    TempDir td;
    copy_with_config("gptq", td, "group_size", 48);
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "group_size = 48");
  }
  {
    // group_size 128 does not divide in_features 64: names the tensor.
    TempDir td;
    copy_with_config("gptq", td, "group_size", 128);
    const std::string e = error_of([&] { load_weights(td.path()); });
    EXPECT_HAS(e, ".qweight'");
    EXPECT_HAS(e, "group size 128");
  }
}

// Older AutoGPTQ checkpoints: no quantization_config in config.json, a quantize_config.json beside it
// (without quant_method).
TEST(HfInt4, ReadsAutoGptqQuantizeConfigJson) {
  TempDir td;
  fs::copy_file(kDir + "/gptq/model.safetensors", td.file("model.safetensors"));
  auto cfg = read_json(kDir + "/gptq/config.json");
  auto q = cfg["quantization_config"];
  cfg.erase("quantization_config");
  q.erase("quant_method");
  testing_util::write_text(td.file("config.json"), cfg.dump());
  testing_util::write_text(td.file("quantize_config.json"), q.dump());
  WeightMap wm = load_weights(td.path());
  EXPECT_EQ(wm.repacked_from, "gptq");
  const WeightMap ref = load_weights(kDir + "/gptq");
  const TensorInfo &a = wm.get("model.layers.1.mlp.down_proj.weight"),
                   &b = ref.get("model.layers.1.mlp.down_proj.weight");
  ASSERT_EQ(a.nbytes, b.nbytes);
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
  q["bits"] = 3;
  testing_util::write_text(td.file("quantize_config.json"), q.dump());
  const std::string e = error_of([&] { load_weights(td.path()); });
  EXPECT_HAS(e, "quantize_config.json");
  EXPECT_HAS(e, "bits = 3");
}

// ---- hand-made one-Linear files (test-made safetensors) ----

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  Bytes data;
};

Bytes st_file(const std::vector<StTensor>& ts) {
  nlohmann::json h = nlohmann::json::object();
  Bytes data;
  for (auto& t : ts) {
    h[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data.insert(data.end(), t.data.begin(), t.data.end());
  }
  return testing_util::safetensors_bytes(h.dump(), data);
}

Bytes i32(const std::vector<int32_t>& v) {
  Bytes b;
  for (int32_t x : v) testing_util::put(b, x);
  return b;
}
Bytes f16(size_t n, float v) {
  Bytes b;
  for (size_t i = 0; i < n; ++i) testing_util::put(b, f32_to_f16(v));
  return b;
}

// One GPTQ Linear out = 64, in = 64, group 32 (qweight [8, 64], qzeros [2, 8], scales [2, 64], g_idx [64]).
std::vector<StTensor> gptq_linear(const std::string& p) {
  std::vector<int32_t> g(64);
  for (int i = 0; i < 64; ++i) g[size_t(i)] = i / 32;
  return {{p + ".qweight", "I32", {8, 64}, i32(std::vector<int32_t>(8 * 64, 0x76543210))},
          {p + ".qzeros", "I32", {2, 8}, i32(std::vector<int32_t>(16, 0x77777777))},
          {p + ".scales", "F16", {2, 64}, f16(128, 0.5f)},
          {p + ".g_idx", "I32", {64}, i32(g)}};
}

void write_gptq_dir(const TempDir& td, const std::vector<StTensor>& ts) {
  testing_util::write_bytes(td.file("model.safetensors"), st_file(ts));
  testing_util::write_text(
      td.file("config.json"),
      R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","quantization_config":)"
      R"({"quant_method":"gptq","bits":4,"group_size":32,"desc_act":true,"sym":true}})");
}

const std::string kP = "model.layers.0.self_attn.q_proj";

TEST(HfInt4, HandMadeGptqLinearDequantizes) {
  // Sanity of the hand-made file: nibble k of every word is k, stored zero 7 (v1: z = 8), s = 0.5, so
  // w[o][i] = 0.5 * ((i % 8) - 8).
  TempDir td;
  write_gptq_dir(td, gptq_linear(kP));
  WeightMap wm = load_weights(td.path());
  const TensorInfo& t = wm.get(kP + ".weight");
  ASSERT_EQ(t.shape, (std::vector<int64_t>{64, 64}));
  std::vector<float> row(64);
  dequantize_row(DType::Q4_1, static_cast<const uint8_t*>(t.data) + 5 * dtype_row_bytes(DType::Q4_1, 64),
                 row.data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(row[size_t(i)], 0.5f * float(i % 8 - 8)) << i;
}

TEST(HfInt4, RefusesActOrder) {
  TempDir td;
  auto ts = gptq_linear(kP);
  std::vector<int32_t> g(64);
  for (int i = 0; i < 64; ++i) g[size_t(i)] = i % 2;  // act-order: groups interleaved
  ts[3].data = i32(g);
  write_gptq_dir(td, ts);
  const std::string e = error_of([&] { load_weights(td.path()); });
  EXPECT_HAS(e, "model.safetensors");
  EXPECT_HAS(e, "'" + kP + ".g_idx'");
  EXPECT_HAS(e, "act-order");
  EXPECT_HAS(error_of([&] { load_model(td.path()); }), "act-order");
}

TEST(HfInt4, CorruptShapesNameTheTensor) {
  struct Case {
    int index;  // which of gptq_linear's tensors to change
    std::vector<int64_t> shape;
    std::string want;
  };
  const std::vector<Case> cases = {
      {0, {8, 60}, kP + ".qweight"},    // out 60: not a multiple of 8
      {0, {8, 63}, kP + ".qweight"},    // out 63
      {0, {7, 64}, kP + ".qweight"},    // in 56: not a multiple of 32
      {0, {4, 128}, kP + ".qzeros"},    // consistent qweight, so qzeros no longer fits
      {0, {512}, kP + ".qweight"},      // 1-D
      {1, {1, 16}, kP + ".qzeros"},     // wrong group count
      {2, {2, 32, 2}, kP + ".scales"},  // 3-D scales
      {3, {32, 2}, kP + ".g_idx"},      // 2-D g_idx
  };
  for (const auto& c : cases) {
    TempDir td;
    auto ts = gptq_linear(kP);
    ts[size_t(c.index)].shape = c.shape;  // same element count (the file itself stays valid) ...
    int64_t n = 1;
    for (auto d : c.shape) n *= d;
    ts[size_t(c.index)].data.resize(size_t(n) *
                                    (ts[size_t(c.index)].dtype == "F16" ? 2 : 4));  // ... or resized
    write_gptq_dir(td, ts);
    const std::string e = error_of([&] { load_weights(td.path()); });
    EXPECT_HAS(e, "'" + c.want + "'");
  }
}

TEST(HfInt4, RefusesMissingPartsAndStrayIntegers) {
  {
    TempDir td;
    auto ts = gptq_linear(kP);
    ts.erase(ts.begin() + 1);  // no qzeros
    write_gptq_dir(td, ts);
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "'" + kP + ".qzeros' is missing");
  }
  {
    TempDir td;
    auto ts = gptq_linear(kP);
    ts.erase(ts.begin() + 2);  // no scales
    write_gptq_dir(td, ts);
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "'" + kP + ".scales' is missing");
  }
  {
    // I32 tensors in a checkpoint whose config.json has no quantization_config.
    TempDir td;
    testing_util::write_bytes(td.file("model.safetensors"), st_file(gptq_linear(kP)));
    testing_util::write_text(td.file("config.json"), R"({"model_type":"llama"})");
    const std::string e = error_of([&] { load_weights(td.path()); });
    EXPECT_HAS(e, "I32");
    EXPECT_HAS(e, "no quantization_config");
  }
  {
    // a float .weight beside the packed one
    TempDir td;
    auto ts = gptq_linear(kP);
    ts.push_back({kP + ".weight", "F16", {64, 64}, f16(64 * 64, 0.f)});
    write_gptq_dir(td, ts);
    EXPECT_HAS(error_of([&] { load_weights(td.path()); }), "both present");
  }
}

}  // namespace
