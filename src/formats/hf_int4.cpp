#include "formats/hf_int4.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "core/fp16.h"
#include "core/mmap.h"

// The packings, as the reference implementations write and read them (each checked against the
// source named):
//
// AWQ "gemm" (AutoAWQ awq/modules/linear/gemm.py, WQLinear_GEMM.from_linear / register_buffer;
// dequantization in awq/utils/packing_utils.py, dequantize_gemm):
//   qweight int32 [in, out / 8]: word (i, c) holds outputs 8c .. 8c+7 of input i; nibble k (bits
//           4k .. 4k+3) holds output 8c + order[k], order = [0, 2, 4, 6, 1, 3, 5, 7]; so output
//           8c + j is nibble kAwqNibbleOf[j] = [0, 4, 1, 5, 2, 6, 3, 7] (AWQ_REVERSE_ORDER).
//   qzeros  int32 [in / group, out / 8], same nibble order; the zero point z is stored as is.
//   scales  fp16  [in / group, out].
//   w[o][i] = (q - z) * s.
//
// GPTQ (AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py, QuantLinear.pack and the
// torch dequantization in forward):
//   qweight int32 [in / 8, out]: word (r, o) holds inputs 8r .. 8r+7 of output o, input 8r + k in
//           nibble k (shift 4k): packed along the input dimension, in order.
//   qzeros  int32 [in / group, out / 8]: word (g, c) holds outputs 8c .. 8c+7, output 8c + k in
//           nibble k. checkpoint_format "gptq" (v1) stores z - 1 (pack: `zeros -= 1`; forward:
//           `zeros = zeros + 1` after masking the nibble); "gptq_v2" (GPTQModel's format="gptq_v2")
//           stores z itself.
//   scales  fp16  [in / group, out];  g_idx int32 [in], group of each input (i / group unless the
//           checkpoint was quantized with act-order, desc_act).
//   w[o][i] = s * (q - z), s and z of group g_idx[i].

