// safetensors reader and model-file discovery: round trips of files written here, and one test per
// malformed-file check of shared/ROBUSTNESS.md.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "format_writers.h"
#include "formats/model_files.h"
#include "formats/safetensors.h"

using namespace llamarun;
using namespace llamarun::testing_util;

namespace {

// Two tensors: "w" F32 [2, 3] (24 bytes) then "b" BF16 [3] (6 bytes), plus metadata.
const char* kHeader =
    R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
    R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]}})";

Bytes valid_data() {
  Bytes d = f32_bytes({1, 2, 3, 4, 5, 6});
  for (uint8_t x : {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40}) d.push_back(x);  // bf16 1, 2, 3
  return d;
}

std::string st_error(const TempDir& dir, const Bytes& bytes) {
  std::string path = dir.file("t.safetensors");
  write_bytes(path, bytes);
  WeightMap wm;
  try {
    read_safetensors(path, wm);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << "message does not name the file: " << m;
    EXPECT_TRUE(wm.tensors.empty()) << "rejected file left tensors behind";
    return m;
  }
  return "";
}

#define EXPECT_ST_ERROR(bytes, ...)                                                             \
  do {                                                                                          \
    TempDir dir_;                                                                               \
    std::string msg_ = st_error(dir_, (bytes));                                                 \
    ASSERT_FALSE(msg_.empty()) << "malformed file was accepted";                                \
    for (const std::string& needle : std::vector<std::string>{__VA_ARGS__})                     \
      EXPECT_NE(msg_.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg_; \
  } while (0)

// Header with one F32 tensor "t" of the given shape/offsets text.
std::string one(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"t":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}";
}

}  // namespace

TEST(Safetensors, RoundTrip) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  write_bytes(path, safetensors_bytes(kHeader, valid_data()));
  WeightMap wm;
  read_safetensors(path, wm);
  ASSERT_EQ(wm.tensors.size(), 2u);
  EXPECT_TRUE(wm.meta.empty());
  const TensorInfo& w = wm.get("w");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.nbytes, 24u);
  EXPECT_EQ(w.file, path);
  EXPECT_EQ(static_cast<const float*>(w.data)[4], 5.0f);
  const TensorInfo& b = wm.get("b");
  EXPECT_EQ(b.dtype, DType::BF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(static_cast<const uint8_t*>(b.data) - static_cast<const uint8_t*>(w.data), 24);
  EXPECT_EQ(static_cast<const uint16_t*>(b.data)[0], 0x3f80);
}

TEST(Safetensors, ScalarsEmptyTensorsAndPadding) {
  TempDir dir;
  // A 0-d scalar, an empty tensor, and trailing spaces in the header (allowed padding).
  std::string h = R"({"s":{"dtype":"F16","shape":[],"data_offsets":[0,2]},)"
                  R"("e":{"dtype":"F32","shape":[0,4],"data_offsets":[2,2]}}    )";
  write_bytes(dir.file("s.safetensors"), safetensors_bytes(h, {0x00, 0x3c}));
  WeightMap wm;
  read_safetensors(dir.file("s.safetensors"), wm);
  EXPECT_EQ(wm.get("s").shape.size(), 0u);
  EXPECT_EQ(wm.get("e").nbytes, 0u);
  // A header with no tensors and no data.
  write_bytes(dir.file("n.safetensors"), safetensors_bytes("{}", {}));
  WeightMap wn;
  read_safetensors(dir.file("n.safetensors"), wn);
  EXPECT_TRUE(wn.tensors.empty());
}

TEST(SafetensorsBad, ShorterThan8Bytes) {
  EXPECT_ST_ERROR(Bytes{}, "shorter than");
  EXPECT_ST_ERROR(Bytes(7, 0), "7 bytes");
}

TEST(SafetensorsBad, HeaderTooLarge) {
  EXPECT_ST_ERROR(safetensors_bytes(kHeader, valid_data(), 100'000'001), "100000001", "limit");
}

TEST(SafetensorsBad, HeaderPastEnd) {
  EXPECT_ST_ERROR(safetensors_bytes(kHeader, {}, 1000), "header length 1000", "past the end");
  // 8 + N would wrap around 64 bits.
  EXPECT_ST_ERROR(safetensors_bytes(kHeader, {}, std::numeric_limits<uint64_t>::max() - 3), "header length");
}

TEST(SafetensorsBad, NotUtf8) {
  std::string h = one("F32", "[1]", "[0,4]");
  h.insert(3, "\xff\xfe");  // inside the tensor name string
  EXPECT_ST_ERROR(safetensors_bytes(h, f32_bytes({1})), "not valid UTF-8 JSON");
}

TEST(SafetensorsBad, NotJson) {
  EXPECT_ST_ERROR(safetensors_bytes("{\"t\":", {}), "not valid UTF-8 JSON");
  EXPECT_ST_ERROR(safetensors_bytes(std::string("{}\0\0", 4), {}), "not valid UTF-8 JSON");
  EXPECT_ST_ERROR(safetensors_bytes("[1,2]", {}), "must be a JSON object");
  EXPECT_ST_ERROR(safetensors_bytes(R"({"t":5})", {}), "tensor 't'", "must be an object");
  EXPECT_ST_ERROR(safetensors_bytes(R"({"__metadata__":[]})", {}), "__metadata__");
}

