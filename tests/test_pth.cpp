// Meta checkpoints: the .pth zip reader and restricted unpickler (against files torch.save wrote and
// hand-made hostile ones), shard joining, params.json, and greedy tokens of the directly loaded and
// the converted (safetensors, GGUF) fixture against transformers' output for the Hugging Face twin.
// Fixtures: tests/fixtures/meta/, made by tools/make_meta_fixtures.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "core/mmap.h"
#include "engine/generate.h"
#include "formats/pth.h"
#include "model/meta_checkpoint.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace llamarun;

namespace {

const std::string kMetaDir = std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/meta";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string parse_error(std::span<const uint8_t> b) {
  try {
    parse_pth(b, "test.pth");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- a minimal zip writer (stored entries) for hand-made archives ----------------------------------

void put_le(std::vector<uint8_t>& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

struct ZipOpts {
  uint16_t method = 0;
  // Write every size and offset as a zip64 escape with the value in a zip64 extra field, and the
  // end records in zip64 form (as writers do past 4 GiB, e.g. for every Meta 7B shard).
  bool zip64 = false;
};

std::vector<uint8_t> make_zip(const std::vector<std::pair<std::string, std::string>>& files, ZipOpts o = {}) {
  std::vector<uint8_t> b, cd;
  const uint64_t esc32 = o.zip64 ? 0xFFFFFFFF : 0;
  for (auto& [name, data] : files) {
    // Pad so the data starts on a 64-byte boundary, like torch's writer.
    const size_t header = 30 + name.size();
    const size_t pad = (64 - (b.size() + header + 4) % 64) % 64;
    const uint64_t local = b.size();
    put_le(b, 0x04034b50, 4), put_le(b, 20, 2), put_le(b, 0, 2), put_le(b, o.method, 2), put_le(b, 0, 4);
    put_le(b, 0, 4), put_le(b, data.size(), 4), put_le(b, data.size(), 4), put_le(b, name.size(), 2);
    put_le(b, 4 + pad, 2);
    b.insert(b.end(), name.begin(), name.end());
    put_le(b, 0xCAFE, 2), put_le(b, pad, 2), b.insert(b.end(), pad, 0);
    b.insert(b.end(), data.begin(), data.end());
    put_le(cd, 0x02014b50, 4), put_le(cd, 45, 2), put_le(cd, 45, 2), put_le(cd, 0, 2),
        put_le(cd, o.method, 2);
    put_le(cd, 0, 4), put_le(cd, 0, 4);
    put_le(cd, o.zip64 ? esc32 : data.size(), 4), put_le(cd, o.zip64 ? esc32 : data.size(), 4);
    put_le(cd, name.size(), 2), put_le(cd, o.zip64 ? 28 : 0, 2), put_le(cd, 0, 2), put_le(cd, 0, 2);
    put_le(cd, 0, 2), put_le(cd, 0, 4), put_le(cd, o.zip64 ? esc32 : local, 4);
    cd.insert(cd.end(), name.begin(), name.end());
    if (o.zip64) {
      put_le(cd, 0x0001, 2), put_le(cd, 24, 2);
      put_le(cd, data.size(), 8), put_le(cd, data.size(), 8), put_le(cd, local, 8);
    }
  }
  const uint64_t cd_off = b.size();
  b.insert(b.end(), cd.begin(), cd.end());
  if (o.zip64) {
    const uint64_t z = b.size();
    put_le(b, 0x06064b50, 4), put_le(b, 44, 8), put_le(b, 45, 2), put_le(b, 45, 2), put_le(b, 0, 4);
    put_le(b, 0, 4), put_le(b, files.size(), 8), put_le(b, files.size(), 8), put_le(b, cd.size(), 8);
    put_le(b, cd_off, 8);
    put_le(b, 0x07064b50, 4), put_le(b, 0, 4), put_le(b, z, 8), put_le(b, 1, 4);
  }
  put_le(b, 0x06054b50, 4), put_le(b, 0, 2), put_le(b, 0, 2);
  put_le(b, o.zip64 ? 0xFFFF : files.size(), 2), put_le(b, o.zip64 ? 0xFFFF : files.size(), 2);
  put_le(b, o.zip64 ? esc32 : cd.size(), 4), put_le(b, o.zip64 ? esc32 : cd_off, 4), put_le(b, 0, 2);
  return b;
}

// Pickle snippets (protocol 2) for a one-tensor state dict {"w": f16 tensor of `numel` at `offset`}.
std::string binunicode(const std::string& s) {
  std::string o = "X";
  for (int i = 0; i < 4; ++i) o.push_back(char(s.size() >> (8 * i)));
  return o + s;
}
std::string binint(int32_t v) {
  std::string o = "J";
  for (int i = 0; i < 4; ++i) o.push_back(char(uint32_t(v) >> (8 * i)));
  return o;
}
std::string tensor_pickle(int storage_numel, int offset, int rows, int cols,
                          const std::string& storage_type = "HalfStorage") {
  std::string p = "\x80\x02}(";  // PROTO 2, EMPTY_DICT, MARK
  p += binunicode("w");
  p += "ctorch._utils\n_rebuild_tensor_v2\n(";
  p += "(" + binunicode("storage") + "ctorch\n" + storage_type + "\n" + binunicode("0") + binunicode("cpu") +
       binint(storage_numel) + "tQ";
  p += binint(offset) + binint(rows) + binint(cols) + "\x86" + binint(cols) + binint(1) + "\x86";
  p += "\x89"
       "ccollections\nOrderedDict\n)R";  // requires_grad False, hooks OrderedDict()
  p += "tR";                             // args tuple, REDUCE
  p += "u.";                             // SETITEMS, STOP
  return p;
}

std::vector<uint8_t> tensor_zip(const std::string& pkl, size_t storage_bytes) {
  return make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", std::string(storage_bytes, '\x3c')}});
}

// ---- files written by torch.save --------------------------------------------------------------------

void check_dtypes_file(const std::string& path) {
  auto bytes = read_bytes(path);
  ASSERT_FALSE(bytes.empty()) << path;
  const auto want = read_json(kMetaDir + "/pth/dtypes.json")["tensors"];
  std::vector<PthTensor> ts = parse_pth(bytes, path);
  ASSERT_EQ(ts.size(), want.size());
  std::map<std::string, const PthTensor*> by;
  for (auto& t : ts) by[t.name] = &t;
  for (auto& [name, w] : want.items()) {
    ASSERT_TRUE(by.count(name)) << name;
    const PthTensor& t = *by[name];
    EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>()) << name;
    const std::string dt = w["dtype"];
    const DType expect = dt == "float16" ? DType::F16 : dt == "bfloat16" ? DType::BF16 : DType::F32;
    EXPECT_EQ(t.dtype, expect) << name;
    auto values = w["values"].get<std::vector<float>>();
    std::vector<float> got(values.size());
    dequantize_row(t.dtype, t.data, got.data(), int64_t(values.size()));
    EXPECT_EQ(got, values) << name;  // exact: the same bits widened to f32
  }
  // A view keeps pointing into the shared storage (no copy): 2 rows of 5 halfs after `whole`'s start.
  EXPECT_EQ(static_cast<const uint8_t*>(by["view_rows_2_4"]->data),
            static_cast<const uint8_t*>(by["whole"]->data) + 10 * 2);
  EXPECT_GE(static_cast<const uint8_t*>(by["whole"]->data), bytes.data());
  EXPECT_LT(static_cast<const uint8_t*>(by["whole"]->data), bytes.data() + bytes.size());
}

TEST(Pth, ReadsTorchSaveTensorsInPlace) { check_dtypes_file(kMetaDir + "/pth/dtypes.pth"); }
TEST(Pth, ReadsPickleProtocol4) { check_dtypes_file(kMetaDir + "/pth/protocol4.pth"); }

TEST(Pth, RefusesForeignGlobalWithoutRunningIt) {
  auto bytes = read_bytes(kMetaDir + "/pth/evil.pth");
  const std::string e = parse_error(bytes);
  EXPECT_NE(e.find("system' is not allowed"), std::string::npos) << e;
  EXPECT_NE(e.find("data.pkl offset"), std::string::npos) << e;
}

TEST(Pth, RefusesCompressedEntry) {
  const std::string e = parse_error(read_bytes(kMetaDir + "/pth/deflated.pth"));
  EXPECT_NE(e.find("is compressed (method 8)"), std::string::npos) << e;
}

TEST(Pth, EveryTruncationIsAnError) {
  auto bytes = read_bytes(kMetaDir + "/pth/dtypes.pth");
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_NE(parse_error(std::span<const uint8_t>(bytes.data(), n)), "") << "truncated to " << n << " bytes";
}

TEST(Pth, SingleByteCorruptionsNeverCrash) {
  // Under ASan/UBSan this sweep is the robustness check; here each result is either tensors or an Error.
  auto bytes = read_bytes(kMetaDir + "/pth/dtypes.pth");
  int rejected = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t v : {uint8_t(0x00), uint8_t(0xFF), uint8_t(bytes[i] ^ 0x01)}) {
      auto copy = bytes;
      copy[i] = v;
      rejected += parse_error(copy).empty() ? 0 : 1;
    }
  }
  EXPECT_GT(rejected, 0);
}

