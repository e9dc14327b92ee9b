#include "formats/pth.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/mmap.h"

namespace llamarun {

namespace {

// ---- little-endian reads with bounds checks -------------------------------------------------------

uint64_t rd_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool range_ok(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

// ---- zip ------------------------------------------------------------------------------------------

constexpr uint32_t kSigLocal = 0x04034b50, kSigCentral = 0x02014b50, kSigEocd = 0x06054b50,
                   kSigZip64Locator = 0x07064b50, kSigZip64Eocd = 0x06064b50;

bool bad_entry_name(const std::string& n) {
  if (n.empty() || n[0] == '/' || n.find('\\') != std::string::npos || n.find('\0') != std::string::npos)
    return true;
  size_t start = 0;
  while (start <= n.size()) {
    size_t slash = n.find('/', start);
    if (slash == std::string::npos) slash = n.size();
    if (n.compare(start, slash - start, "..") == 0 && slash - start == 2) return true;
    start = slash + 1;
  }
  return false;
}

}  // namespace

std::vector<ZipEntry> read_zip_directory(std::span<const uint8_t> bytes, const std::string& what) {
  const uint8_t* b = bytes.data();
  const uint64_t size = bytes.size();
  if (size < 22)
    fail(what, ": not a zip archive (", size, " bytes, shorter than an end-of-directory record)");
  // The end-of-central-directory record: the last 22 bytes, or earlier by a comment of <= 65535 bytes.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
  for (uint64_t p = size - 22 + 1; p-- > lowest;) {
    if (rd_le(b + p, 4) == kSigEocd && p + 22 + rd_le(b + p + 20, 2) == size) {
      eocd = p;
      break;
    }
  }
  if (eocd == UINT64_MAX) {
    if (b[0] == 0x80 && b[1] == 0x02)
      fail(what,
           ": a pickle, not a zip archive: the legacy (torch < 1.6) torch.save format is not supported; "
           "re-save the file with a current torch");
    fail(what, ": not a zip archive (no end-of-central-directory record)");
  }
  uint64_t n_entries = rd_le(b + eocd + 10, 2);
  uint64_t cd_size = rd_le(b + eocd + 12, 4);
  uint64_t cd_off = rd_le(b + eocd + 16, 4);
  if (rd_le(b + eocd + 4, 2) != 0 || rd_le(b + eocd + 6, 2) != 0 || rd_le(b + eocd + 8, 2) != n_entries)
    fail(what, ": multi-disk zip archives are not supported");
  const bool has_locator = eocd >= 20 && rd_le(b + eocd - 20, 4) == kSigZip64Locator;
  if (has_locator) {
    const uint64_t z = rd_le(b + eocd - 20 + 8, 8);
    if (!range_ok(z, 56, eocd - 20) || rd_le(b + z, 4) != kSigZip64Eocd)
      fail(what, ": zip64 end-of-directory locator points at offset ", z, ", where no zip64 record is");
    const uint64_t n64 = rd_le(b + z + 32, 8);
    if (rd_le(b + z + 16, 4) != 0 || rd_le(b + z + 20, 4) != 0 || rd_le(b + z + 24, 8) != n64)
      fail(what, ": multi-disk zip archives are not supported");
    // A 32-bit field either holds the true value or the 0xFF.. escape; anything else disagrees.
    auto merge = [&](uint64_t v32, uint64_t v64, uint64_t escape, const char* field) {
      if (v32 != escape && v32 != v64)
        fail(what, ": zip64 ", field, " ", v64, " disagrees with the 32-bit record's ", v32);
      return v64;
    };
    n_entries = merge(n_entries, n64, 0xFFFF, "entry count");
    cd_size = merge(cd_size, rd_le(b + z + 40, 8), 0xFFFFFFFF, "central directory size");
    cd_off = merge(cd_off, rd_le(b + z + 48, 8), 0xFFFFFFFF, "central directory offset");
  } else if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
    fail(what, ": zip64 sizes are escaped but there is no zip64 end-of-directory record");
  }
  if (!range_ok(cd_off, cd_size, size))
    fail(what, ": central directory (offset ", cd_off, ", ", cd_size,
         " bytes) runs past the end of the file (", size, " bytes)");
  if (n_entries > cd_size / 46)
    fail(what, ": ", n_entries, " entries cannot fit a central directory of ", cd_size, " bytes");

