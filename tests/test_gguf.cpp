// GGUF reader: round trip of a small file written here, the real default model, and one test per
// malformed-file check of shared/ROBUSTNESS.md (each must be an Error naming the problem, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/fp16.h"
#include "format_writers.h"
#include "formats/gguf.h"
#include "formats/model_files.h"
#include "model/config.h"
#include "model/llama.h"

using namespace llamarun;
using namespace llamarun::testing_util;

namespace {

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 7);
  return b;
}

// A valid file exercising every metadata type and every supported tensor type.
GgufBuilder valid_builder() {
  GgufBuilder g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("u32", 4000000000u);
  g.kv_i32("i32", -7);
  g.kv_u64("u64", 18000000000000000000ull);
  g.kv_f32("f32", 0.5f);
  g.kv_bool("flag", true);
  g.kv_raw("u8", kGU8, {200});
  g.kv_raw("i8", kGI8, {0xff});
  {
    Bytes b;
    put<int16_t>(b, -300);
    g.kv_raw("i16", kGI16, b);
    Bytes c;
    put<uint16_t>(c, 60000);
    g.kv_raw("u16", kGU16, c);
    Bytes d;
    put<int64_t>(d, -5000000000ll);
    g.kv_raw("i64", kGI64, d);
    Bytes e;
    put<double>(e, 1e-300);
    g.kv_raw("f64", kGF64, e);
  }
  g.kv_strs("tokens", {"a", "", "long token"});
  g.kv_f32s("scores", {0.25f, -1.5f});
  g.kv_i32s("types", {1, 2, 3});
  std::vector<float> a = {0, 1, 2, 3, 4, 5};
  g.tensor("a", {2, 3}, kTF32, f32_bytes(a));
  g.tensor("q8", {2, 32}, kTQ8_0, pattern(2 * 34, 1));
  g.tensor("h", {4}, kTF16, pattern(8, 2));
  g.tensor("bf", {2}, kTBF16, pattern(4, 3));
  g.tensor("q40", {1, 32}, kTQ4_0, pattern(18, 4));
  g.tensor("q41", {1, 2, 64}, kTQ4_1, pattern(2 * 40, 5));
  return g;
}

// Writes the builder's file and reads it; returns the error message, or "" if it was accepted.
std::string gguf_error(const TempDir& dir, const Bytes& bytes) {
  std::string path = dir.file("t.gguf");
  write_bytes(path, bytes);
  try {
    read_gguf(path);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << "message does not name the file: " << m;
    return m;
  }
  return "";
}

#define EXPECT_GGUF_ERROR(builder, ...)                                                         \
  do {                                                                                          \
    TempDir dir_;                                                                               \
    std::string msg_ = gguf_error(dir_, (builder).build());                                     \
    ASSERT_FALSE(msg_.empty()) << "malformed file was accepted";                                \
    for (const std::string& needle : std::vector<std::string>{__VA_ARGS__})                     \
      EXPECT_NE(msg_.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg_; \
  } while (0)

}  // namespace

