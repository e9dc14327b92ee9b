#include "formats/gguf.h"

#include <bit>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/mmap.h"

namespace llamarun {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};

// GGUF metadata value types.
enum GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

const char* gguf_type_name(uint32_t t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

// Size in bytes of a fixed-size scalar type, 0 for string/array/unknown.
size_t scalar_size(uint32_t t) {
  switch (t) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

// GGML tensor type ids: the supported ones map to DType; others get a name for the error message.
bool ggml_type_to_dtype(uint32_t id, DType* out) {
  switch (id) {
    case 0:
      *out = DType::F32;
      return true;
    case 1:
      *out = DType::F16;
      return true;
    case 2:
      *out = DType::Q4_0;
      return true;
    case 3:
      *out = DType::Q4_1;
      return true;
    case 8:
      *out = DType::Q8_0;
      return true;
    case 30:
      *out = DType::BF16;
      return true;
    case 6:
      *out = DType::Q5_0;
      return true;
    case 7:
      *out = DType::Q5_1;
      return true;
    case 10:
      *out = DType::Q2_K;
      return true;
    case 11:
      *out = DType::Q3_K;
      return true;
    case 12:
      *out = DType::Q4_K;
      return true;
    case 13:
      *out = DType::Q5_K;
      return true;
    case 14:
      *out = DType::Q6_K;
      return true;
    case 15:
      *out = DType::Q8_K;
      return true;
    case 20:
      *out = DType::IQ4_NL;
      return true;
    case 23:
      *out = DType::IQ4_XS;
      return true;
    default:
      return false;
  }
}

const char* ggml_type_name(uint32_t id) {
  switch (id) {
    case 6:
      return "Q5_0";
    case 7:
      return "Q5_1";
    case 9:
      return "Q8_1";
    case 10:
      return "Q2_K";
    case 11:
      return "Q3_K";
    case 12:
      return "Q4_K";
    case 13:
      return "Q5_K";
    case 14:
      return "Q6_K";
    case 15:
      return "Q8_K";
    case 16:
      return "IQ2_XXS";
    case 17:
      return "IQ2_XS";
    case 18:
      return "IQ3_XXS";
    case 19:
      return "IQ1_S";
    case 20:
      return "IQ4_NL";
    case 21:
      return "IQ3_S";
    case 22:
      return "IQ2_S";
    case 23:
      return "IQ4_XS";
    case 24:
      return "I8";
    case 25:
      return "I16";
    case 26:
      return "I32";
    case 27:
      return "I64";
    case 28:
      return "F64";
    case 29:
      return "IQ1_M";
    default:
      return "unknown";
  }
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path) : p_(data), n_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }

  void need(size_t k, const std::string& what) const {
    if (k > remaining())
      fail(path_, ": file truncated: reading ", what, " at byte ", pos_, " needs ", k, " bytes but only ",
           remaining(), " remain");
  }

  template <typename T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A GGUF string: uint64 length, then that many bytes (not NUL-terminated).
  std::string str(const std::string& what) {
    uint64_t len = get<uint64_t>("length of " + what);
    if (len > remaining())
      fail(path_, ": string length ", len, " of ", what, " at byte ", pos_ - 8,
           " runs past the end of the file (", remaining(), " bytes remain)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& path_;
};

// Rounds x up to a multiple of `align` (a power of two); false on overflow.
bool align_up(uint64_t x, uint64_t align, uint64_t* out) {
  uint64_t rem = x & (align - 1);
  if (rem == 0) {
    *out = x;
    return true;
  }
  return !__builtin_add_overflow(x, align - rem, out);
}

int64_t read_int_scalar(Cursor& c, uint32_t t, const std::string& what) {
  switch (t) {
    case kU8:
      return c.get<uint8_t>(what);
    case kI8:
      return c.get<int8_t>(what);
    case kU16:
      return c.get<uint16_t>(what);
    case kI16:
      return c.get<int16_t>(what);
    case kU32:
      return c.get<uint32_t>(what);
    case kI32:
      return c.get<int32_t>(what);
    case kI64:
      return c.get<int64_t>(what);
    default:
      return 0;  // not reached: callers pass integer types only
  }
}

bool read_bool(Cursor& c, const std::string& path, const std::string& what) {
  uint8_t b = c.get<uint8_t>(what);
  if (b > 1) fail(path, ": ", what, " is a bool with invalid byte value ", int(b), " (must be 0 or 1)");
  return b != 0;
}

MetaValue read_array(Cursor& c, const std::string& path, const std::string& key) {
  const std::string what = "array '" + key + "'";
  uint32_t et = c.get<uint32_t>("element type of " + what);
  uint64_t count = c.get<uint64_t>("element count of " + what);
  if (et == kArray) fail(path, ": metadata key '", key, "': nested arrays are not supported");
  if (et == kString) {
    // Each string takes at least its 8-byte length.
    if (count > c.remaining() / 8)
      fail(path, ": metadata key '", key, "': array of ", count, " strings cannot fit in the ", c.remaining(),
           " bytes left in the file");
    std::vector<std::string> v;
    v.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) v.push_back(c.str(what + " element " + std::to_string(i)));
    return v;
  }
  size_t es = scalar_size(et);
  if (es == 0) fail(path, ": metadata key '", key, "': array has unknown element type ", et);
  if (count > c.remaining() / es)
    fail(path, ": metadata key '", key, "': array of ", count, " ", gguf_type_name(et),
         " values runs past the end of the file (", c.remaining(), " bytes remain)");
  if (et == kF32 || et == kF64) {
    std::vector<double> v(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) v[i] = et == kF32 ? double(c.get<float>(what)) : c.get<double>(what);
    return v;
  }
  std::vector<int64_t> v(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    if (et == kBool) {
      v[i] = read_bool(c, path, what + " element " + std::to_string(i));
    } else if (et == kU64) {
      uint64_t u = c.get<uint64_t>(what);
      if (u > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(path, ": metadata key '", key, "': uint64 element ", i, " = ", u, " is too large");
      v[i] = int64_t(u);
    } else {
      v[i] = read_int_scalar(c, et, what);
    }
  }
  return v;
}

MetaValue read_value(Cursor& c, uint32_t type, const std::string& path, const std::string& key) {
  const std::string what = "value of '" + key + "'";
  switch (type) {
    case kU8:
    case kI8:
    case kU16:
    case kI16:
    case kU32:
    case kI32:
    case kI64:
      return read_int_scalar(c, type, what);
    case kU64:
      return c.get<uint64_t>(what);
    case kF32:
      return double(c.get<float>(what));
    case kF64:
      return c.get<double>(what);
    case kBool:
      return read_bool(c, path, what);
    case kString:
      return c.str(what);
    case kArray:
      return read_array(c, path, key);
    default:
      fail(path, ": metadata key '", key, "' has unknown value type ", type);
  }
}

}  // namespace

bool looks_like_gguf(const std::string& path) {
  try {
    auto f = MappedFile::open(path);
    return f->size() >= 4 && std::memcmp(f->data(), kMagic, 4) == 0;
  } catch (const Error&) {
    return false;
  }
}

WeightMap read_gguf(const std::string& path) {
  WeightMap wm;
  auto file = MappedFile::open(path);
  wm.files.push_back(file);
  Cursor c(file->data(), file->size(), path);

  // Header: magic, version, tensor count, key/value count.
  if (file->size() < 4 || std::memcmp(file->data(), kMagic, 4) != 0)
    fail(path, ": not a GGUF file (bad magic; expected 'GGUF')");
  c.get<uint32_t>("magic");
  uint32_t version = c.get<uint32_t>("version");
  if (version == 1)
    fail(path, ": GGUF version 1 is not supported (only versions 2 and 3); re-convert the model");
  if (version == 0 || version > 3) {
    uint32_t swapped = __builtin_bswap32(version);
    if (swapped >= 1 && swapped <= 3)
      fail(path, ": GGUF version ", version, " is not supported (a big-endian GGUF file?)");
    fail(path, ": GGUF version ", version, " is not supported (only versions 2 and 3)");
  }
  uint64_t n_tensors = c.get<uint64_t>("tensor count");
  uint64_t n_kv = c.get<uint64_t>("metadata key/value count");
  // Smallest possible encodings: a key/value is 8 (key length) + 1 (key) + 4 (type) + 1 (u8 value);
  // a tensor info is 8 (name length) + 1 (name) + 4 (n_dims) + 4 (type) + 8 (offset).
  constexpr uint64_t kMinKv = 14, kMinTensor = 25;
  if (n_kv > c.remaining() / kMinKv)
    fail(path, ": metadata key/value count ", n_kv, " cannot fit in a file of ", file->size(), " bytes");
  if (n_tensors > c.remaining() / kMinTensor)
    fail(path, ": tensor count ", n_tensors, " cannot fit in a file of ", file->size(), " bytes");

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str("metadata key " + std::to_string(i));
    if (key.empty()) fail(path, ": metadata key ", i, " is empty");
    if (wm.meta.count(key)) fail(path, ": duplicate metadata key '", key, "'");
    uint32_t type = c.get<uint32_t>("type of '" + key + "'");
    wm.meta.emplace(key, read_value(c, type, path, key));
  }

  uint64_t alignment = kGgufDefaultAlignment;
  if (auto it = wm.meta.find("general.alignment"); it != wm.meta.end()) {
    if (auto* i = std::get_if<int64_t>(&it->second)) {
      alignment = *i < 0 ? 0 : uint64_t(*i);
      if (*i < 0) fail(path, ": general.alignment = ", *i, " is not a non-zero power of two");
    } else if (auto* u = std::get_if<uint64_t>(&it->second)) {
      alignment = *u;
    } else {
      fail(path, ": general.alignment must be an integer, got ", meta_type_name(it->second));
    }
    if (alignment == 0 || !std::has_single_bit(alignment))
      fail(path, ": general.alignment = ", alignment, " is not a non-zero power of two");
  }

  // Tensor infos.
  if (n_tensors > c.remaining() / kMinTensor)
    fail(path, ": tensor count ", n_tensors, " cannot fit in the ", c.remaining(),
         " bytes left after the metadata");
  struct Pending {
    std::string name;
    uint64_t offset;
    uint64_t nbytes;
  };
  std::vector<Pending> order;
  order.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = c.str("name of tensor " + std::to_string(i));
    if (name.empty()) fail(path, ": tensor ", i, " has an empty name");
    if (name.size() > kGgufMaxTensorName)
      fail(path, ": tensor ", i, " name is ", name.size(), " bytes long (limit ", kGgufMaxTensorName, ")");
    if (wm.tensors.count(name)) fail(path, ": duplicate tensor name '", name, "'");
    const std::string tw = "tensor '" + name + "'";
    uint32_t n_dims = c.get<uint32_t>("n_dims of " + tw);
    if (n_dims > kGgufMaxDims)
      fail(path, ": ", tw, " has n_dims = ", n_dims, " (at most ", kGgufMaxDims, " supported)");
    std::vector<int64_t> ne(n_dims);  // innermost first, as stored
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t v = c.get<uint64_t>("dimension of " + tw);
      if (v == 0) fail(path, ": ", tw, " has dimension ", d, " equal to 0");
      if (v > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(path, ": ", tw, " has dimension ", d, " = ", v, ", which is negative or too large");
      ne[d] = int64_t(v);
      if (__builtin_mul_overflow(numel, ne[d], &numel))
        fail(path, ": ", tw, ": the element count overflows (dimensions too large)");
    }
    uint32_t type_id = c.get<uint32_t>("type of " + tw);
    DType dt;
    if (!ggml_type_to_dtype(type_id, &dt))
      fail(path, ": ", tw, " has GGML type id ", type_id, " (", ggml_type_name(type_id),
           "), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, "
           "Q4_K, "
           "Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS)");
    uint64_t offset = c.get<uint64_t>("data offset of " + tw);

    int64_t inner = n_dims > 0 ? ne[0] : 1;
    int64_t block = dtype_block_size(dt);
    if (inner % block != 0)
      fail(path, ": ", tw, " of type ", dtype_name(dt), " has first (innermost) dimension ", inner,
           ", not a multiple of the block size ", block);
    uint64_t rows = uint64_t(numel / inner);
    uint64_t row_bytes = uint64_t(inner / block) * dtype_block_bytes(dt);
    uint64_t nbytes;
    if (__builtin_mul_overflow(rows, row_bytes, &nbytes) ||
        nbytes > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(path, ": ", tw, ": the byte size overflows (dimensions too large)");

    TensorInfo ti;
    ti.name = name;
    ti.dtype = dt;
    ti.shape.assign(ne.rbegin(), ne.rend());  // outermost first
    ti.nbytes = size_t(nbytes);
    ti.file = path;
    wm.tensors.emplace(name, std::move(ti));
    order.push_back({name, offset, nbytes});
  }

  // Data section: starts at the next multiple of the alignment; each tensor's offset must be the
  // running padded total of the sizes before it, and its bytes must lie inside the file.
  if (order.empty()) return wm;
  uint64_t data_start;
  if (!align_up(c.pos(), alignment, &data_start) || data_start > file->size())
    fail(path, ": the tensor data section (aligned to ", alignment, ") starts past the end of the file");
  uint64_t expected = 0;
  for (const auto& p : order) {
    if (p.offset != expected)
      fail(path, ": tensor '", p.name, "' has data offset ", p.offset, " but the running padded total is ",
           expected, " (offsets must be consecutive, aligned to ", alignment, ")");
    uint64_t end;
    if (__builtin_add_overflow(p.offset, p.nbytes, &end) || end > file->size() - data_start)
      fail(path, ": tensor '", p.name, "' data (", p.nbytes, " bytes at data offset ", p.offset,
           ") runs past the end of the file (", file->size() - data_start, " bytes of tensor data)");
    if (!align_up(end, alignment, &expected)) fail(path, ": tensor '", p.name, "': data offset overflows");
    TensorInfo& ti = wm.tensors[p.name];
    ti.data = file->data() + data_start + p.offset;
    // Kernels read elements (and quant blocks' f16 scales) in place: require natural alignment.
    size_t elem_align = ti.dtype == DType::F32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(ti.data) % elem_align != 0)
      fail(path, ": tensor '", p.name, "' data at file offset ", data_start + p.offset, " is not aligned to ",
           elem_align, " bytes (general.alignment = ", alignment, " is too small for its type)");
  }
  return wm;
}