namespace llamarun {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// An integer field of the quantization config under any of `keys` (the first present wins). `pre`
// prefixes field names in messages ("quantization_config." inside config.json, "" in its own file).
int64_t int_field(const json& q, std::initializer_list<const char*> keys, int64_t def,
                  const std::string& where, const std::string& pre) {
  for (const char* k : keys) {
    auto it = q.find(k);
    if (it == q.end() || it->is_null()) continue;
    if (!it->is_number_integer()) fail(where, ": ", pre, k, " must be an integer, got ", it->dump());
    return it->get<int64_t>();
  }
  return def;
}

std::string str_field(const json& q, std::initializer_list<const char*> keys, const std::string& def,
                      const std::string& where, const std::string& pre) {
  for (const char* k : keys) {
    auto it = q.find(k);
    if (it == q.end() || it->is_null()) continue;
    if (!it->is_string()) fail(where, ": ", pre, k, " must be a string, got ", it->dump());
    return it->get<std::string>();
  }
  return def;
}

struct Linear {
  std::string prefix;  // "model.layers.0.self_attn.q_proj"
  const IntTensorInfo* qweight = nullptr;
  const IntTensorInfo* qzeros = nullptr;
  const TensorInfo* scales = nullptr;
  const IntTensorInfo* g_idx = nullptr;
  int64_t in = 0, out = 0, group = 0, n_groups = 0;
};

[[noreturn]] void fail_shape(const std::string& file, const std::string& name,
                             const std::vector<int64_t>& got, const std::vector<int64_t>& want,
                             const std::string& why) {
  fail(file, ": tensor '", name, "' is ", shape_str(got), " but ", why, " implies ", shape_str(want));
}

// Finds the parts of `prefix` and checks their shapes against qweight's and the group size.
Linear describe(const WeightMap& wm, const std::string& prefix, const HfInt4Config& cfg) {
  Linear l;
  l.prefix = prefix;
  const bool awq = cfg.method == HfInt4Config::Method::kAwq;
  l.qweight = &wm.int_tensors.at(prefix + ".qweight");
  const std::string& file = l.qweight->file;
  const std::string qw = prefix + ".qweight";
  if (l.qweight->shape.size() != 2 || l.qweight->shape[0] <= 0 || l.qweight->shape[1] <= 0)
    fail(file, ": tensor '", qw, "' is ", shape_str(l.qweight->shape), "; ", cfg.name(),
         " packs a Linear as a non-empty 2-D int32 tensor (",
         awq ? "[in_features, out_features / 8]" : "[in_features / 8, out_features]", ")");
  if (awq) {
    l.in = l.qweight->shape[0];
    l.out = l.qweight->shape[1] * 8;
  } else {
    l.in = l.qweight->shape[0] * 8;
    l.out = l.qweight->shape[1];
  }
  l.group = cfg.group_size == -1 ? l.in : cfg.group_size;
  if (l.in % 32 != 0 || l.in % l.group != 0 || l.group % 32 != 0)
    fail(file, ": tensor '", qw, "' ", shape_str(l.qweight->shape), " has in_features = ", l.in,
         ", which is not a multiple of the group size ", l.group,
         " (Q4_1 repacking needs in_features and the group size to be multiples of 32)");
  if (l.out % 8 != 0)
    fail(file, ": tensor '", qw, "' has out_features = ", l.out,
         ", not a multiple of 8 (the zero-point packing)");
  l.n_groups = l.in / l.group;
  const std::string why =
      "'" + qw + "' " + shape_str(l.qweight->shape) + " with group_size " + std::to_string(l.group);

  auto zit = wm.int_tensors.find(prefix + ".qzeros");
  if (zit == wm.int_tensors.end()) {
    if (wm.tensors.count(prefix + ".qzeros"))
      fail(wm.tensors.at(prefix + ".qzeros").file, ": tensor '", prefix, ".qzeros' must be I32, not ",
           dtype_name(wm.tensors.at(prefix + ".qzeros").dtype));
    fail(file, ": tensor '", prefix, ".qzeros' is missing (", qw, " is there; ", cfg.name(),
         " stores the zero points of every group)");
  }
  l.qzeros = &zit->second;
  const std::vector<int64_t> zwant = {l.n_groups, l.out / 8};
  if (l.qzeros->shape != zwant) fail_shape(l.qzeros->file, l.qzeros->name, l.qzeros->shape, zwant, why);

  auto sit = wm.tensors.find(prefix + ".scales");
  if (sit == wm.tensors.end()) {
    if (wm.int_tensors.count(prefix + ".scales"))
      fail(file, ": tensor '", prefix, ".scales' must be F16, BF16 or F32, not I32");
    fail(file, ": tensor '", prefix, ".scales' is missing (", qw, " is there)");
  }
  l.scales = &sit->second;
  if (l.scales->dtype != DType::F16 && l.scales->dtype != DType::BF16 && l.scales->dtype != DType::F32)
    fail(l.scales->file, ": tensor '", l.scales->name, "' is ", dtype_name(l.scales->dtype),
         "; scales must be F16, BF16 or F32");
  const std::vector<int64_t> swant = {l.n_groups, l.out};
  if (l.scales->shape != swant) fail_shape(l.scales->file, l.scales->name, l.scales->shape, swant, why);

  if (auto git = wm.int_tensors.find(prefix + ".g_idx"); git != wm.int_tensors.end()) {
    l.g_idx = &git->second;
    if (awq) fail(l.g_idx->file, ": tensor '", l.g_idx->name, "': AWQ checkpoints have no g_idx");
    const std::vector<int64_t> gwant = {l.in};
    if (l.g_idx->shape != gwant) fail_shape(l.g_idx->file, l.g_idx->name, l.g_idx->shape, gwant, why);
    // Act-order (desc_act) checkpoints assign inputs to groups out of order; a 32-value Q4_1 block
    // then mixes groups, and running it would need the activations permuted: refused.
    for (int64_t i = 0; i < l.in; ++i)
      if (int64_t(l.g_idx->data[i]) != i / l.group)
        fail(l.g_idx->file, ": tensor '", l.g_idx->name, "' is an act-order (desc_act) permutation: g_idx[",
             i, "] = ", l.g_idx->data[i], " but input ", i, " / group_size ", l.group, " = ", i / l.group,
             ". GPTQ act-order checkpoints are not supported (re-quantize with desc_act=false)");
  } else if (wm.tensors.count(prefix + ".g_idx")) {
    fail(wm.tensors.at(prefix + ".g_idx").file, ": tensor '", prefix, ".g_idx' must be I32, not ",
         dtype_name(wm.tensors.at(prefix + ".g_idx").dtype));
  }
  return l;
}

// Builds the Q4_1 bytes of one Linear: out rows of in / 32 blocks.
std::shared_ptr<std::vector<uint8_t>> repack(const Linear& l, const HfInt4Config& cfg) {
  const bool awq = cfg.method == HfInt4Config::Method::kAwq;
  const int zero_offset = !awq && !cfg.gptq_v2 ? 1 : 0;  // GPTQ v1 stores z - 1
  const int64_t G = l.n_groups, O = l.out, I = l.in, nb = I / 32;

  // d and m of every (group, output): scales to float, zero points unpacked.
  std::vector<float> s(size_t(G * O));
  dequantize_row(l.scales->dtype, l.scales->data, s.data(), G * O);
  std::vector<uint16_t> dm(size_t(G * O) * 2);
  const auto* qz = reinterpret_cast<const uint32_t*>(l.qzeros->data);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < O; ++o) {
      const uint32_t word = qz[g * (O / 8) + o / 8];
      const int nib = awq ? kAwqNibbleOf[o % 8] : int(o % 8);
      const int z = int((word >> (4 * nib)) & 0xFu) + zero_offset;
      const float sc = s[size_t(g * O + o)];
      if (!std::isfinite(sc))
        fail(l.scales->file, ": tensor '", l.scales->name, "' [", g, ", ", o, "] = ", sc, " is not finite");
      const float m = -sc * float(z);
      const uint16_t dh = f32_to_f16(sc), mh = f32_to_f16(m);
      if ((dh & 0x7c00u) == 0x7c00u || (mh & 0x7c00u) == 0x7c00u)
        fail(l.scales->file, ": tensor '", l.scales->name, "' [", g, ", ", o, "] = ", sc, " (zero point ", z,
             ") overflows the fp16 scale / minimum of Q4_1");
      dm[size_t(g * O + o) * 2] = dh;
      dm[size_t(g * O + o) * 2 + 1] = mh;
    }

