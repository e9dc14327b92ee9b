// PyTorch `.pth` reader for state dicts written by torch.save (the zip format of torch >= 1.6).
//
// A .pth file is a zip archive: PREFIX/data.pkl (a pickle of the state dict), PREFIX/data/KEY (one
// entry per storage, raw little-endian elements), PREFIX/version, PREFIX/byteorder (newer torch).
// Only stored (uncompressed) entries are accepted: torch.save never compresses, and the tensors of a
// stored entry point straight into the memory mapping. A compressed entry is an error (no inflater).
// zip64 records (any archive over 4 GiB: every Meta 7B shard) are read, with their sizes checked
// against the central directory and the file.
//
// The pickle is read by a restricted unpickler that knows only what torch.save emits for a state
// dict (protocols 2 to 4):
//   opcodes  PROTO FRAME STOP MARK EMPTY_DICT EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
//            BINUNICODE SHORT_BINUNICODE BINUNICODE8 BININT BININT1 BININT2 LONG1 NEWTRUE NEWFALSE NONE
//            BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL BINPERSID REDUCE
//            SETITEM SETITEMS BUILD (BUILD only on a dict, its state dropped: nn.Module's `_metadata`)
//   globals  collections.OrderedDict, torch._utils._rebuild_tensor_v2,
//            torch.{Half,BFloat16,Float}Storage
// Anything else (another opcode or global, REDUCE of anything but those two callables, SETITEM on a
// non-dict, a persistent id that is not ('storage', type, key, location, numel)) is an Error naming
// the opcode or global and its byte offset in data.pkl. Nothing from the file is ever executed.
// Stack depth, memo size and operation count are capped; every length, index, offset and size is
// bounds- and overflow-checked (shared/ROBUSTNESS.md).
//
// Tensors must be contiguous (C order); their extent must fit their storage, and each storage entry's
// size must equal its element count times the element size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "formats/weight_map.h"

namespace llamarun {

constexpr size_t kPthMaxStack = 1 << 16;        // values on the unpickler stack
constexpr size_t kPthMaxMemo = 1 << 20;         // memo index (a 70B shard's state dict uses ~10k)
constexpr size_t kPthMaxCopiedBytes = 1 << 26;  // string bytes copied by memo puts/gets (no memory bombs)
constexpr size_t kPthMaxOps = 1 << 27;          // opcodes executed
constexpr size_t kPthMaxTensorDims = 8;

// One stored (uncompressed) entry of a zip archive.
struct ZipEntry {
  std::string name;
  uint64_t offset = 0;  // of the entry's data, from the start of the archive
  uint64_t size = 0;
};

// Lists the entries of a zip archive held in `bytes`. Throws Error naming `what` for a malformed
// archive, a compressed or encrypted entry, an entry name with "..", a leading '/' or a backslash,
// a duplicate name, or sizes/offsets that do not fit the archive.
std::vector<ZipEntry> read_zip_directory(std::span<const uint8_t> bytes, const std::string& what);

// A tensor of a .pth state dict; `data` points into the bytes given to parse_pth.
struct PthTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Parses a whole .pth file held in memory (the fuzzing entry point: any bytes are safe). The state
// dict's keys must be strings and its values tensors. Throws Error naming `what`.
std::vector<PthTensor> parse_pth(std::span<const uint8_t> bytes, const std::string& what = "<memory>");

// Maps `path` and adds its tensors to `out` (mapping in out.files). A name already in `out` is an
// error; `out` is unchanged when the file is rejected.
void read_pth(const std::string& path, WeightMap& out);

}  // namespace llamarun