// ---- hand-made archives -----------------------------------------------------------------------------

TEST(Pth, HandMadeArchiveParses) {
  auto z = tensor_zip(tensor_pickle(12, 0, 3, 4), 24);
  auto ts = parse_pth(z);
  ASSERT_EQ(ts.size(), 1u);
  EXPECT_EQ(ts[0].shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ts[0].nbytes, 24u);
}

TEST(Pth, Zip64RecordsAreRead) {
  ZipOpts o;
  o.zip64 = true;
  auto z = make_zip(
      {{"archive/data.pkl", tensor_pickle(12, 0, 3, 4)}, {"archive/data/0", std::string(24, 'x')}}, o);
  if (const char* dump = std::getenv("LLAMARUN_DUMP_ZIP64")) {  // for checking with Python's zipfile
    std::ofstream f(dump, std::ios::binary);
    f.write(reinterpret_cast<const char*>(z.data()), std::streamsize(z.size()));
  }
  auto ts = parse_pth(z);
  ASSERT_EQ(ts.size(), 1u);
  EXPECT_EQ(ts[0].nbytes, 24u);
  EXPECT_EQ(std::memcmp(ts[0].data, std::string(24, 'x').data(), 24), 0);
  // The zip64 entry count disagrees with the 32-bit record's (not escaped) count.
  auto bad = z;
  for (size_t at : {bad.size() - 14, bad.size() - 12}) bad[at] = 3, bad[at + 1] = 0;
  std::string e = parse_error(bad);
  EXPECT_NE(e.find("disagrees"), std::string::npos) << e;
  // The locator points outside the file.
  bad = z;
  bad[bad.size() - 22 - 20 + 8 + 7] = 0x7F;
  e = parse_error(bad);
  EXPECT_NE(e.find("zip64 end-of-directory locator"), std::string::npos) << e;
}