  std::vector<ZipEntry> out;
  out.reserve(n_entries);
  std::set<std::string> names;
  uint64_t p = cd_off;
  const uint64_t cd_end = cd_off + cd_size;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (!range_ok(p, 46, cd_end) || rd_le(b + p, 4) != kSigCentral)
      fail(what, ": central directory entry ", i, " at offset ", p, " is malformed");
    const uint64_t flags = rd_le(b + p + 8, 2), method = rd_le(b + p + 10, 2);
    uint64_t csize = rd_le(b + p + 20, 4), usize = rd_le(b + p + 24, 4);
    const uint64_t nlen = rd_le(b + p + 28, 2), xlen = rd_le(b + p + 30, 2), clen = rd_le(b + p + 32, 2);
    uint64_t local = rd_le(b + p + 42, 4);
    if (!range_ok(p + 46, nlen + xlen + clen, cd_end))
      fail(what, ": central directory entry ", i, " runs past the directory");
    std::string name(reinterpret_cast<const char*>(b + p + 46), nlen);
    if (bad_entry_name(name)) fail(what, ": zip entry name '", name, "' is not a plain relative path");
    // zip64 extra field: the escaped values, in the order usize, csize, local offset.
    const uint8_t* x = b + p + 46 + nlen;
    bool need64 = usize == 0xFFFFFFFF || csize == 0xFFFFFFFF || local == 0xFFFFFFFF;
    for (uint64_t q = 0; q + 4 <= xlen;) {
      const uint64_t id = rd_le(x + q, 2), len = rd_le(x + q + 2, 2);
      if (q + 4 + len > xlen) fail(what, ": zip entry '", name, "': extra field runs past its record");
      if (id == 0x0001) {
        uint64_t r = q + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFF) return;
          if (r + 8 > q + 4 + len) fail(what, ": zip entry '", name, "': zip64 extra field too short");
          v = rd_le(x + r, 8);
          r += 8;
        };
        take(usize);
        take(csize);
        take(local);
        need64 = false;
      }
      q += 4 + len;
    }
    if (need64) fail(what, ": zip entry '", name, "' has escaped sizes but no zip64 extra field");
    if (flags & 1) fail(what, ": zip entry '", name, "' is encrypted");
    if (method != 0)
      fail(what, ": zip entry '", name, "' is compressed (method ", method,
           "); only stored entries are supported (torch.save writes them uncompressed; re-save the file with "
           "torch.save)");
    if (csize != usize)
      fail(what, ": zip entry '", name, "' is stored but its sizes differ (", csize, " vs ", usize, ")");
    if (!range_ok(local, 30, size) || rd_le(b + local, 4) != kSigLocal)
      fail(what, ": zip entry '", name, "': no local header at offset ", local);
    const uint64_t lnlen = rd_le(b + local + 26, 2), lxlen = rd_le(b + local + 28, 2);
    if (rd_le(b + local + 8, 2) != method || lnlen != nlen || !range_ok(local + 30, lnlen, size) ||
        std::memcmp(b + local + 30, name.data(), nlen) != 0)
      fail(what, ": zip entry '", name, "': local header disagrees with the central directory");
    const uint64_t data = local + 30 + lnlen + lxlen;
    if (!range_ok(data, usize, size))
      fail(what, ": zip entry '", name, "' (", usize, " bytes at offset ", data,
           ") runs past the end of the file");
    if (!names.insert(name).second) fail(what, ": zip entry '", name, "' appears twice");
    out.push_back({std::move(name), data, usize});
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