TEST(SafetensorsBad, DeepNesting) {
  std::string h = R"({"__metadata__":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_ST_ERROR(safetensors_bytes(h, {}), "nests deeper");
}

TEST(SafetensorsBad, DuplicateTensorName) {
  std::string h = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_ST_ERROR(safetensors_bytes(h, f32_bytes({1, 2})), "duplicate", "'t'");
}

TEST(SafetensorsBad, UnknownDtype) {
  EXPECT_ST_ERROR(safetensors_bytes(one("I8", "[4]", "[0,4]"), Bytes(4)), "tensor 't'", "dtype 'I8'");
  EXPECT_ST_ERROR(safetensors_bytes(one("F64", "[1]", "[0,8]"), Bytes(8)), "tensor 't'", "dtype 'F64'");
  EXPECT_ST_ERROR(safetensors_bytes(R"({"t":{"dtype":3,"shape":[1],"data_offsets":[0,4]}})", Bytes(4)),
                  "tensor 't'", "dtype");
}

TEST(SafetensorsBad, FirstOffsetNotZero) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[1]", "[4,8]"), Bytes(8)), "tensor 't'", "starts at 4");
}

TEST(SafetensorsBad, GapBetweenTensors) {
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_ST_ERROR(safetensors_bytes(h, Bytes(12)), "tensor 'b'", "starts at 8", "ends at 4");
}

TEST(SafetensorsBad, Overlapping) {
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_ST_ERROR(safetensors_bytes(h, Bytes(12)), "tensor 'b'", "overlaps");
  std::string same = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_ST_ERROR(safetensors_bytes(same, Bytes(4)), "overlaps");
}

TEST(SafetensorsBad, SizeMismatch) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[2,3]", "[0,20]"), Bytes(20)), "tensor 't'", "span 20",
                  "needs 24");
  EXPECT_ST_ERROR(safetensors_bytes(one("F16", "[3]", "[0,4]"), Bytes(4)), "needs 6");
}

TEST(SafetensorsBad, EndBeforeBegin) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[0]", "[8,4]"), Bytes(8)), "tensor 't'", "end before begin");
}

TEST(SafetensorsBad, LastEndNotDataSize) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[1]", "[0,4]"), Bytes(8)), "cover 4 bytes", "holds 8");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[2]", "[0,8]"), Bytes(4)), "cover 8 bytes", "holds 4");
}

TEST(SafetensorsBad, ShapeOverflow) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[4294967296,4294967296]", "[0,4]"), Bytes(4)), "tensor 't'",
                  "overflows");
  // numel fits in int64 but numel * 4 does not fit in 64 bits.
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[4611686018427387905]", "[0,4]"), Bytes(4)), "tensor 't'",
                  "overflows");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[18446744073709551615]", "[0,4]"), Bytes(4)), "tensor 't'");
}

TEST(SafetensorsBad, BadShapeOrOffsetValues) {
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[-1]", "[0,4]"), Bytes(4)), "tensor 't'",
                  "non-negative integer");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[1.5]", "[0,4]"), Bytes(4)), "non-negative integer");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[1]", "[0]"), Bytes(4)), "data_offsets");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "[1]", "[0,-4]"), Bytes(4)), "data_offsets[1]");
  EXPECT_ST_ERROR(safetensors_bytes(one("F32", "4", "[0,4]"), Bytes(4)), "shape");
  EXPECT_ST_ERROR(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[1]}})", Bytes(4)), "data_offsets");
}

TEST(SafetensorsBad, MisalignedData) {
  // An unpadded header puts the F32 data at an odd file offset.
  std::string h = one("F32", "[1]", "[0,4]");
  ASSERT_NE((8 + h.size()) % 4, 0u);
  EXPECT_ST_ERROR(safetensors_bytes(h, Bytes(4), std::nullopt, false), "tensor 't'", "not aligned to 4");
  // An F32 tensor placed after a 2-byte F16 tensor.
  std::string h2 = R"({"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})";
  EXPECT_ST_ERROR(safetensors_bytes(h2, Bytes(6)), "tensor 'b'", "not aligned to 4");
}