TEST(Pth, GlobalsOutsideTheAllowListAreNamed) {
  std::string p = tensor_pickle(12, 0, 3, 4);
  std::string evil = p;
  evil.replace(evil.find("ccollections\nOrderedDict\n"), 25, "cos\nsystem\n");
  std::string e = parse_error(tensor_zip(evil, 24));
  EXPECT_NE(e.find("global 'os.system' is not allowed"), std::string::npos) << e;
  evil = p;
  evil.replace(evil.find("ctorch._utils\n_rebuild_tensor_v2\n"), 32, "cbuiltins\neval\n");
  e = parse_error(tensor_zip(evil, 24));
  EXPECT_NE(e.find("'builtins.eval'"), std::string::npos) << e;
  // A storage type used as a callable is not a tensor rebuild.
  e =
      parse_error(tensor_zip("\x80\x02"
                             "ctorch\nHalfStorage\n)R.",
                             0));
  EXPECT_NE(e.find("REDUCE of 'torch.HalfStorage' is not allowed"), std::string::npos) << e;
}

TEST(Pth, UnknownOpcodesAreNamed) {
  std::string e = parse_error(tensor_zip("\x80\x02]", 0));  // EMPTY_LIST
  EXPECT_NE(e.find("opcode EMPTY_LIST"), std::string::npos) << e;
  e =
      parse_error(tensor_zip("\x80\x02"
                             "cos\nsystem\n",
                             0));
  EXPECT_NE(e.find("offset 2"), std::string::npos) << e;
  e =
      parse_error(tensor_zip("\x80\x02"
                             "i__builtin__\nobject\n",
                             0));  // INST
  EXPECT_NE(e.find("opcode INST"), std::string::npos) << e;
}

