// Test-only writers for small GGUF and safetensors files. They write exactly what they are told
// (including wrong counts, offsets and types), so tests can corrupt any single field of a valid file.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace llamarun::testing_util {

using Bytes = std::vector<uint8_t>;

template <typename T>
void put(Bytes& b, T v) {
  uint8_t tmp[sizeof(T)];
  std::memcpy(tmp, &v, sizeof(T));
  b.insert(b.end(), tmp, tmp + sizeof(T));
}
inline void put_str(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

inline void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << s;
}

// A fresh empty directory for one test, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("llamarun_") + info->test_suite_name() + "_" + info->name();
    // Prefer RAM-backed /dev/shm: the sweep tests write thousands of small files.
    std::error_code ec;
    std::filesystem::path root =
        std::filesystem::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
            ? std::filesystem::path("/dev/shm")
            : std::filesystem::temp_directory_path();
    path_ = root / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// GGUF value type ids.
enum : uint32_t {
  kGU8 = 0,
  kGI8 = 1,
  kGU16 = 2,
  kGI16 = 3,
  kGU32 = 4,
  kGI32 = 5,
  kGF32 = 6,
  kGBool = 7,
  kGString = 8,
  kGArray = 9,
  kGU64 = 10,
  kGI64 = 11,
  kGF64 = 12,
};
// GGML tensor type ids.
enum : uint32_t { kTF32 = 0, kTF16 = 1, kTQ4_0 = 2, kTQ4_1 = 3, kTQ8_0 = 8, kTBF16 = 30 };

struct GgufBuilder {
  struct KV {
    std::string key;
    uint32_t type;
    Bytes value;  // encoded value (for arrays: element type, count, elements)
  };
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;  // GGUF order: innermost first
    uint32_t type;
    Bytes data;
    std::optional<uint64_t> offset;  // default: running padded total
  };

  char magic[4] = {'G', 'G', 'U', 'F'};
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors, n_kv;  // overrides of the written counts
  uint64_t alignment = 32;                  // layout alignment (write general.alignment separately)
  std::vector<KV> kvs;
  std::vector<Tensor> tensors;

  void kv_raw(const std::string& key, uint32_t type, Bytes value) {
    kvs.push_back({key, type, std::move(value)});
  }
  void kv_u32(const std::string& key, uint32_t v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kGU32, b);
  }
  void kv_i32(const std::string& key, int32_t v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kGI32, b);
  }
  void kv_u64(const std::string& key, uint64_t v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kGU64, b);
  }
  void kv_f32(const std::string& key, float v) {
    Bytes b;
    put(b, v);
    kv_raw(key, kGF32, b);
  }
  void kv_bool(const std::string& key, bool v) { kv_raw(key, kGBool, Bytes{uint8_t(v)}); }
  void kv_str(const std::string& key, const std::string& v) {
    Bytes b;
    put_str(b, v);
    kv_raw(key, kGString, b);
  }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    Bytes b;
    put<uint32_t>(b, kGString);
    put<uint64_t>(b, v.size());
    for (auto& s : v) put_str(b, s);
    kv_raw(key, kGArray, b);
  }
  void kv_f32s(const std::string& key, const std::vector<float>& v) {
    Bytes b;
    put<uint32_t>(b, kGF32);
    put<uint64_t>(b, v.size());
    for (float x : v) put(b, x);
    kv_raw(key, kGArray, b);
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    Bytes b;
    put<uint32_t>(b, kGI32);
    put<uint64_t>(b, v.size());
    for (int32_t x : v) put(b, x);
    kv_raw(key, kGArray, b);
  }
  // `shape` outermost-first (as TensorInfo); stored reversed.
  void tensor(const std::string& name, std::vector<uint64_t> shape, uint32_t type, Bytes data) {
    tensors.push_back({name, {shape.rbegin(), shape.rend()}, type, std::move(data), std::nullopt});
  }

  Bytes build() const {
    Bytes b(magic, magic + 4);
    put(b, version);
    put<uint64_t>(b, n_tensors.value_or(tensors.size()));
    put<uint64_t>(b, n_kv.value_or(kvs.size()));
    for (auto& kv : kvs) {
      put_str(b, kv.key);
      put(b, kv.type);
      b.insert(b.end(), kv.value.begin(), kv.value.end());
    }
    uint64_t off = 0;
    for (auto& t : tensors) {
      put_str(b, t.name);
      put<uint32_t>(b, t.ne.size());
      for (auto d : t.ne) put(b, d);
      put(b, t.type);
      put<uint64_t>(b, t.offset.value_or(off));
      off += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    while (b.size() % alignment) b.push_back(0);
    for (size_t i = 0; i < tensors.size(); ++i) {
      auto& d = tensors[i].data;
      b.insert(b.end(), d.begin(), d.end());
      if (i + 1 < tensors.size())
        while (b.size() % alignment) b.push_back(0);
    }
    return b;
  }
};

// A safetensors file from raw header text and data bytes. Like the reference writer, the header is
// padded with spaces to a multiple of 8 bytes (so the data is aligned) unless `pad` is false.
inline Bytes safetensors_bytes(std::string header, const Bytes& data,
                               std::optional<uint64_t> header_len = std::nullopt, bool pad = true) {
  if (pad)
    while (header.size() % 8) header.push_back(' ');
  Bytes b;
  put<uint64_t>(b, header_len.value_or(header.size()));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

inline Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b;
  for (float x : v) put(b, x);
  return b;
}

}  // namespace llamarun::testing_util
