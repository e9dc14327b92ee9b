// Hugging Face AWQ and GPTQ int4 checkpoints, repacked into GGML Q4_1 at load.
//
// Such a checkpoint stores each quantized Linear (out x in) as int32 tensors `P.qweight`, `P.qzeros`,
// a float tensor `P.scales` (and for GPTQ `P.g_idx`) instead of `P.weight`; config.json's
// `quantization_config` says how (quant_method "awq" / "gptq", bits, group_size, ...). Both formats
// dequantize a weight of input i, output o as
//     w = s[g][o] * (q[i][o] - z[g][o]),   g = i / group_size,
// with 4-bit q and z. Q4_1 blocks (32 consecutive inputs of one output row; x = d * q + m) hold that
// exactly when d = s and m = -s * z for each block (group_size a multiple of 32, so a block lies in
// one group): the nibbles q are copied unchanged, d = s is exact for fp16 scales, and m = -s * z is
// rounded to fp16 (relative error <= 2^-11 of |s * z|). The repacked tensors appear as `P.weight`
// with dtype Q4_1 [out, in], so every backend runs them with its Q4_1 kernels.
//
// Refused with an Error naming the file / tensor / field: bits other than 4, quant_methods other
// than awq / gptq, AWQ versions other than "gemm" (GEMV packs differently) or zero_point false, GPTQ
// checkpoint formats other than "gptq" (v1) / "gptq_v2", GPTQ act-order (a g_idx that is not
// i / group_size), group sizes that are not a multiple of 32, and tensors whose shapes disagree.
#pragma once

#include <string>

#include "formats/weight_map.h"

namespace llamarun {

struct HfInt4Config {
  enum class Method { kNone, kAwq, kGptq } method = Method::kNone;
  int bits = 4;
  int group_size = 128;      // -1: one group per row (the whole input dimension)
  bool gptq_v2 = false;      // GPTQ: zero points stored as is (v2), not minus one (v1, "gptq")
  const char* name() const;  // "awq", "gptq" or "none"
};

// Reads `quantization_config` from the config.json text (absent or null: Method::kNone). Throws
// Error naming `where` and the field for anything listed as refused above.
HfInt4Config hf_int4_config_from_json(const std::string& config_json_text, const std::string& where);

// Replaces every `P.qweight` / `P.qzeros` / `P.scales` (/ `P.g_idx`) of `wm` by a Q4_1 tensor
// `P.weight` [out, in] whose bytes are owned by wm.buffers; sets wm.repacked_from. Throws Error
// naming the tensor (and its file) on a shape, dtype or act-order problem. `where` names the config.
void repack_hf_int4(WeightMap& wm, const HfInt4Config& cfg, const std::string& where);

// For a Hugging Face checkpoint read from `dir`: when dir/config.json has a quantization_config (or,
// lacking one, when I32 tensors are present and dir holds AutoGPTQ's quantize_config.json or AutoAWQ's
// quant_config.json), repacks as above; then any I32 tensor left in wm.int_tensors is an Error naming
// it. A config.json that is not valid JSON is left to the config reader (no repacking).
void apply_hf_int4(WeightMap& wm, const std::string& dir);

}  // namespace llamarun