TEST(Pth, StackMemoAndDictMisuseAreErrors) {
  EXPECT_NE(parse_error(tensor_zip("\x80\x02h\x05.", 0)).find("memo index 5 was never stored"),
            std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02)K\x01K\x02s.", 0)).find("SETITEM on a tuple"),
            std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02t.", 0)).find("no MARK"), std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02R.", 0)).find("stack underflow"), std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02}}.", 0)).find("STOP with 2 values"), std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02"
                                   "X\xff\xff\xff\x7f",
                                   0))
                .find("runs past the end"),
            std::string::npos);
  EXPECT_NE(parse_error(tensor_zip("\x80\x02K\x01.", 0)).find("not a state dict"), std::string::npos);
}

TEST(Pth, MemoCopiesAreCapped) {
  // A 32 KiB string put in the memo once and copied into a dict 2 x 1100 times: ~70 MiB from 40 KiB.
  std::string p = "\x80\x02" + binunicode(std::string(32768, 'a')) + std::string("q\0}", 3);
  for (int i = 0; i < 1100; ++i) p += std::string("h\0h\0s", 5);
  p += ".";
  const std::string e = parse_error(tensor_zip(p, 0));
  EXPECT_NE(e.find("memo copies exceed"), std::string::npos) << e;
  // A legacy (non-zip) torch.save file is named as such.
  std::string legacy("\x80\x02}q\0.", 6);
  legacy += std::string(32, '\0');
  EXPECT_NE(parse_error(std::vector<uint8_t>(legacy.begin(), legacy.end())).find("legacy"),
            std::string::npos);
}

TEST(Pth, StorageAndViewBoundsAreChecked) {
  // The entry holds 20 bytes but the storage claims 12 halfs (24 bytes).
  std::string e = parse_error(tensor_zip(tensor_pickle(12, 0, 3, 4), 20));
  EXPECT_NE(e.find("holds 20 bytes but its 12 elements need 24"), std::string::npos) << e;
  // The view (offset 2, 12 elements) runs past a 12-element storage.
  e = parse_error(tensor_zip(tensor_pickle(12, 2, 3, 4), 24));
  EXPECT_NE(e.find("runs past its storage"), std::string::npos) << e;
  // A storage key with no entry.
  e = parse_error(make_zip({{"archive/data.pkl", tensor_pickle(12, 0, 3, 4)}}));
  EXPECT_NE(e.find("storage '0' has no entry"), std::string::npos) << e;
  // Overflowing element counts.
  e = parse_error(tensor_zip(tensor_pickle(12, 0, 0x7fffffff, 0x7fffffff), 24));
  EXPECT_NE(e, "");
  // Unknown storage type.
  e = parse_error(tensor_zip(tensor_pickle(12, 0, 3, 4, "DoubleStorage"), 96));
  EXPECT_NE(e.find("'torch.DoubleStorage' is not allowed"), std::string::npos) << e;
}

