#include "formats/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/mmap.h"

namespace llamarun {

namespace {

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void put_str(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

size_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
      return 8;
    default:
      return 0;
  }
}

// Bounds-checked reader over the metadata section, keeping each value's raw bytes.
class RawCursor {
 public:
  RawCursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  size_t pos() const { return pos_; }
  void need(uint64_t k, const std::string& what) const {
    if (k > n_ - pos_)
      fail(path_, ": file truncated while reading ", what, " at byte ", pos_, " (needs ", k, " bytes, ",
           n_ - pos_, " remain)");
  }
  template <typename T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void skip(uint64_t k, const std::string& what) {
    need(k, what);
    pos_ += size_t(k);
  }
  std::string str(const std::string& what) {
    const uint64_t len = get<uint64_t>("length of " + what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  const uint8_t* at(size_t pos) const { return p_ + pos; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& path_;
};

void skip_value(RawCursor& c, GgufValueType t, const std::string& path, const std::string& key) {
  const std::string what = "value of '" + key + "'";
  if (t == GgufValueType::String) {
    c.str(what);
    return;
  }
  if (t == GgufValueType::Array) {
    const auto et = GgufValueType(c.get<uint32_t>("element type of " + what));
    const uint64_t count = c.get<uint64_t>("element count of " + what);
    if (et == GgufValueType::Array) fail(path, ": metadata key '", key, "': nested arrays are not supported");
    if (et == GgufValueType::String) {
      for (uint64_t i = 0; i < count; ++i) c.str(what);
      return;
    }
    const size_t es = scalar_bytes(et);
    if (es == 0) fail(path, ": metadata key '", key, "': unknown array element type ", uint32_t(et));
    if (count > (uint64_t(1) << 62) / es)
      fail(path, ": metadata key '", key, "': array count ", count, " too large");
    c.skip(count * es, what);
    return;
  }
  const size_t sz = scalar_bytes(t);
  if (sz == 0) fail(path, ": metadata key '", key, "' has unknown value type ", uint32_t(t));
  c.skip(sz, what);
}

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

}  // namespace

uint32_t ggml_type_id(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q4_1:
      return 3;
    case DType::Q5_0:
      return 6;
    case DType::Q5_1:
      return 7;
    case DType::Q8_0:
      return 8;
    case DType::Q2_K:
      return 10;
    case DType::Q3_K:
      return 11;
    case DType::Q4_K:
      return 12;
    case DType::Q5_K:
      return 13;
    case DType::Q6_K:
      return 14;
    case DType::Q8_K:
      return 15;
    case DType::IQ4_NL:
      return 20;
    case DType::IQ4_XS:
      return 23;
    case DType::BF16:
      return 30;
  }
  fail("ggml_type_id: unknown dtype ", int(t));
}

std::vector<GgufKV> read_gguf_kvs(const std::string& path) {
  auto file = MappedFile::open(path);
  RawCursor c(file->data(), file->size(), path);
  if (file->size() < 4 || std::memcmp(file->data(), "GGUF", 4) != 0)
    fail(path, ": not a GGUF file (bad magic)");
  c.get<uint32_t>("magic");
  const uint32_t version = c.get<uint32_t>("version");
  if (version < 2 || version > 3) fail(path, ": GGUF version ", version, " is not supported (only 2 and 3)");
  c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("metadata key/value count");
  if (n_kv > file->size() / 14) fail(path, ": metadata key/value count ", n_kv, " cannot fit in the file");
  std::vector<GgufKV> kvs;
  kvs.reserve(size_t(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV kv;
    kv.key = c.str("metadata key " + std::to_string(i));
    kv.type = GgufValueType(c.get<uint32_t>("type of '" + kv.key + "'"));
    const size_t start = c.pos();
    skip_value(c, kv.type, path, kv.key);
    kv.value.assign(c.at(start), c.at(c.pos()));
    kvs.push_back(std::move(kv));
  }
  return kvs;
}

void GgufWriter::set(GgufKV kv) {
  for (auto& e : kvs_)
    if (e.key == kv.key) {
      e = std::move(kv);
      return;
    }
  kvs_.push_back(std::move(kv));
}

void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  GgufKV kv{key, GgufValueType::U32, {}};
  put(kv.value, v);
  set(std::move(kv));
}
void GgufWriter::set_i32(const std::string& key, int32_t v) {
  GgufKV kv{key, GgufValueType::I32, {}};
  put(kv.value, v);
  set(std::move(kv));
}
void GgufWriter::set_f32(const std::string& key, float v) {
  GgufKV kv{key, GgufValueType::F32, {}};
  put(kv.value, v);
  set(std::move(kv));
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  GgufKV kv{key, GgufValueType::Bool, {}};
  put<uint8_t>(kv.value, v ? 1 : 0);
  set(std::move(kv));
}
void GgufWriter::set_str(const std::string& key, const std::string& v) {
  GgufKV kv{key, GgufValueType::String, {}};
  put_str(kv.value, v);
  set(std::move(kv));
}
void GgufWriter::set_strs(const std::string& key, const std::vector<std::string>& v) {
  GgufKV kv{key, GgufValueType::Array, {}};
  put(kv.value, uint32_t(GgufValueType::String));
  put<uint64_t>(kv.value, v.size());
  for (auto& s : v) put_str(kv.value, s);
  set(std::move(kv));
}
void GgufWriter::set_i32s(const std::string& key, const std::vector<int32_t>& v) {
  GgufKV kv{key, GgufValueType::Array, {}};
  put(kv.value, uint32_t(GgufValueType::I32));
  put<uint64_t>(kv.value, v.size());
  for (auto x : v) put(kv.value, x);
  set(std::move(kv));
}
void GgufWriter::set_f32s(const std::string& key, const std::vector<float>& v) {
  GgufKV kv{key, GgufValueType::Array, {}};
  put(kv.value, uint32_t(GgufValueType::F32));
  put<uint64_t>(kv.value, v.size());
  for (auto x : v) put(kv.value, x);
  set(std::move(kv));
}

bool GgufWriter::has(const std::string& key) const {
  for (auto& e : kvs_)
    if (e.key == key) return true;
  return false;
}

void GgufWriter::erase(const std::string& key) {
  for (size_t i = 0; i < kvs_.size(); ++i)
    if (kvs_[i].key == key) {
      kvs_.erase(kvs_.begin() + long(i));
      return;
    }
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  if (name.empty() || name.size() > 63) fail("GGUF writer: tensor name '", name, "' must be 1..63 bytes");
  if (shape.empty() || shape.size() > 4) fail("GGUF writer: tensor '", name, "' has ", shape.size(), " dims");
  for (auto& t : tensors_)
    if (t.name == name) fail("GGUF writer: tensor '", name, "' added twice");
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 1) fail("GGUF writer: tensor '", name, "' has a dimension ", d);
    n *= d;
  }
  const int64_t inner = shape.back();
  if (inner % dtype_block_size(dtype) != 0)
    fail("GGUF writer: tensor '", name, "': row length ", inner, " is not a multiple of ", dtype_name(dtype),
         "'s block size ", dtype_block_size(dtype));
  tensors_.push_back({name, dtype, shape, dtype_row_bytes(dtype, inner) * size_t(n / inner)});
}