// ---- typed metadata access ----

const char* meta_type_name(const MetaValue& v) {
  switch (v.index()) {
    case 0:
      return "int";
    case 1:
      return "uint64";
    case 2:
      return "float";
    case 3:
      return "bool";
    case 4:
      return "string";
    case 5:
      return "string array";
    case 6:
      return "integer array";
    case 7:
      return "float array";
  }
  return "?";
}

namespace {

const MetaValue* meta_find(const WeightMap& wm, const std::string& key) {
  auto it = wm.meta.find(key);
  return it == wm.meta.end() ? nullptr : &it->second;
}

std::string meta_where(const WeightMap& wm) {
  return wm.files.empty() ? std::string("model metadata") : wm.files.front()->path();
}

[[noreturn]] void wrong_type(const WeightMap& wm, const std::string& key, const char* expected,
                             const MetaValue& v) {
  fail(meta_where(wm), ": metadata key '", key, "' must be ", expected, " but is ", meta_type_name(v));
}

}  // namespace

bool meta_has(const WeightMap& wm, const std::string& key) { return wm.meta.count(key) != 0; }

int64_t meta_int(const WeightMap& wm, const std::string& key, int64_t def) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return def;
  if (auto* i = std::get_if<int64_t>(v)) return *i;
  if (auto* u = std::get_if<uint64_t>(v)) {
    if (*u > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(meta_where(wm), ": metadata key '", key, "' = ", *u, " is too large");
    return int64_t(*u);
  }
  wrong_type(wm, key, "an integer", *v);
}