TEST(Pth, ZipStructureIsChecked) {
  const std::string pkl = tensor_pickle(12, 0, 3, 4);
  std::string e =
      parse_error(make_zip({{"archive/data.pkl", pkl}, {"archive/../data/0", std::string(24, 'x')}}));
  EXPECT_NE(e.find("not a plain relative path"), std::string::npos) << e;
  e = parse_error(make_zip({{"/archive/data.pkl", pkl}}));
  EXPECT_NE(e.find("not a plain relative path"), std::string::npos) << e;
  e = parse_error(make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", std::string(24, 'x')}}, {8}));
  EXPECT_NE(e.find("compressed"), std::string::npos) << e;
  e = parse_error(make_zip({{"archive/data.pkl", pkl}, {"archive/data.pkl", pkl}}));
  EXPECT_NE(e.find("appears twice"), std::string::npos) << e;
  e = parse_error(make_zip({{"archive/other", pkl}}));
  EXPECT_NE(e.find("no data.pkl"), std::string::npos) << e;
  // Central directory offset past the end of the file.
  auto z = tensor_zip(pkl, 24);
  auto bad = z;
  bad[bad.size() - 6] = 0xF0;
  e = parse_error(bad);
  EXPECT_NE(e.find("runs past the end of the file"), std::string::npos) << e;
  // zip64 escapes with no zip64 record.
  bad = z;
  for (int i = 0; i < 4; ++i) bad[bad.size() - 6 + size_t(i)] = 0xFF;
  e = parse_error(bad);
  EXPECT_NE(e.find("no zip64"), std::string::npos) << e;
  // A local header offset pointing nowhere.
  bad = z;
  const size_t cd = size_t(bad[bad.size() - 6]) | size_t(bad[bad.size() - 5]) << 8;
  bad[cd + 42] = 0x33;
  e = parse_error(bad);
  EXPECT_NE(e.find("local header"), std::string::npos) << e;
  EXPECT_NE(parse_error(std::vector<uint8_t>{}).find("not a zip archive"), std::string::npos);
}

// ---- Meta checkpoint directories ---------------------------------------------------------------------

TEST(MetaCheckpoint, NameTable) {
  EXPECT_EQ(meta_to_gguf_name("layers.12.attention.wq.weight", "x"), "blk.12.attn_q.weight");
  EXPECT_EQ(meta_to_gguf_name("layers.0.feed_forward.w2.weight", "x"), "blk.0.ffn_down.weight");
  EXPECT_EQ(meta_to_gguf_name("tok_embeddings.weight", "x"), "token_embd.weight");
  EXPECT_EQ(meta_to_gguf_name("rope.freqs", "x"), "");
  EXPECT_THROW(meta_to_gguf_name("layers.0.attention.wx.weight", "x"), Error);
  EXPECT_THROW(meta_to_gguf_name("layers.01.attention.wq.weight", "x"), Error);
  EXPECT_THROW(meta_to_gguf_name("layers..attention.wq.weight", "x"), Error);
}

TEST(MetaCheckpoint, TwoShardsJoinToTheOneShardWeights) {
  ASSERT_TRUE(is_meta_checkpoint_dir(kMetaDir + "/one_shard"));
  ASSERT_TRUE(is_meta_checkpoint_dir(kMetaDir + "/two_shards"));
  WeightMap one = load_meta_checkpoint(kMetaDir + "/one_shard");
  WeightMap two = load_meta_checkpoint(kMetaDir + "/two_shards");
  EXPECT_EQ(one.tensors.size(), 2u + 1u + 2u * 9u);  // rope.freqs dropped
  ASSERT_EQ(one.tensors.size(), two.tensors.size());
  for (auto& [name, a] : one.tensors) {
    const TensorInfo* b = two.find(name);
    ASSERT_TRUE(b) << name;
    EXPECT_EQ(a.shape, b->shape) << name;
    ASSERT_EQ(a.nbytes, b->nbytes) << name;
    EXPECT_EQ(std::memcmp(a.data, b->data, a.nbytes), 0) << name;
  }
  // One shard: used in place from the mapping.
  const TensorInfo& e = one.get("token_embd.weight");
  EXPECT_TRUE(one.buffers.empty());
  EXPECT_GE(static_cast<const uint8_t*>(e.data), one.files[0]->data());
  EXPECT_LT(static_cast<const uint8_t*>(e.data), one.files[0]->data() + one.files[0]->size());
}

TEST(MetaCheckpoint, ParamsGiveTheConfig) {
  WeightMap wm = load_meta_checkpoint(kMetaDir + "/one_shard");
  LlamaConfig c =
      config_from_meta_params(read_text_file(kMetaDir + "/one_shard/params.json"), wm, "params.json");
  const auto g = read_json(kMetaDir + "/golden.json");
  EXPECT_EQ(c.hidden_size, 24);
  EXPECT_EQ(c.intermediate_size, g["intermediate_size"].get<int>());
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.rope_layout, RopeLayout::kInterleaved);
  EXPECT_FALSE(c.tie_embeddings);
  // Meta's formula must match ffn_gate's rows.
  try {
    config_from_meta_params(R"({"dim": 24, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 64})",
                            wm, "params.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 96 rows but Meta's formula gives 64"), std::string::npos)
        << e.what();
  }
  auto ll3 = config_from_meta_params(
      R"({"dim": 24, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 32, "ffn_dim_multiplier": 1.3,
          "use_scaled_rope": true, "rope_theta": 500000})",
      wm, "params.json");
  EXPECT_EQ(ll3.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(ll3.max_position, 131072);
  EXPECT_THROW(config_from_meta_params("{\"dim\": 24}", wm, "p"), Error);
  EXPECT_THROW(config_from_meta_params("[", wm, "p"), Error);
}