TEST(SafetensorsBad, DuplicateAcrossShards) {
  TempDir dir;
  write_bytes(dir.file("a.safetensors"), safetensors_bytes(one("F32", "[1]", "[0,4]"), Bytes(4)));
  write_bytes(dir.file("b.safetensors"), safetensors_bytes(one("F32", "[1]", "[0,4]"), Bytes(4)));
  WeightMap wm;
  read_safetensors(dir.file("a.safetensors"), wm);
  try {
    read_safetensors(dir.file("b.safetensors"), wm);
    FAIL() << "duplicate accepted";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tensor 't'"), std::string::npos) << m;
    EXPECT_NE(m.find("a.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("b.safetensors"), std::string::npos) << m;
  }
  EXPECT_EQ(wm.files.size(), 1u);
}

TEST(SafetensorsBad, EveryTruncationAndByteFlip) {
  TempDir dir;
  Bytes full = safetensors_bytes(kHeader, valid_data());
  for (size_t n = 0; n < full.size(); ++n)
    EXPECT_FALSE(st_error(dir, Bytes(full.begin(), full.begin() + long(n))).empty()) << n;
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t x : {uint8_t(0xff), uint8_t(0x01), uint8_t(0x80)}) {
      Bytes b = full;
      b[i] ^= x;
      std::string path = dir.file("f.safetensors");
      write_bytes(path, b);
      WeightMap wm;
      try {
        read_safetensors(path, wm);
        for (auto& [name, t] : wm.tensors) {
          auto off = size_t(static_cast<const uint8_t*>(t.data) - wm.files[0]->data());
          ASSERT_LE(off + t.nbytes, wm.files[0]->size()) << name;
        }
      } catch (const Error&) {
      }
    }
  }
}

// ---------------------------------------------------------------- load_weights

namespace {
std::string load_error(const std::string& path) {
  try {
    load_weights(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(ModelFiles, SingleFileAndDirectory) {
  TempDir dir;
  write_bytes(dir.file("model.safetensors"), safetensors_bytes(kHeader, valid_data()));
  EXPECT_EQ(load_weights(dir.path()).tensors.size(), 2u);
  EXPECT_EQ(load_weights(dir.file("model.safetensors")).tensors.size(), 2u);
}

TEST(ModelFiles, LoneSafetensorsFile) {
  TempDir dir;
  write_bytes(dir.file("weights.safetensors"), safetensors_bytes(kHeader, valid_data()));
  write_text(dir.file("config.json"), "{}");
  EXPECT_EQ(load_weights(dir.path()).get("w").shape, (std::vector<int64_t>{2, 3}));
  write_bytes(dir.file("other.safetensors"), safetensors_bytes(kHeader, valid_data()));
  std::string m = load_error(dir.path());
  EXPECT_NE(m.find("2 .safetensors files"), std::string::npos) << m;
}

TEST(ModelFiles, ShardedIndex) {
  TempDir dir;
  write_bytes(dir.file("s1.safetensors"),
              safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                f32_bytes({1, 2})));
  write_bytes(dir.file("s2.safetensors"), safetensors_bytes(one("F16", "[2]", "[0,4]"), Bytes(4)));
  write_text(dir.file("model.safetensors.index.json"),
             R"({"metadata":{"total_size":12},"weight_map":{"a":"s1.safetensors","b":"s1.safetensors",)"
             R"("t":"s2.safetensors"}})");
  WeightMap wm = load_weights(dir.path());
  EXPECT_EQ(wm.tensors.size(), 3u);
  EXPECT_EQ(wm.files.size(), 2u);  // each shard mapped once
  EXPECT_EQ(static_cast<const float*>(wm.get("b").data)[0], 2.0f);
  EXPECT_EQ(wm.get("t").dtype, DType::F16);
}

TEST(ModelFiles, IndexNamesTensorMissingFromShard) {
  TempDir dir;
  write_bytes(dir.file("s1.safetensors"), safetensors_bytes(one("F32", "[1]", "[0,4]"), Bytes(4)));
  write_text(dir.file("model.safetensors.index.json"),
             R"({"weight_map":{"t":"s1.safetensors","missing":"s1.safetensors"}})");
  std::string m = load_error(dir.path());
  EXPECT_NE(m.find("'missing'"), std::string::npos) << m;
  EXPECT_NE(m.find("s1.safetensors"), std::string::npos) << m;
}

TEST(ModelFiles, IndexErrors) {
  TempDir dir;
  write_text(dir.file("model.safetensors.index.json"), R"({"weight_map":{"t":"../../etc/passwd"}})");
  EXPECT_NE(load_error(dir.path()).find("not a plain file name"), std::string::npos);
  write_text(dir.file("model.safetensors.index.json"), R"({"weight_map":{"t":"nothere.safetensors"}})");
  EXPECT_NE(load_error(dir.path()).find("does not exist"), std::string::npos);
  write_text(dir.file("model.safetensors.index.json"), R"({"weight_map":)");
  EXPECT_NE(load_error(dir.path()).find("not valid JSON"), std::string::npos);
  write_text(dir.file("model.safetensors.index.json"), R"({"metadata":{}})");
  EXPECT_NE(load_error(dir.path()).find("weight_map"), std::string::npos);
}

TEST(ModelFiles, MissingEmptyAndUnknown) {
  TempDir dir;
  std::string m = load_error(dir.file("nope"));
  EXPECT_NE(m.find("no such file"), std::string::npos) << m;
  m = load_error(dir.path());
  EXPECT_NE(m.find("no weights found"), std::string::npos) << m;
  EXPECT_NE(m.find("model.safetensors.index.json"), std::string::npos) << m;
  write_text(dir.file("model.bin"), "hello");
  m = load_error(dir.file("model.bin"));
  EXPECT_NE(m.find("unknown model file type"), std::string::npos) << m;
}
