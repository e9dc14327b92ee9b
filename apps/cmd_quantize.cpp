// llamarun quantize IN OUT TYPE: writes a GGUF file of IN's weights quantised to a llama.cpp file type.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "args.h"
#include "commands.h"
#include "core/error.h"
#include "core/mmap.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "formats/model_files.h"
#include "model/config.h"
#include "model/convert.h"
#include "model/meta_checkpoint.h"
#include "model/model.h"
#include "model/quantize_model.h"

namespace llamarun::cli {

namespace {

// Output order: llama.cpp's converter's (gguf_tensor_order_less).
std::vector<const TensorInfo*> ordered_tensors(const WeightMap& wm) {
  std::vector<const TensorInfo*> v;
  for (auto& [_, t] : wm.tensors) v.push_back(&t);
  std::stable_sort(v.begin(), v.end(),
                   [](auto* a, auto* b) { return gguf_tensor_order_less(a->name, b->name); });
  return v;
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  Args args(
      "quantize",
      std::string(
          "Quantize a model to a GGUF file: llamarun quantize IN OUT TYPE\n"
          "IN is a GGUF file (any type llamarun reads; requantizing is allowed): OUT gets IN's\n"
          "metadata (tokenizer, chat template, config) with general.file_type set. IN may also be a\n"
          "Hugging Face directory (config.json, *.safetensors, tokenizer.json or tokenizer.model) or a\n"
          "Meta checkpoint: OUT is then what `llamarun convert IN OUT.gguf` writes (llama.cpp's tensor\n"
          "names, metadata and vocabulary; Q/K rows in GGUF's RoPE order), quantized. The tensors are\n"
          "mixed as llama-quantize mixes them (TYPE: ") +
          quant_scheme_names() +
          ").\nQ4_K_M / Q5_K_M give attn_v and ffn_down Q6_K in the first and last eighth of the layers and "
          "every third between;\nthe output projection gets Q6_K; rows not divisible by 256 fall back to "
          "32-value types.",
      {{"--quiet", "-q", false, "no per-tensor progress", ""}});
  int first_opt = 2;
  std::vector<std::string> pos;
  while (first_opt < argc && argv[first_opt][0] != '-' && pos.size() < 3) pos.push_back(argv[first_opt++]);
  args.parse(argc, argv, first_opt);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  if (pos.size() != 3)
    fail("expected IN OUT TYPE (got ", pos.size(), " of them); see llamarun quantize --help");
  const std::string& in = pos[0];
  const std::string& out = pos[1];
  const QuantScheme scheme = parse_quant_scheme(pos[2]);
  if (!file_exists(in)) fail(in, ": no such file or directory");
  if (out == in) fail("OUT must differ from IN (", in, ")");

  const auto t0 = std::chrono::steady_clock::now();
  auto report = [&](size_t n, const std::map<std::string, int>& counts, size_t in_bytes, size_t out_bytes) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string mix;
    for (auto& [name, c] : counts) mix += (mix.empty() ? "" : ", ") + std::to_string(c) + " " + name;
    std::fprintf(stderr, "quantize: %s -> %s (%s): %zu tensors (%s), %.1f MB -> %.1f MB in %.1f s\n",
                 in.c_str(), out.c_str(), scheme.name.c_str(), n, mix.c_str(), double(in_bytes) / 1e6,
                 double(out_bytes) / 1e6, secs);
  };
  if (is_directory(in)) {
    // A Hugging Face directory (or a Meta checkpoint): written as `llamarun convert IN OUT.gguf` writes it
    // (llama.cpp's names, metadata and vocabulary, interleaved Q/K rows), its matrices quantised on the way.
    LoadOptions lo;
    lo.max_batch = 1;
    lo.load_tokenizer = false;
    auto m = load_model(in, lo);
    ConvertSource src;
    src.cfg = &m->cfg;
    src.weights = m->weights.get();
    src.gguf_names = m->gguf_names();
    src.tokenizer_dir = m->meta ? meta_tokenizer_dir(in) : in;
    src.name = std::filesystem::path(in).filename().string();
    if (src.name.empty()) src.name = std::filesystem::path(in).parent_path().filename().string();
    if (!file_exists(src.tokenizer_dir + "/tokenizer.model") &&
        !file_exists(src.tokenizer_dir + "/tokenizer.json"))
      std::fprintf(stderr,
                   "quantize: warning: %s has no tokenizer.model or tokenizer.json; %s gets no vocabulary "
                   "(llamarun runs it on token ids, llama.cpp refuses it)\n",
                   in.c_str(), out.c_str());
    const GgufWriteSummary s = write_gguf_model(src, out, &scheme, "quantize " + scheme.name);
    report(s.tensors, s.types, s.in_bytes, s.out_bytes);
    return 0;
  }
  WeightMap wm = load_weights(in);
  const LlamaConfig cfg = config_from_gguf(wm, in);
  const bool tied = !wm.find("output.weight");

  GgufWriter w;
  for (GgufKV& kv : read_gguf_kvs(in)) w.set(std::move(kv));
  w.set_u32("general.quantization_version", 2);
  w.set_u32("general.file_type", scheme.file_type);

  const auto tensors = ordered_tensors(wm);
  std::vector<DType> types;
  std::map<std::string, int> counts;
  size_t in_bytes = 0, out_bytes = 0;
  for (const TensorInfo* t : tensors) {
    const DType to = choose_quant_type(scheme, t->name, t->shape, t->dtype, cfg.num_layers, tied);
    w.add_tensor(t->name, to, t->shape);
    types.push_back(to);
    counts[dtype_name(to)]++;
    in_bytes += t->nbytes;
    out_bytes += dtype_row_bytes(to, t->shape.back()) * size_t(t->numel() / t->shape.back());
  }
  const QuantProgress progress =
      args.has("--quiet") ? QuantProgress{} : stderr_progress("quantize " + scheme.name);
  w.write(out, [&](size_t i, uint8_t* dst, size_t) {
    convert_tensor(*tensors[i], types[i], dst);
    if (progress) progress(i + 1, tensors.size(), tensors[i]->name);
  });
  report(tensors.size(), counts, in_bytes, out_bytes);
  return 0;
}

}  // namespace llamarun::cli