TEST(Gguf, RoundTripMetadataAndTensors) {
  TempDir dir;
  GgufBuilder g = valid_builder();
  std::string path = dir.file("ok.gguf");
  write_bytes(path, g.build());
  WeightMap wm = read_gguf(path);

  EXPECT_EQ(meta_str(wm, "general.architecture", ""), "llama");
  EXPECT_EQ(meta_int(wm, "u32", 0), 4000000000ll);
  EXPECT_EQ(meta_int(wm, "i32", 0), -7);
  EXPECT_EQ(std::get<uint64_t>(wm.meta.at("u64")), 18000000000000000000ull);
  EXPECT_DOUBLE_EQ(meta_float(wm, "f32", 0), 0.5);
  EXPECT_TRUE(meta_bool(wm, "flag", false));
  EXPECT_EQ(meta_int(wm, "u8", 0), 200);
  EXPECT_EQ(meta_int(wm, "i8", 0), -1);
  EXPECT_EQ(meta_int(wm, "i16", 0), -300);
  EXPECT_EQ(meta_int(wm, "u16", 0), 60000);
  EXPECT_EQ(meta_int(wm, "i64", 0), -5000000000ll);
  EXPECT_DOUBLE_EQ(meta_float(wm, "f64", 0), 1e-300);
  ASSERT_NE(meta_strs(wm, "tokens"), nullptr);
  EXPECT_EQ(*meta_strs(wm, "tokens"), (std::vector<std::string>{"a", "", "long token"}));
  EXPECT_EQ(*meta_floats(wm, "scores"), (std::vector<double>{0.25, -1.5}));
  EXPECT_EQ(*meta_ints(wm, "types"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(meta_int(wm, "absent", 42), 42);
  EXPECT_EQ(meta_strs(wm, "absent"), nullptr);

  ASSERT_EQ(wm.tensors.size(), 6u);
  const uint8_t* base = wm.files.at(0)->data();
  for (const auto& t : g.tensors) {
    const TensorInfo& ti = wm.get(t.name);
    std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
    EXPECT_EQ(ti.shape, shape) << t.name;
    EXPECT_EQ(ti.nbytes, t.data.size()) << t.name;
    EXPECT_EQ(ti.file, path);
    EXPECT_EQ(0, std::memcmp(ti.data, t.data.data(), t.data.size())) << t.name;
    EXPECT_EQ((static_cast<const uint8_t*>(ti.data) - base) % 32, 0) << t.name;
  }
  EXPECT_EQ(wm.get("a").dtype, DType::F32);
  EXPECT_EQ(wm.get("q8").dtype, DType::Q8_0);
  EXPECT_EQ(wm.get("h").dtype, DType::F16);
  EXPECT_EQ(wm.get("bf").dtype, DType::BF16);
  EXPECT_EQ(wm.get("q40").dtype, DType::Q4_0);
  EXPECT_EQ(wm.get("q41").dtype, DType::Q4_1);
  EXPECT_EQ(wm.get("q41").shape, (std::vector<int64_t>{1, 2, 64}));
  const float* a = static_cast<const float*>(wm.get("a").data);
  EXPECT_EQ(a[5], 5.0f);
}

TEST(Gguf, Version2AndCustomAlignment) {
  TempDir dir;
  GgufBuilder g = valid_builder();
  g.version = 2;
  g.alignment = 64;
  g.kv_u32("general.alignment", 64);
  write_bytes(dir.file("v2.gguf"), g.build());
  WeightMap wm = read_gguf(dir.file("v2.gguf"));
  const uint8_t* base = wm.files.at(0)->data();
  for (auto& [name, t] : wm.tensors) EXPECT_EQ((static_cast<const uint8_t*>(t.data) - base) % 64, 0) << name;
  EXPECT_EQ(0, std::memcmp(wm.get("q41").data, g.tensors.back().data.data(), 80));
}

TEST(Gguf, MetadataTypeErrors) {
  TempDir dir;
  write_bytes(dir.file("ok.gguf"), valid_builder().build());
  WeightMap wm = read_gguf(dir.file("ok.gguf"));
  // Scores stored as integers must not be read as floats.
  try {
    meta_floats(wm, "types");
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'types'"), std::string::npos) << m;
    EXPECT_NE(m.find("array of floats"), std::string::npos) << m;
    EXPECT_NE(m.find("integer array"), std::string::npos) << m;
  }
  EXPECT_THROW(meta_int(wm, "general.architecture", 0), Error);
  EXPECT_THROW(meta_str(wm, "u32", ""), Error);
  EXPECT_THROW(meta_strs(wm, "scores"), Error);
  EXPECT_THROW(meta_ints(wm, "tokens"), Error);
  EXPECT_THROW(meta_bool(wm, "u8", false), Error);
  EXPECT_THROW(meta_int(wm, "u64", 0), Error);      // above INT64_MAX
  EXPECT_DOUBLE_EQ(meta_float(wm, "u32", 0), 4e9);  // integers are accepted as floats
}

// ---------------------------------------------------------------- one test per malformed field

TEST(GgufBad, Magic) {
  GgufBuilder g = valid_builder();
  std::memcpy(g.magic, "GGML", 4);
  EXPECT_GGUF_ERROR(g, "bad magic");
}

TEST(GgufBad, EmptyAndTinyFiles) {
  TempDir dir;
  EXPECT_NE(gguf_error(dir, {}).find("bad magic"), std::string::npos);
  EXPECT_NE(gguf_error(dir, {'G', 'G', 'U', 'F'}).find("truncated"), std::string::npos);
}

TEST(GgufBad, Versions) {
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u, 0xffffffffu}) {
    GgufBuilder g = valid_builder();
    g.version = v;
    EXPECT_GGUF_ERROR(g, "version", std::to_string(v).c_str());
  }
}