double meta_float(const WeightMap& wm, const std::string& key, double def) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return def;
  if (auto* d = std::get_if<double>(v)) return *d;
  if (auto* i = std::get_if<int64_t>(v)) return double(*i);
  if (auto* u = std::get_if<uint64_t>(v)) return double(*u);
  wrong_type(wm, key, "a number", *v);
}

bool meta_bool(const WeightMap& wm, const std::string& key, bool def) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return def;
  if (auto* b = std::get_if<bool>(v)) return *b;
  wrong_type(wm, key, "a bool", *v);
}

std::string meta_str(const WeightMap& wm, const std::string& key, const std::string& def) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return def;
  if (auto* s = std::get_if<std::string>(v)) return *s;
  wrong_type(wm, key, "a string", *v);
}

const std::vector<std::string>* meta_strs(const WeightMap& wm, const std::string& key) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return nullptr;
  if (auto* s = std::get_if<std::vector<std::string>>(v)) return s;
  wrong_type(wm, key, "an array of strings", *v);
}

const std::vector<int64_t>* meta_ints(const WeightMap& wm, const std::string& key) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return nullptr;
  if (auto* s = std::get_if<std::vector<int64_t>>(v)) return s;
  wrong_type(wm, key, "an array of integers", *v);
}

const std::vector<double>* meta_floats(const WeightMap& wm, const std::string& key) {
  const MetaValue* v = meta_find(wm, key);
  if (!v) return nullptr;
  if (auto* s = std::get_if<std::vector<double>>(v)) return s;
  wrong_type(wm, key, "an array of floats", *v);
}

}  // namespace llamarun