TEST(MetaCheckpoint, MissingOrMismatchedShardsAreErrors) {
  const std::string d = testutil::temp_path("meta_missing");
  fs::remove_all(d);
  fs::create_directories(d);
  fs::copy_file(kMetaDir + "/two_shards/params.json", d + "/params.json");
  fs::copy_file(kMetaDir + "/two_shards/consolidated.00.pth", d + "/consolidated.00.pth");
  fs::copy_file(kMetaDir + "/two_shards/consolidated.01.pth", d + "/consolidated.02.pth");
  try {
    load_meta_checkpoint(d);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a shard is missing"), std::string::npos) << e.what();
  }
  // Shards of two different checkpoints: the replicated norms differ.
  fs::remove(d + "/consolidated.02.pth");
  fs::copy_file(kMetaDir + "/one_shard/consolidated.00.pth", d + "/consolidated.01.pth");
  EXPECT_THROW(load_meta_checkpoint(d), Error);
  fs::remove_all(d);
}

struct GoldenCase {
  std::vector<int32_t> prompt, greedy;
  std::vector<int32_t> top5;
  std::vector<float> top5_logits, logits_0_8;
};

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> out;
  const nlohmann::json g = read_json(kMetaDir + "/golden.json");
  for (auto& c : g["cases"])
    out.push_back({c["prompt"].get<std::vector<int32_t>>(), c["greedy"].get<std::vector<int32_t>>(),
                   c["first_step_top5_ids"].get<std::vector<int32_t>>(),
                   c["first_step_top5_logits"].get<std::vector<float>>(),
                   c["first_step_logits_0_8"].get<std::vector<float>>()});
  return out;
}