TEST(GgufBad, TensorCountBeyondFile) {
  for (uint64_t n : {uint64_t(1) << 40, std::numeric_limits<uint64_t>::max()}) {
    GgufBuilder g = valid_builder();
    g.n_tensors = n;
    EXPECT_GGUF_ERROR(g, "tensor count", std::to_string(n).c_str(), "cannot fit");
  }
  // Plausible but wrong: the tensor data gets parsed as a 7th tensor info.
  GgufBuilder g = valid_builder();
  g.n_tensors = 7;
  TempDir dir;
  EXPECT_FALSE(gguf_error(dir, g.build()).empty());
}

TEST(GgufBad, KvCountBeyondFile) {
  GgufBuilder g = valid_builder();
  g.n_kv = std::numeric_limits<uint64_t>::max();
  EXPECT_GGUF_ERROR(g, "key/value count");
  GgufBuilder h = valid_builder();
  h.n_kv = h.kvs.size() + 1;  // plausible but wrong: the tensor infos get parsed as a key
  TempDir dir;
  EXPECT_FALSE(gguf_error(dir, h.build()).empty());
}

TEST(GgufBad, KeyLengthOverflow) {
  GgufBuilder g = valid_builder();
  Bytes b = g.build();
  // The first key's length field sits right after the 24-byte header.
  uint64_t huge = std::numeric_limits<uint64_t>::max();
  std::memcpy(&b[24], &huge, 8);
  TempDir dir;
  std::string m = gguf_error(dir, b);
  EXPECT_NE(m.find("string length"), std::string::npos) << m;
  EXPECT_NE(m.find("past the end"), std::string::npos) << m;
}

TEST(GgufBad, StringValuePastEof) {
  GgufBuilder g = valid_builder();
  Bytes v;
  put<uint64_t>(v, 1000000);
  v.push_back('x');
  g.kv_raw("general.name", kGString, v);
  EXPECT_GGUF_ERROR(g, "general.name", "past the end");
}

TEST(GgufBad, ArrayCountOverflow) {
  // count * element size overflows 64 bits.
  GgufBuilder g = valid_builder();
  Bytes v;
  put<uint32_t>(v, kGF32);
  put<uint64_t>(v, (uint64_t(1) << 62) + 1);
  g.kv_raw("scores2", kGArray, v);
  EXPECT_GGUF_ERROR(g, "scores2", "past the end");
  // A string array whose count cannot fit.
  GgufBuilder h = valid_builder();
  Bytes w;
  put<uint32_t>(w, kGString);
  put<uint64_t>(w, std::numeric_limits<uint64_t>::max());
  h.kv_raw("toks2", kGArray, w);
  EXPECT_GGUF_ERROR(h, "toks2", "cannot fit");
}