  auto buf = std::make_shared<std::vector<uint8_t>>(size_t(O * nb) * sizeof(BlockQ4_1));
  auto* dst = reinterpret_cast<BlockQ4_1*>(buf->data());
  const auto* qw = reinterpret_cast<const uint32_t*>(l.qweight->data);
  const int64_t group_blocks = l.group / 32;
  if (awq) {
    // Word column c covers outputs 8c .. 8c+7; a block reads 32 words (inputs 32b .. 32b+31).
    const int64_t C = O / 8;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t b = 0; b < nb; ++b) {
        uint32_t w[32];
        for (int j = 0; j < 32; ++j) w[j] = qw[(b * 32 + j) * C + c];
        const int64_t g = b / group_blocks;
        for (int k = 0; k < 8; ++k) {
          const int64_t o = c * 8 + k;
          const int sh = 4 * kAwqNibbleOf[k];
          BlockQ4_1& blk = dst[o * nb + b];
          blk.d = dm[size_t(g * O + o) * 2];
          blk.m = dm[size_t(g * O + o) * 2 + 1];
          for (int j = 0; j < 16; ++j)
            blk.qs[j] = uint8_t(((w[j] >> sh) & 0xFu) | (((w[j + 16] >> sh) & 0xFu) << 4));
        }
      }
  } else {
    // Block b of output o: words (4b .. 4b+3, o), input 32b + 8r + k in nibble k of word 4b + r.
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t q[32];
        for (int r = 0; r < 4; ++r) {
          const uint32_t word = qw[(b * 4 + r) * O + o];
          for (int k = 0; k < 8; ++k) q[r * 8 + k] = uint8_t((word >> (4 * k)) & 0xFu);
        }
        const int64_t g = b / group_blocks;
        BlockQ4_1& blk = dst[o * nb + b];
        blk.d = dm[size_t(g * O + o) * 2];
        blk.m = dm[size_t(g * O + o) * 2 + 1];
        for (int j = 0; j < 16; ++j) blk.qs[j] = uint8_t(q[j] | (q[j + 16] << 4));
      }
  }
  return buf;
}

}  // namespace

const char* HfInt4Config::name() const {
  return method == Method::kAwq ? "awq" : method == Method::kGptq ? "gptq" : "none";
}

namespace {

// The quantization config object `q` (config.json's quantization_config, or the whole of AutoGPTQ's
// quantize_config.json / AutoAWQ's quant_config.json, which may lack quant_method: `def_method`).
HfInt4Config config_from_object(const json& q, const std::string& where, const std::string& pre,
                                const std::string& def_method) {
  HfInt4Config c;
  if (!q.is_object())
    fail(where, ": ", pre.empty() ? "the quantization config" : "quantization_config",
         " must be an object, got ", q.dump());
  const std::string method = lower(str_field(q, {"quant_method"}, def_method, where, pre));
  if (method.empty()) fail(where, ": ", pre, "quant_method is missing (supported: awq, gptq)");
  if (method == "awq")
    c.method = HfInt4Config::Method::kAwq;
  else if (method == "gptq")
    c.method = HfInt4Config::Method::kGptq;
  else
    fail(where, ": ", pre, "quant_method '", method,
         "' is not supported (supported: awq, gptq with 4-bit weights; or convert/quantize the float model)");
  const int64_t bits = int_field(q, {"bits", "w_bit"}, 4, where, pre);
  if (bits != 4)
    fail(where, ": ", pre, "bits = ", bits, " is not supported: only 4-bit ", method,
         " checkpoints load (repacked into Q4_1)");
  c.bits = 4;
  const int64_t gs = int_field(q, {"group_size", "q_group_size"}, 128, where, pre);
  if (gs != -1 && (gs <= 0 || gs % 32 != 0 || gs > (int64_t(1) << 30)))
    fail(where, ": ", pre, "group_size = ", gs,
         " is not supported (a positive multiple of 32, or -1 for one group per row)");
  c.group_size = int(gs);
  if (c.method == HfInt4Config::Method::kAwq) {
    const std::string version = lower(str_field(q, {"version"}, "gemm", where, pre));
    if (version != "gemm")
      fail(where, ": ", pre, "version '", version,
           "' is not supported (only AWQ \"gemm\" packing; GEMV / Marlin / exllama packings differ)");
    if (auto z = q.find("zero_point"); z != q.end() && !z->is_null() && !(z->is_boolean() && z->get<bool>()))
      fail(where, ": ", pre, "zero_point = ", z->dump(), " is not supported (only AWQ with zero points)");
  } else {
    const std::string fmt = lower(str_field(q, {"checkpoint_format", "format"}, "gptq", where, pre));
    if (fmt == "gptq")
      c.gptq_v2 = false;
    else if (fmt == "gptq_v2")
      c.gptq_v2 = true;
    else
      fail(where, ": ", pre, "checkpoint_format '", fmt, "' is not supported (supported: gptq, gptq_v2)");
    // desc_act is checked where it matters: each g_idx must be the trivial i / group_size.
  }
  return c;
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
}

}  // namespace