uint64_t GgufWriter::alignment() const {
  for (auto& e : kvs_)
    if (e.key == "general.alignment" && e.type == GgufValueType::U32 && e.value.size() == 4) {
      uint32_t a;
      std::memcpy(&a, e.value.data(), 4);
      if (a == 0 || (a & (a - 1)) != 0) fail("GGUF writer: general.alignment ", a, " is not a power of two");
      return a;
    }
  return 32;
}

void GgufWriter::write(const std::string& path,
                       const std::function<void(size_t, uint8_t*, size_t)>& fill) const {
  const uint64_t align = alignment();
  auto pad = [&](uint64_t x) { return (x + align - 1) / align * align; };
  std::vector<uint8_t> head;
  head.insert(head.end(), {'G', 'G', 'U', 'F'});
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kvs_.size());
  for (auto& kv : kvs_) {
    put_str(head, kv.key);
    put(head, uint32_t(kv.type));
    head.insert(head.end(), kv.value.begin(), kv.value.end());
  }
  uint64_t offset = 0;
  for (auto& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, uint32_t(t.shape.size()));
    for (size_t d = t.shape.size(); d-- > 0;) put<uint64_t>(head, uint64_t(t.shape[d]));  // innermost first
    put<uint32_t>(head, ggml_type_id(t.dtype));
    put<uint64_t>(head, offset);
    offset = pad(offset + t.nbytes);
  }
  head.resize(size_t(pad(head.size())), 0);

  const std::string tmp = path + ".tmp";
  std::unique_ptr<FILE, FileCloser> f(std::fopen(tmp.c_str(), "wb"));
  if (!f) fail(path, ": cannot create '", tmp, "': ", std::strerror(errno));
  auto write_bytes = [&](const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f.get()) != n) {
      const std::string err = std::strerror(errno);
      f.reset();
      std::remove(tmp.c_str());
      fail(path, ": write failed: ", err);
    }
  };
  write_bytes(head.data(), head.size());
  std::vector<uint8_t> buf;
  const std::vector<uint8_t> zeros(size_t(align), 0);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    buf.assign(t.nbytes, 0);
    try {
      fill(i, buf.data(), buf.size());
    } catch (...) {
      f.reset();
      std::remove(tmp.c_str());
      throw;
    }
    write_bytes(buf.data(), buf.size());
    write_bytes(zeros.data(), size_t(pad(t.nbytes) - t.nbytes));
  }
  if (std::fflush(f.get()) != 0 || std::fclose(f.release()) != 0) {
    std::remove(tmp.c_str());
    fail(path, ": write failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    fail(path, ": cannot rename '", tmp, "' to it: ", err);
  }
}

}  // namespace llamarun