TEST(GgufBad, StringArrayElementPastEof) {
  GgufBuilder g;
  Bytes w;
  put<uint32_t>(w, kGString);
  put<uint64_t>(w, 2);
  put_str(w, "ok");
  put<uint64_t>(w, 5000);  // second string claims 5000 bytes
  g.kv_raw("toks", kGArray, w);
  EXPECT_GGUF_ERROR(g, "toks", "element 1", "past the end");
}

TEST(GgufBad, NestedArray) {
  GgufBuilder g = valid_builder();
  Bytes v;
  put<uint32_t>(v, kGArray);
  put<uint64_t>(v, 1);
  put<uint32_t>(v, kGU8);
  put<uint64_t>(v, 1);
  v.push_back(0);
  g.kv_raw("nested", kGArray, v);
  EXPECT_GGUF_ERROR(g, "nested", "nested arrays");
}

TEST(GgufBad, UnknownValueType) {
  GgufBuilder g = valid_builder();
  g.kv_raw("weird", 13, {0, 0, 0, 0});
  EXPECT_GGUF_ERROR(g, "weird", "unknown value type 13");
  GgufBuilder h = valid_builder();
  Bytes v;
  put<uint32_t>(v, 99);
  put<uint64_t>(v, 1);
  h.kv_raw("weird_arr", kGArray, v);
  EXPECT_GGUF_ERROR(h, "weird_arr", "unknown element type 99");
}

TEST(GgufBad, BadBoolByte) {
  GgufBuilder g = valid_builder();
  g.kv_raw("b", kGBool, {7});
  EXPECT_GGUF_ERROR(g, "'b'", "bool");
}

TEST(GgufBad, EmptyKey) {
  GgufBuilder g = valid_builder();
  g.kv_u32("", 1);
  EXPECT_GGUF_ERROR(g, "is empty");
}

TEST(GgufBad, DuplicateKey) {
  GgufBuilder g = valid_builder();
  g.kv_u32("i32", 1);
  EXPECT_GGUF_ERROR(g, "duplicate metadata key 'i32'");
}

TEST(GgufBad, Alignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    GgufBuilder g = valid_builder();
    g.kv_u32("general.alignment", a);
    EXPECT_GGUF_ERROR(g, "general.alignment", "power of two", std::to_string(a).c_str());
  }
  GgufBuilder g = valid_builder();
  g.kv_str("general.alignment", "32");
  EXPECT_GGUF_ERROR(g, "general.alignment", "integer");
  GgufBuilder h = valid_builder();
  h.kv_i32("general.alignment", -32);
  EXPECT_GGUF_ERROR(h, "general.alignment", "-32");
}

TEST(GgufBad, AlignmentTooSmallForType) {
  // With general.alignment = 1 the data section and the F32 tensor after the 6-byte tensor 'x' may
  // start at odd offsets.
  GgufBuilder g;
  g.alignment = 1;
  g.kv_u32("general.alignment", 1);
  g.tensor("x", {3}, kTF16, Bytes(6));
  g.tensor("y", {1}, kTF32, Bytes(4));
  EXPECT_GGUF_ERROR(g, "not aligned", "general.alignment = 1");
}

TEST(GgufBad, TensorNameTooLong) {
  GgufBuilder g = valid_builder();
  g.tensors[0].name = std::string(kGgufMaxTensorName + 1, 'x');
  EXPECT_GGUF_ERROR(g, "name is 257 bytes", "limit 256");
  GgufBuilder ok = valid_builder();
  ok.tensors[0].name = std::string(kGgufMaxTensorName, 'x');
  TempDir dir;
  EXPECT_EQ(gguf_error(dir, ok.build()), "");
}

TEST(GgufBad, TensorNameEmptyOrDuplicate) {
  GgufBuilder g = valid_builder();
  g.tensors[1].name = "a";
  EXPECT_GGUF_ERROR(g, "duplicate tensor name 'a'");
  GgufBuilder h = valid_builder();
  h.tensors[1].name = "";
  EXPECT_GGUF_ERROR(h, "empty name");
}