HfInt4Config hf_int4_config_from_json(const std::string& text, const std::string& where) {
  const json j = parse_json(text, where);
  if (!j.is_object()) return {};
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return {};
  return config_from_object(*it, where, "quantization_config.", "");
}

void repack_hf_int4(WeightMap& wm, const HfInt4Config& cfg, const std::string& where) {
  if (cfg.method == HfInt4Config::Method::kNone) return;
  std::vector<std::string> prefixes;
  for (auto& [name, t] : wm.int_tensors)
    if (name.ends_with(".qweight")) prefixes.push_back(name.substr(0, name.size() - 8));
  if (prefixes.empty())
    fail(where, ": quantization_config says ", cfg.name(), " but the weights have no '.qweight' tensor");
  for (const auto& p : prefixes) {
    const std::string wname = p + ".weight";
    if (auto* t = wm.find(wname))
      fail(t->file, ": tensor '", wname, "' and '", p,
           ".qweight' are both present (a Linear is either float or ", cfg.name(), "-packed)");
    Linear l = describe(wm, p, cfg);
    TensorInfo ti;
    ti.name = wname;
    ti.dtype = DType::Q4_1;
    ti.shape = {l.out, l.in};
    ti.file = l.qweight->file;
    auto buf = repack(l, cfg);
    ti.data = buf->data();
    ti.nbytes = buf->size();
    wm.buffers.push_back(std::move(buf));
    wm.tensors.emplace(wname, std::move(ti));
    wm.tensors.erase(p + ".scales");
    for (const char* s : {".qweight", ".qzeros", ".g_idx"}) wm.int_tensors.erase(p + s);
  }
  wm.repacked_from = cfg.name();
}

void apply_hf_int4(WeightMap& wm, const std::string& dir) {
  std::string cfg_path = (fs::path(dir) / "config.json").string();
  HfInt4Config cfg;
  if (file_exists(cfg_path)) {
    std::string text = read_text_file(cfg_path);
    // Not valid JSON: left to the config reader, which reports it with its own message.
    if (json::accept(text)) cfg = hf_int4_config_from_json(text, cfg_path);
  }
  // Older checkpoints keep the quantization config in a file of its own: AutoGPTQ's
  // quantize_config.json, AutoAWQ's quant_config.json (read only when the packed tensors are there).
  if (cfg.method == HfInt4Config::Method::kNone && !wm.int_tensors.empty()) {
    for (auto [file, method] : {std::pair<const char*, const char*>{"quantize_config.json", "gptq"},
                                std::pair<const char*, const char*>{"quant_config.json", "awq"}}) {
      const std::string p = (fs::path(dir) / file).string();
      if (!file_exists(p)) continue;
      cfg = config_from_object(parse_json(read_text_file(p), p), p, "", method);
      cfg_path = p;
      break;
    }
  }
  repack_hf_int4(wm, cfg, cfg_path);
  if (!wm.int_tensors.empty()) {
    const IntTensorInfo& t = wm.int_tensors.begin()->second;
    if (cfg.method == HfInt4Config::Method::kNone)
      fail(t.file, ": tensor '", t.name,
           "' has dtype I32; integer tensors are read only as AWQ/GPTQ packed weights, and ", cfg_path,
           file_exists(cfg_path) ? " has no quantization_config" : " is missing");
    fail(t.file, ": tensor '", t.name, "' (I32) is not part of a ", cfg.name(),
         " Linear (P.qweight with P.qzeros, P.scales",
         cfg.method == HfInt4Config::Method::kGptq ? ", P.g_idx" : "", ")");
  }
}

}  // namespace llamarun