namespace {

// ---- restricted unpickler -------------------------------------------------------------------------

struct Storage {
  DType dtype = DType::F32;
  std::string key;
  int64_t numel = 0;
};

struct Value;
using Tuple = std::vector<Value>;
struct Dict {
  std::vector<std::pair<Value, Value>> items;
};
struct Tensor {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

struct Value {
  enum Kind { kNone, kBool, kInt, kStr, kTuple, kDict, kGlobal, kStorage, kTensor } kind = kNone;
  int64_t i = 0;
  std::string s;  // kStr, kGlobal ("module.name")
  std::shared_ptr<Tuple> tuple;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Storage> storage;
  std::shared_ptr<Tensor> tensor;
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::kNone:
      return "None";
    case Value::kBool:
      return "bool";
    case Value::kInt:
      return "int";
    case Value::kStr:
      return "str";
    case Value::kTuple:
      return "tuple";
    case Value::kDict:
      return "dict";
    case Value::kGlobal:
      return "global";
    case Value::kStorage:
      return "storage";
    case Value::kTensor:
      return "tensor";
  }
  return "?";
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case 0x80:
      return "PROTO";
    case 0x95:
      return "FRAME";
    case '.':
      return "STOP";
    case '(':
      return "MARK";
    case '}':
      return "EMPTY_DICT";
    case ')':
      return "EMPTY_TUPLE";
    case 't':
      return "TUPLE";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 'X':
      return "BINUNICODE";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'M':
      return "BININT2";
    case 0x8a:
      return "LONG1";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 'N':
      return "NONE";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 0x94:
      return "MEMOIZE";
    case 'h':
      return "BINGET";
    case 'j':
      return "LONG_BINGET";
    case 'c':
      return "GLOBAL";
    case 0x93:
      return "STACK_GLOBAL";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 's':
      return "SETITEM";
    case 'u':
      return "SETITEMS";
    case 'b':
      return "BUILD";
    // Known to pickle but refused here:
    case 'P':
      return "PERSID";
    case 'i':
      return "INST";
    case 'o':
      return "OBJ";
    case 0x81:
      return "NEWOBJ";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case ']':
      return "EMPTY_LIST";
    case 'a':
      return "APPEND";
    case 'e':
      return "APPENDS";
    case 'l':
      return "LIST";
    case 'd':
      return "DICT";
    case 'G':
      return "BINFLOAT";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'L':
      return "LONG";
    case 0x8b:
      return "LONG4";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8e:
      return "BINBYTES8";
    case 0x96:
      return "BYTEARRAY8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'g':
      return "GET";
    case 'p':
      return "PUT";
  }
  return "unknown";
}

bool storage_dtype(const std::string& global, DType& dt) {
  if (global == "torch.HalfStorage")
    dt = DType::F16;
  else if (global == "torch.BFloat16Storage")
    dt = DType::BF16;
  else if (global == "torch.FloatStorage")
    dt = DType::F32;
  else
    return false;
  return true;
}

bool allowed_global(const std::string& g) {
  DType dt;
  return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" || storage_dtype(g, dt);
}

class Unpickler {
 public:
  Unpickler(std::span<const uint8_t> pkl, std::string what) : b_(pkl), what_(std::move(what)) {}

