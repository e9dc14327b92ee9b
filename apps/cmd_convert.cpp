// llamarun convert: a model (Meta checkpoint directory, Hugging Face directory or GGUF file) out as a
// Hugging Face safetensors directory or a GGUF file.
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "commands.h"
#include "core/error.h"
#include "core/mmap.h"
#include "model/convert.h"
#include "model/meta_checkpoint.h"
#include "model/model.h"

namespace llamarun::cli {

int cmd_convert(int argc, char** argv) {
  Args args("convert",
            "usage: llamarun convert IN OUT [--to safetensors|gguf] [--force]\n"
            "Convert IN (a Meta checkpoint directory with params.json + consolidated.NN.pth, a Hugging Face\n"
            "directory or a GGUF file) to OUT: a Hugging Face directory (config.json, model.safetensors,\n"
            "tokenizer files) or, when OUT ends in .gguf or --to gguf is given, one GGUF file.\n"
            "Weights keep their dtype; wq/wk rows are reordered for the target's RoPE pair order.",
            {{"--to", "", true, "output format: safetensors or gguf", "from OUT's extension"},
             {"--force", "", false, "replace OUT if it exists", ""}});
  std::vector<std::string> pos;
  int i = 2;
  for (; i < argc && argv[i][0] != '-' && pos.size() < 2; ++i) pos.emplace_back(argv[i]);
  args.parse(argc, argv, i);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  if (pos.size() != 2) fail("llamarun convert needs IN and OUT (see llamarun convert --help)");
  const std::string& in = pos[0];
  const std::string& out = pos[1];
  const bool ext_gguf = out.size() >= 5 && out.compare(out.size() - 5, 5, ".gguf") == 0;
  const std::string to = args.str("--to", ext_gguf ? "gguf" : "safetensors");
  if (to != "gguf" && to != "safetensors") fail("--to must be safetensors or gguf, not '", to, "'");
  if (std::filesystem::exists(out) && !args.has("--force"))
    fail(out, ": already exists (pass --force to replace it)");
  if (std::filesystem::weakly_canonical(in) == std::filesystem::weakly_canonical(out))
    fail(out, ": is the input itself");

  LoadOptions lo;
  lo.max_batch = 1;
  auto m = load_model(in, lo);
  ConvertSource src;
  src.cfg = &m->cfg;
  src.weights = m->weights.get();
  src.gguf_names = m->gguf_names();
  src.tokenizer_dir = m->meta ? meta_tokenizer_dir(in) : is_directory(in) ? in : "";
  src.name = std::filesystem::path(in).filename().string();
  if (src.name.empty()) src.name = std::filesystem::path(in).parent_path().filename().string();
  std::fprintf(stderr, "llamarun convert: %s (%s, %d layers, %.1f MB) -> %s (%s)\n", in.c_str(),
               m->gguf   ? "gguf"
               : m->meta ? "Meta checkpoint"
                         : "safetensors",
               m->cfg.num_layers, double(m->weight_bytes()) / 1e6, out.c_str(), to.c_str());
  if (to == "gguf" && !m->gguf &&
      (src.tokenizer_dir.empty() || (!file_exists(src.tokenizer_dir + "/tokenizer.model") &&
                                     !file_exists(src.tokenizer_dir + "/tokenizer.json"))))
    std::fprintf(stderr,
                 "llamarun convert: warning: no tokenizer.model or tokenizer.json beside the input; the GGUF "
                 "file gets no vocabulary\n");
  if (to == "gguf")
    write_gguf_model(src, out);
  else
    write_hf_safetensors(src, out);
  return 0;
}

}  // namespace llamarun::cli