TEST(GgufBad, TooManyDims) {
  GgufBuilder g = valid_builder();
  g.tensors[0].ne = {3, 2, 1, 1, 1};
  EXPECT_GGUF_ERROR(g, "tensor 'a'", "n_dims = 5");
}

TEST(GgufBad, ZeroDim) {
  GgufBuilder g = valid_builder();
  g.tensors[0].ne = {3, 0};
  EXPECT_GGUF_ERROR(g, "tensor 'a'", "dimension 1 equal to 0");
}

TEST(GgufBad, NegativeDim) {
  GgufBuilder g = valid_builder();
  g.tensors[0].ne = {3, uint64_t(-2)};
  EXPECT_GGUF_ERROR(g, "tensor 'a'", "negative or too large");
}

TEST(GgufBad, OverflowingDims) {
  GgufBuilder g = valid_builder();
  g.tensors[0].ne = {uint64_t(1) << 32, uint64_t(1) << 32};
  EXPECT_GGUF_ERROR(g, "tensor 'a'", "overflows");
  // Element count fits in int64 but the byte size does not.
  GgufBuilder h = valid_builder();
  h.tensors[0].ne = {uint64_t(1) << 31, uint64_t(1) << 31};
  EXPECT_GGUF_ERROR(h, "tensor 'a'", "overflows");
}

TEST(GgufBad, InnerDimNotMultipleOfBlock) {
  GgufBuilder g = valid_builder();
  g.tensors[1].ne = {33, 2};  // q8 tensor
  EXPECT_GGUF_ERROR(g, "tensor 'q8'", "innermost", "33", "block size 32");
}

// A k-quant tensor whose rows are not whole 256-value super-blocks (a Q4_K tensor with 32 columns).
TEST(GgufBad, KQuantInnerDimNotMultipleOf256) {
  GgufBuilder g = valid_builder();
  g.tensors[1].type = 12;
  EXPECT_GGUF_ERROR(g, "tensor 'q8'", "q4_k", "innermost", "block size 256");
}

TEST(GgufBad, UnsupportedTensorType) {
  GgufBuilder g = valid_builder();
  g.tensors[1].type = 16;
  EXPECT_GGUF_ERROR(g, "tensor 'q8'", "type id 16", "IQ2_XXS");
  GgufBuilder h = valid_builder();
  h.tensors[1].type = 1000;
  EXPECT_GGUF_ERROR(h, "tensor 'q8'", "type id 1000");
}

TEST(GgufBad, FirstOffsetNotZero) {
  GgufBuilder g = valid_builder();
  g.tensors[0].offset = 32;
  EXPECT_GGUF_ERROR(g, "tensor 'a'", "offset 32", "running padded total is 0");
}

TEST(GgufBad, OffsetNotRunningTotal) {
  GgufBuilder g = valid_builder();
  g.tensors[1].offset = 24;  // 'a' is 24 bytes: unpadded offset
  EXPECT_GGUF_ERROR(g, "tensor 'q8'", "offset 24", "running padded total is 32");
  GgufBuilder h = valid_builder();
  h.tensors[2].offset = 0;  // overlaps 'a'
  EXPECT_GGUF_ERROR(h, "tensor 'h'", "offset 0");
}

TEST(GgufBad, OffsetOverflow) {
  GgufBuilder g = valid_builder();
  g.tensors[0].offset = std::numeric_limits<uint64_t>::max() - 8;
  EXPECT_GGUF_ERROR(g, "tensor 'a'");
}

TEST(GgufBad, DataPastEndOfFile) {
  GgufBuilder g = valid_builder();
  Bytes b = g.build();
  b.resize(b.size() - 1);
  TempDir dir;
  std::string m = gguf_error(dir, b);
  EXPECT_NE(m.find("tensor 'q41'"), std::string::npos) << m;
  EXPECT_NE(m.find("past the end"), std::string::npos) << m;
  // A large tensor declared in a small file.
  GgufBuilder h = valid_builder();
  h.tensors.back().ne = {64, 1 << 20};
  EXPECT_GGUF_ERROR(h, "tensor 'q41'", "past the end");
}

