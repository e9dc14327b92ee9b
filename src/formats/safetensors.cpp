#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/mmap.h"

namespace llamarun {

namespace {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 64;

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "F32")
    *out = DType::F32;
  else if (s == "F16")
    *out = DType::F16;
  else if (s == "BF16")
    *out = DType::BF16;
  else
    return false;
  return true;
}

// Parses the header, rejecting duplicate keys in any object and absurd nesting.
json parse_header(const std::string& path, const char* text, size_t n) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth > kMaxJsonDepth) fail(path, ": header JSON nests deeper than ", kMaxJsonDepth, " levels");
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (ev == json::parse_event_t::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second)
        fail(path, ": duplicate key '", k, "' in the header",
             keys.size() == 1 ? " (duplicate tensor name)" : "");
    }
    return true;
  };
  // nlohmann's lexer treats a NUL byte as the end of input, so "{}\0garbage" would pass; NUL is never
  // valid in JSON text (not even inside strings).
  if (const void* z = std::memchr(text, 0, n))
    fail(path, ": header is not valid UTF-8 JSON: NUL byte at header offset ",
         static_cast<const char*>(z) - text);
  try {
    return json::parse(text, text + n, cb);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid UTF-8 JSON: ", e.what());
  }
}

uint64_t get_u64(const json& v, const std::string& path, const std::string& what) {
  if (!v.is_number_unsigned()) fail(path, ": ", what, " must be a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

void read_safetensors(const std::string& path, WeightMap& out) {
  auto file = MappedFile::open(path);
  const size_t size = file->size();
  if (size < 8)
    fail(path, ": not a safetensors file: ", size, " bytes is shorter than the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, file->data(), 8);  // little-endian host (checked in gguf.cpp)
  if (n > kSafetensorsMaxHeader)
    fail(path, ": header length ", n, " exceeds the limit of ", kSafetensorsMaxHeader, " bytes");
  if (n > size - 8) fail(path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
  const uint8_t* data = file->data() + 8 + n;
  const uint64_t data_size = size - 8 - n;

  json header = parse_header(path, reinterpret_cast<const char*>(file->data() + 8), size_t(n));
  if (!header.is_object()) fail(path, ": header must be a JSON object, got ", header.type_name());

  struct Entry {
    TensorInfo info;
    bool is_int = false;  // I32: goes to out.int_tensors
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto& [name, desc] : header.items()) {
    if (name == "__metadata__") {
      if (!desc.is_object()) fail(path, ": __metadata__ must be an object");
      continue;
    }
    const std::string tw = "tensor '" + name + "'";
    if (name.empty()) fail(path, ": header has a tensor with an empty name");
    if (out.tensors.count(name))
      fail(path, ": ", tw, " is already defined in ", out.tensors.at(name).file, " (duplicate across files)");
    if (out.int_tensors.count(name))
      fail(path, ": ", tw, " is already defined in ", out.int_tensors.at(name).file,
           " (duplicate across files)");
    if (!desc.is_object()) fail(path, ": ", tw, ": entry must be an object");
    auto dt_it = desc.find("dtype");
    auto sh_it = desc.find("shape");
    auto off_it = desc.find("data_offsets");
    if (dt_it == desc.end() || !dt_it->is_string()) fail(path, ": ", tw, ": missing or non-string 'dtype'");
    if (sh_it == desc.end() || !sh_it->is_array()) fail(path, ": ", tw, ": missing or non-array 'shape'");
    if (off_it == desc.end() || !off_it->is_array() || off_it->size() != 2)
      fail(path, ": ", tw, ": 'data_offsets' must be an array [begin, end]");
    Entry e;
    e.info.name = name;
    e.info.file = path;
    const std::string dts = dt_it->get<std::string>();
    // I32: the packed words of AWQ / GPTQ int4 checkpoints (kept apart in WeightMap::int_tensors).
    e.is_int = dts == "I32";
    if (!e.is_int && !parse_dtype(dts, &e.info.dtype))
      fail(path, ": ", tw, " has dtype '", dts,
           "', which is not supported (supported: F32, F16, BF16; I32 for AWQ/GPTQ packed weights)");
    int64_t numel = 1;
    for (const auto& d : *sh_it) {
      uint64_t v = get_u64(d, path, tw + " shape dimension");
      if (v > uint64_t(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, int64_t(v), &numel))
        fail(path, ": ", tw, ": shape ", sh_it->dump(), " overflows the element count");
      e.info.shape.push_back(int64_t(v));
    }
    e.begin = get_u64((*off_it)[0], path, tw + " data_offsets[0]");
    e.end = get_u64((*off_it)[1], path, tw + " data_offsets[1]");
    if (e.end < e.begin) fail(path, ": ", tw, ": data_offsets [", e.begin, ", ", e.end, "] end before begin");
    uint64_t nbytes;
    const size_t elem = e.is_int ? sizeof(int32_t) : dtype_block_bytes(e.info.dtype);
    if (__builtin_mul_overflow(uint64_t(numel), elem, &nbytes))
      fail(path, ": ", tw, ": shape ", sh_it->dump(), " overflows the byte size");
    if (e.end - e.begin != nbytes)
      fail(path, ": ", tw, ": data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
           " bytes but shape ", sh_it->dump(), " of ", dts, " needs ", nbytes);
    e.info.nbytes = size_t(nbytes);
    entries.push_back(std::move(e));
  }

  // The tensors must tile the data section exactly: sorted, contiguous, no overlap, no gap.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& e : entries) {
    if (e.begin < expected)
      fail(path, ": tensor '", e.info.name, "' data [", e.begin, ", ", e.end,
           ") overlaps the previous tensor (ends at ", expected, ")");
    if (e.begin > expected)
      fail(path, ": tensor '", e.info.name, "' data starts at ", e.begin, " but the previous tensor ends at ",
           expected, " (gap in the data section)");
    expected = e.end;
  }
  if (expected != data_size)
    fail(path, ": tensors cover ", expected, " bytes but the data section holds ", data_size, " bytes");

  for (auto& e : entries) {
    // Kernels read elements in place, so each tensor must start on its element size (the reference
    // writer pads the header to 8 bytes and orders tensors to guarantee this).
    size_t align = e.is_int ? sizeof(int32_t) : dtype_block_bytes(e.info.dtype);
    if (e.info.nbytes != 0 && reinterpret_cast<uintptr_t>(data + e.begin) % align != 0)
      fail(path, ": tensor '", e.info.name, "' data at file offset ", 8 + n + e.begin, " is not aligned to ",
           align, " bytes (its element size); re-save the file with the safetensors library");
  }
  for (auto& e : entries) {
    if (e.is_int) {
      IntTensorInfo it;
      it.name = e.info.name;
      it.shape = std::move(e.info.shape);
      it.data = reinterpret_cast<const int32_t*>(data + e.begin);
      it.nbytes = e.info.nbytes;
      it.file = path;
      out.int_tensors.emplace(it.name, std::move(it));
      continue;
    }
    e.info.data = data + e.begin;
    out.tensors.emplace(e.info.name, std::move(e.info));
  }
  out.files.push_back(file);
}

}  // namespace llamarun
