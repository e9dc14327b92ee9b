// Quantising a model's weights: llama.cpp's file types (Q8_0, Q4_K_M, ...) and their rules for which
// tensor gets which block type, and the conversion of a WeightMap's tensors (used by `llamarun quantize`
// to write a GGUF file and by `--quantize TYPE` to quantise at load, in memory).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/weight_map.h"

namespace llamarun {

// A target file type, as llama-quantize names them.
struct QuantScheme {
  std::string name;     // "Q4_K_M"
  DType base;           // the type most matrices get (Q4_K for Q4_K_M)
  uint32_t file_type;   // llama.cpp's llama_ftype, written as general.file_type
  bool medium = false;  // the _M mixes: more bits for attn_v / ffn_down in some layers
};

// Parses a scheme name, case-insensitively: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M (Q4_K), Q5_K_M (Q5_K),
// Q6_K, F16, BF16, F32. Throws Error listing the accepted names for anything else.
QuantScheme parse_quant_scheme(const std::string& name);
// The accepted names, for --help texts.
const char* quant_scheme_names();

// What a tensor is, from its name (GGUF names or Hugging Face names).
struct TensorRole {
  enum Kind {
    Other,
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV,
    AttnOut,
    FfnGate,
    FfnUp,
    FfnDown,
    Norm
  } kind = Other;
  int layer = -1;  // blk.N / model.layers.N, -1 outside the layers
};
TensorRole tensor_role(const std::string& name);

// The order llama.cpp's converter writes a Llama model's tensors in: token_embd, rope_freqs, then the
// layers in numeric order (by name inside a layer), then everything else (output_norm, output).
bool gguf_tensor_order_less(const std::string& a, const std::string& b);

// The block type a tensor gets under `s` (llama.cpp's llama-quant.cpp rules for Llama models without an
// importance matrix; see the .cpp for the rules). `shape` is outermost-first; `n_layers` the model's
// layer count; `tied` whether token_embd doubles as the output projection (no output tensor). Returns
// `src` for tensors that are not quantised (1-D tensors, norms, names not ending in "weight").
DType choose_quant_type(const QuantScheme& s, const std::string& name, const std::vector<int64_t>& shape,
                        DType src, int n_layers, bool tied);

// Converts tensor `t` (any type dequantize_row reads) into `dtype` at dst (dtype_row_bytes(dtype, cols) *
// rows bytes), rows in parallel. A same-type conversion is a copy.
void convert_tensor(const TensorInfo& t, DType dtype, uint8_t* dst);

// Progress callback: (tensors done, tensors total, the tensor just converted).
using QuantProgress = std::function<void(size_t, size_t, const std::string&)>;

// Quantises the matrices of `wm` in memory under `s` (the types choose_quant_type gives): the new data goes
// into `storage` (resized once; it must outlive wm's use) and each changed TensorInfo points into it.
// `gguf_names` tells which naming the map uses. Returns the number of tensors converted.
size_t quantize_weight_map(WeightMap& wm, const QuantScheme& s, int n_layers, bool gguf_names,
                           std::vector<uint8_t>& storage, const QuantProgress& progress = {});

// A per-tensor progress line on stderr when stderr is a terminal (no-op otherwise).
QuantProgress stderr_progress(const std::string& what);

}  // namespace llamarun