  Value run() {
    size_t ops = 0;
    while (true) {
      if (++ops > kPthMaxOps) fail(what_, ": more than ", kPthMaxOps, " pickle operations");
      op_at_ = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t v = u8();
          if (v < 2 || v > 5) err("pickle protocol ", int(v), " is not supported (2 to 5)");
          break;
        }
        case 0x95:
          bytes(8);
          break;     // FRAME: a length hint only
        case '.': {  // STOP
          if (stack_.size() != 1 || !marks_.empty()) err("STOP with ", stack_.size(), " values on the stack");
          return std::move(stack_.back());
        }
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '}': {
          Value v;
          v.kind = Value::kDict;
          v.dict = std::make_shared<Dict>();
          push(std::move(v));
          break;
        }
        case ')':
          push(make_tuple({}));
          break;
        case 't': {
          const size_t m = pop_mark();
          Tuple t(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
          stack_.resize(m);
          push(make_tuple(std::move(t)));
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {
          const size_t n = op - 0x84;
          need(n);
          Tuple t(std::make_move_iterator(stack_.end() - n), std::make_move_iterator(stack_.end()));
          stack_.resize(stack_.size() - n);
          push(make_tuple(std::move(t)));
          break;
        }
        case 'X':
          push_str(rd(4));
          break;
        case 0x8c:
          push_str(rd(1));
          break;
        case 0x8d:
          push_str(rd(8));
          break;
        case 'J':
          push_int(int32_t(uint32_t(rd(4))));
          break;
        case 'K':
          push_int(int64_t(rd(1)));
          break;
        case 'M':
          push_int(int64_t(rd(2)));
          break;
        case 0x8a: {  // LONG1: n bytes of little-endian two's complement
          const uint64_t n = rd(1);
          if (n > 8) err("LONG1 integer of ", n, " bytes is too large");
          const uint8_t* p = bytes(n);
          uint64_t v = n ? rd_le(p, int(n)) : 0;
          if (n && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push_int(int64_t(v));
          break;
        }
        case 0x88:
        case 0x89: {
          Value v;
          v.kind = Value::kBool;
          v.i = op == 0x88;
          push(std::move(v));
          break;
        }
        case 'N':
          push(Value{});
          break;
        case 'q':
          memo_put(rd(1));
          break;
        case 'r':
          memo_put(rd(4));
          break;
        case 0x94:
          memo_put(memo_.size());
          break;
        case 'h':
          memo_get(rd(1));
          break;
        case 'j':
          memo_get(rd(4));
          break;
        case 'c': {  // GLOBAL "module\nname\n"
          std::string mod = line(), name = line();
          push_global(mod + "." + name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value name = pop(), mod = pop();
          if (name.kind != Value::kStr || mod.kind != Value::kStr) err("STACK_GLOBAL needs two strings");
          push_global(mod.s + "." + name.s);
          break;
        }
        case 'Q':
          persid();
          break;
        case 'R':
          reduce();
          break;
        case 's': {
          Value v = pop(), k = pop();
          dict_top("SETITEM").items.emplace_back(std::move(k), std::move(v));
          break;
        }
        case 'u': {
          const size_t m = pop_mark();
          if ((stack_.size() - m) % 2) err("SETITEMS with an odd number of values");
          Dict& d = dict_below(m, "SETITEMS");
          for (size_t i = m; i < stack_.size(); i += 2)
            d.items.emplace_back(std::move(stack_[i]), std::move(stack_[i + 1]));
          stack_.resize(m);
          break;
        }
        case 'b': {  // BUILD: only the attribute dict of an OrderedDict (nn.Module's `_metadata`), dropped
          Value state = pop();
          if (state.kind != Value::kDict && state.kind != Value::kNone)
            err("BUILD with a ", kind_name(state.kind), " state");
          dict_top("BUILD");
          break;
        }
        default:
          err("opcode ", opcode_name(op), " (0x", hex(op), ") is not allowed in a state dict");
      }
    }
  }

 private:
  template <typename... A>
  [[noreturn]] void err(A&&... a) {
    fail(what_, ": data.pkl offset ", op_at_, ": ", std::forward<A>(a)...);
  }
  static std::string hex(uint8_t v) {
    const char* d = "0123456789abcdef";
    return {d[v >> 4], d[v & 15]};
  }
  const uint8_t* bytes(uint64_t n) {
    if (n > b_.size() - pos_) err("truncated pickle (", n, " bytes needed, ", b_.size() - pos_, " left)");
    const uint8_t* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return *bytes(1); }
  uint64_t rd(int n) { return rd_le(bytes(n), n); }
  std::string line() {
    std::string s;
    while (true) {
      const uint8_t c = u8();
      if (c == '\n') return s;
      if (s.size() >= 256) err("GLOBAL name longer than 256 bytes");
      s.push_back(char(c));
    }
  }
  void push(Value v) {
    if (stack_.size() >= kPthMaxStack) err("pickle stack deeper than ", kPthMaxStack);
    stack_.push_back(std::move(v));
  }
  void need(size_t n) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + n) err("stack underflow");
  }
  Value pop() {
    need(1);
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  size_t pop_mark() {
    if (marks_.empty()) err("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  static Value make_tuple(Tuple t) {
    Value v;
    v.kind = Value::kTuple;
    v.tuple = std::make_shared<Tuple>(std::move(t));
    return v;
  }
  void push_str(uint64_t n) {
    if (n > b_.size() - pos_) err("string of ", n, " bytes runs past the end of the pickle");
    Value v;
    v.kind = Value::kStr;
    const uint8_t* p = bytes(n);
    v.s.assign(reinterpret_cast<const char*>(p), n);
    push(std::move(v));
  }
  void push_int(int64_t i) {
    Value v;
    v.kind = Value::kInt;
    v.i = i;
    push(std::move(v));
  }
  void push_global(const std::string& g) {
    if (!allowed_global(g))
      err("global '", g, "' is not allowed (a state dict holds only tensors; refusing to load)");
    Value v;
    v.kind = Value::kGlobal;
    v.s = g;
    push(std::move(v));
  }
  // Strings are copied by value; their total is capped so a small file cannot expand without bound.
  void charge(const Value& v) {
    copied_ += v.s.size();
    if (copied_ > kPthMaxCopiedBytes) err("memo copies exceed ", kPthMaxCopiedBytes, " bytes of strings");
  }
  void memo_put(uint64_t idx) {
    need(1);
    if (idx >= kPthMaxMemo) err("memo index ", idx, " is over the limit ", kPthMaxMemo);
    charge(stack_.back());
    memo_[idx] = stack_.back();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) err("memo index ", idx, " was never stored");
    charge(it->second);
    push(it->second);
  }
  Dict& dict_top(const char* op) {
    need(1);
    if (stack_.back().kind != Value::kDict) err(op, " on a ", kind_name(stack_.back().kind), ", not a dict");
    return *stack_.back().dict;
  }
  Dict& dict_below(size_t m, const char* op) {
    if (m == 0 || (marks_.size() && m - 1 < marks_.back())) err(op, " without a dict below its MARK");
    if (stack_[m - 1].kind != Value::kDict) err(op, " on a ", kind_name(stack_[m - 1].kind), ", not a dict");
    return *stack_[m - 1].dict;
  }
  void persid() {
    Value pid = pop();
    const Tuple* t = pid.kind == Value::kTuple ? pid.tuple.get() : nullptr;
    DType dt;
    if (!t || t->size() != 5 || (*t)[0].kind != Value::kStr || (*t)[0].s != "storage" ||
        (*t)[1].kind != Value::kGlobal || !storage_dtype((*t)[1].s, dt) || (*t)[2].kind != Value::kStr ||
        (*t)[3].kind != Value::kStr || (*t)[4].kind != Value::kInt || (*t)[4].i < 0)
      err("persistent id is not ('storage', <storage type>, key, location, numel)");
    auto& s = storages_[(*t)[2].s];
    if (!s) {
      s = std::make_shared<Storage>();
      s->dtype = dt;
      s->key = (*t)[2].s;
      s->numel = (*t)[4].i;
    } else if (s->dtype != dt || s->numel != (*t)[4].i) {
      err("storage '", s->key, "' is referenced with two different types or sizes");
    }
    Value v;
    v.kind = Value::kStorage;
    v.storage = s;
    push(std::move(v));
  }
  std::vector<int64_t> int_tuple(const Value& v, const char* what) {
    if (v.kind != Value::kTuple)
      err("_rebuild_tensor_v2: ", what, " is a ", kind_name(v.kind), ", not a tuple");
    if (v.tuple->size() > kPthMaxTensorDims) err("_rebuild_tensor_v2: ", v.tuple->size(), " dimensions");
    std::vector<int64_t> out;
    for (auto& e : *v.tuple) {
      if (e.kind != Value::kInt || e.i < 0)
        err("_rebuild_tensor_v2: ", what, " holds a non-integer or negative");
      out.push_back(e.i);
    }
    return out;
  }
  void reduce() {
    Value args = pop(), fn = pop();
    if (fn.kind != Value::kGlobal) err("REDUCE of a ", kind_name(fn.kind), ", not a callable");
    if (args.kind != Value::kTuple) err("REDUCE with ", kind_name(args.kind), " arguments, not a tuple");
    const Tuple& a = *args.tuple;
    if (fn.s == "collections.OrderedDict") {
      if (!a.empty()) err("OrderedDict called with arguments");
      Value v;
      v.kind = Value::kDict;
      v.dict = std::make_shared<Dict>();
      push(std::move(v));
      return;
    }
    if (fn.s == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7) err("_rebuild_tensor_v2 with ", a.size(), " arguments");
      if (a[0].kind != Value::kStorage) err("_rebuild_tensor_v2: argument 0 is not a storage");
      if (a[1].kind != Value::kInt || a[1].i < 0) err("_rebuild_tensor_v2: bad storage offset");
      if (a[4].kind != Value::kBool) err("_rebuild_tensor_v2: requires_grad is not a bool");
      if (a[5].kind != Value::kDict || !a[5].dict->items.empty())
        err("_rebuild_tensor_v2: backward hooks are not an empty OrderedDict");
      if (a.size() == 7 && a[6].kind != Value::kNone && a[6].kind != Value::kDict)
        err("_rebuild_tensor_v2: metadata is a ", kind_name(a[6].kind));
      auto t = std::make_shared<Tensor>();
      t->storage = a[0].storage;
      t->offset = a[1].i;
      t->shape = int_tuple(a[2], "size");
      t->stride = int_tuple(a[3], "stride");
      if (t->shape.size() != t->stride.size()) err("_rebuild_tensor_v2: size and stride differ in length");
      Value v;
      v.kind = Value::kTensor;
      v.tensor = std::move(t);
      push(std::move(v));
      return;
    }
    err("REDUCE of '", fn.s, "' is not allowed");
  }