// Logits (f32 activations: summation order only) and greedy tokens of `path` against transformers.
void expect_matches_transformers(const std::string& path) {
  LoadOptions lo;
  lo.activations = "f32";
  auto m = load_model(path, lo);
  ASSERT_TRUE(m->tokenizer) << path;
  EXPECT_EQ(m->tokenizer->encode("Hello world!"), (std::vector<int32_t>{15043, 3186, 29991}));
  const int V = m->cfg.vocab_size;
  EngineConfig ec;
  ec.num_blocks = 8;  // 128 positions
  ec.max_model_len = 64;
  Engine engine(*m, ec);
  auto cases = golden_cases();
  ASSERT_EQ(cases.size(), 2u);
  for (auto& c : cases) {
    std::vector<float> logits = m->llama->prompt_logits(c.prompt);
    const float* last = logits.data() + (c.prompt.size() - 1) * size_t(V);
    for (size_t i = 0; i < c.top5.size(); ++i)
      EXPECT_NEAR(last[c.top5[i]], c.top5_logits[i], 2e-4 + 2e-4 * std::fabs(c.top5_logits[i])) << path;
    for (size_t i = 0; i < c.logits_0_8.size(); ++i)
      EXPECT_NEAR(last[i], c.logits_0_8[i], 2e-4 + 2e-4 * std::fabs(c.logits_0_8[i])) << path;
    SamplingParams sp;
    sp.temperature = 0;
    sp.max_tokens = int(c.greedy.size());
    sp.ignore_eos = true;
    EXPECT_EQ(generate(engine, c.prompt, sp).token_ids, c.greedy) << path;
  }
}

TEST(MetaCheckpoint, OneShardMatchesTransformers) { expect_matches_transformers(kMetaDir + "/one_shard"); }
TEST(MetaCheckpoint, TwoShardsMatchTransformers) { expect_matches_transformers(kMetaDir + "/two_shards"); }

TEST(MetaCheckpoint, ConvertedModelsMatchTransformers) {
  const std::string d = testutil::temp_path("meta_convert");
  fs::remove_all(d);
  fs::create_directories(d);
  auto r = testutil::run_llamarun({"convert", kMetaDir + "/two_shards", d + "/hf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(d + "/hf/" + f)) << f;
  r = testutil::run_llamarun({"convert", kMetaDir + "/one_shard", d + "/meta.gguf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testutil::run_llamarun({"convert", d + "/hf", d + "/from-hf.bin", "--to", "gguf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // An existing output is kept unless --force.
  r = testutil::run_llamarun({"convert", kMetaDir + "/one_shard", d + "/meta.gguf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  expect_matches_transformers(d + "/hf");
  expect_matches_transformers(d + "/meta.gguf");
  expect_matches_transformers(d + "/from-hf.bin");
  // HF's Q rows are the Meta rows permuted (halves), GGUF's are Meta's own.
  WeightMap meta = load_meta_checkpoint(kMetaDir + "/one_shard");
  auto hf = load_model(d + "/hf");
  const TensorInfo& mq = meta.get("blk.0.attn_q.weight");
  const TensorInfo& hq = hf->weights->get("model.layers.0.self_attn.q_proj.weight");
  ASSERT_EQ(mq.nbytes, hq.nbytes);
  const size_t rb = mq.nbytes / size_t(mq.shape[0]);
  const int hd = 6;
  for (int h = 0; h < 4; ++h)
    for (int i = 0; i < hd / 2; ++i)
      for (int j = 0; j < 2; ++j)
        EXPECT_EQ(
            std::memcmp(static_cast<const uint8_t*>(mq.data) + size_t(h * hd + 2 * i + j) * rb,
                        static_cast<const uint8_t*>(hq.data) + size_t(h * hd + j * hd / 2 + i) * rb, rb),
            0);
  fs::remove_all(d);
}

TEST(MetaCheckpoint, ConvertUsageErrors) {
  auto r = testutil::run_llamarun({"convert", kMetaDir + "/one_shard"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs IN and OUT"), std::string::npos) << r.err;
  r = testutil::run_llamarun({"convert", kMetaDir + "/one_shard", "/dev/shm/x", "--to", "onnx"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--to must be"), std::string::npos) << r.err;
}

}  // namespace