// Every prefix of a valid file is either rejected with an Error or (the full file) accepted.
TEST(GgufBad, EveryTruncation) {
  TempDir dir;
  Bytes full = valid_builder().build();
  for (size_t n = 0; n < full.size(); ++n) {
    Bytes b(full.begin(), full.begin() + long(n));
    EXPECT_FALSE(gguf_error(dir, b).empty()) << "prefix of " << n << " bytes accepted";
  }
  EXPECT_EQ(gguf_error(dir, full), "");
}

// Corrupting any single byte of the header/metadata/tensor infos never crashes (ASan/UBSan clean).
TEST(GgufBad, EveryByteCorrupted) {
  TempDir dir;
  GgufBuilder g = valid_builder();
  Bytes full = g.build();
  // Tensor data (and its padding) is at the end; corrupt everything before the last 256 bytes.
  size_t header_end = full.size() - 256;
  for (size_t i = 0; i < header_end; ++i) {
    for (uint8_t x : {uint8_t(0xff), uint8_t(0x80), uint8_t(0x01)}) {
      Bytes b = full;
      b[i] ^= x;
      std::string path = dir.file("c.gguf");
      write_bytes(path, b);
      try {
        WeightMap wm = read_gguf(path);
        for (auto& [name, t] : wm.tensors) {
          // Accepted files must still have in-bounds tensors.
          const uint8_t* base = wm.files[0]->data();
          auto off = size_t(static_cast<const uint8_t*>(t.data) - base);
          ASSERT_LE(off + t.nbytes, wm.files[0]->size()) << name;
        }
      } catch (const Error&) {
      }
    }
  }
}

// ---------------------------------------------------------------- the real default model

namespace {
const char* kModel = LLAMARUN_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(GgufModel, SmolLM2) {
  if (!file_exists(kModel)) GTEST_SKIP() << kModel << " not present";
  WeightMap wm = load_weights(kModel);
  EXPECT_EQ(wm.tensors.size(), 272u);
  const TensorInfo& emb = wm.get("token_embd.weight");
  EXPECT_EQ(emb.dtype, DType::Q8_0);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{49152, 576}));
  const TensorInfo& down = wm.get("blk.0.ffn_down.weight");
  EXPECT_EQ(down.dtype, DType::Q4_1);
  EXPECT_EQ(down.shape, (std::vector<int64_t>{576, 1536}));
  EXPECT_EQ(wm.get("blk.0.attn_k.weight").shape, (std::vector<int64_t>{192, 576}));
  EXPECT_EQ(wm.get("output_norm.weight").dtype, DType::F32);

  LlamaConfig c = config_from_gguf(wm, kModel);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.max_position, 8192);
  EXPECT_EQ(c.rope_layout, RopeLayout::kInterleaved);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_ids, (std::vector<int>{2}));
  EXPECT_NO_THROW(bind_llama_weights(c, wm, TensorNaming::kGguf, kModel));
  ASSERT_NE(meta_strs(wm, "tokenizer.ggml.tokens"), nullptr);
  EXPECT_EQ(meta_strs(wm, "tokenizer.ggml.tokens")->size(), 49152u);

  // Weights are readable and finite: dequantise the first and last embedding rows.
  std::vector<float> row(576);
  for (int64_t r : {int64_t(0), int64_t(49151)}) {
    dequantize_row(emb.dtype,
                   static_cast<const uint8_t*>(emb.data) + size_t(r) * dtype_row_bytes(emb.dtype, 576),
                   row.data(), 576);
    for (float x : row) ASSERT_TRUE(std::isfinite(x));
  }
}