  std::span<const uint8_t> b_;
  std::string what_;
  size_t pos_ = 0, op_at_ = 0, copied_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
  std::map<std::string, std::shared_ptr<Storage>> storages_;
};

size_t elem_size(DType t) { return t == DType::F32 ? 4 : 2; }

bool mul_ok(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

}  // namespace

std::vector<PthTensor> parse_pth(std::span<const uint8_t> bytes, const std::string& what) {
  const std::vector<ZipEntry> entries = read_zip_directory(bytes, what);
  std::map<std::string, const ZipEntry*> by_name;
  const ZipEntry* pkl = nullptr;
  for (auto& e : entries) {
    by_name[e.name] = &e;
    const std::string suffix = "data.pkl";
    if (e.name.size() >= suffix.size() &&
        e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (e.name.size() == suffix.size() || e.name[e.name.size() - suffix.size() - 1] == '/') &&
        std::count(e.name.begin(), e.name.end(), '/') <= 1) {
      if (pkl) fail(what, ": two pickles in the archive ('", pkl->name, "' and '", e.name, "')");
      pkl = &e;
    }
  }
  if (!pkl) fail(what, ": no data.pkl in the archive (not a torch.save file)");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);
  if (auto it = by_name.find(prefix + "byteorder"); it != by_name.end()) {
    std::string order(reinterpret_cast<const char*>(bytes.data() + it->second->offset), it->second->size);
    if (order != "little") fail(what, ": byteorder is '", order, "'; only little-endian files are supported");
  }

  Unpickler up(bytes.subspan(pkl->offset, pkl->size), what);
  Value root = up.run();
  if (root.kind != Value::kDict)
    fail(what, ": the pickle holds a ", kind_name(root.kind), ", not a state dict");

  std::vector<PthTensor> out;
  std::set<std::string> seen;
  for (auto& [k, v] : root.dict->items) {
    if (k.kind != Value::kStr) fail(what, ": state dict key is a ", kind_name(k.kind), ", not a string");
    if (v.kind != Value::kTensor) fail(what, ": '", k.s, "' is a ", kind_name(v.kind), ", not a tensor");
    if (!seen.insert(k.s).second) fail(what, ": tensor '", k.s, "' appears twice");
    const Tensor& t = *v.tensor;
    const Storage& s = *t.storage;
    const size_t es = elem_size(s.dtype);
    auto it = by_name.find(prefix + "data/" + s.key);
    if (it == by_name.end())
      fail(what, ": tensor '", k.s, "': storage '", s.key, "' has no entry in the archive");
    const ZipEntry& e = *it->second;
    uint64_t sbytes = 0;
    if (!mul_ok(uint64_t(s.numel), es, sbytes) || sbytes != e.size)
      fail(what, ": storage '", s.key, "' holds ", e.size, " bytes but its ", s.numel, " elements need ",
           uint64_t(s.numel) * es);
    // Contiguous (C order): a dimension of size 1 may carry any stride.
    uint64_t numel = 1, expect = 1;
    for (size_t d = t.shape.size(); d-- > 0;) {
      if (t.shape[d] != 1 && uint64_t(t.stride[d]) != expect)
        fail(what, ": tensor '", k.s, "' is not contiguous (dimension ", d, " has stride ", t.stride[d],
             ", expected ", expect, ")");
      if (!mul_ok(expect, uint64_t(t.shape[d]), expect) || !mul_ok(numel, uint64_t(t.shape[d]), numel))
        fail(what, ": tensor '", k.s, "': element count overflows");
    }
    if (uint64_t(t.offset) > uint64_t(s.numel) || numel > uint64_t(s.numel) - uint64_t(t.offset))
      fail(what, ": tensor '", k.s, "' (offset ", t.offset, ", ", numel, " elements) runs past its storage '",
           s.key, "' of ", s.numel, " elements");
    const uint64_t at = e.offset + uint64_t(t.offset) * es;
    if (reinterpret_cast<uintptr_t>(bytes.data() + at) % es)
      fail(what, ": tensor '", k.s, "' data at file offset ", at, " is not aligned to ", es, " bytes");
    PthTensor pt;
    pt.name = k.s;
    pt.dtype = s.dtype;
    pt.shape = t.shape;
    pt.data = bytes.data() + at;
    pt.nbytes = numel * es;
    out.push_back(std::move(pt));
  }
  return out;
}

void read_pth(const std::string& path, WeightMap& out) {
  auto file = MappedFile::open(path);
  std::vector<PthTensor> ts = parse_pth(std::span<const uint8_t>(file->data(), file->size()), path);
  for (auto& t : ts)
    if (out.tensors.count(t.name)) fail(path, ": tensor '", t.name, "' is already loaded from another file");
  for (auto& t : ts) {
    TensorInfo ti;
    ti.name = t.name;
    ti.dtype = t.dtype;
    ti.shape = t.shape;
    ti.data = t.data;
    ti.nbytes = t.nbytes;
    ti.file = path;
    out.tensors.emplace(t.name, std::move(ti));
  }
  out.files.push_back(std::move(file));
}

}  // namespace llamarun
