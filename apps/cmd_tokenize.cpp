// llamarun tokenize: text -> token ids.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "core/mmap.h"
#include "formats/model_files.h"
#include "model/model.h"

namespace llamarun::cli {

namespace {

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& path) {
  if (is_directory(path)) return load_tokenizer_dir(path);
  if (path.ends_with(".model") || path.ends_with(".json")) return load_tokenizer_file(path);
  WeightMap wm = load_weights(path);  // GGUF: the vocabulary is in the metadata
  if (!wm.meta.count("tokenizer.ggml.model")) fail(path, ": this GGUF file has no embedded tokenizer");
  return tokenizer_from_gguf(wm);
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  Args args(
      "tokenize",
      "Tokenize text. Without --ids prints one 'id<TAB>piece' line per token.\n"
      "BOS is not added unless --add-bos is given; special-token text is plain text unless --parse-special.",
      {{"--model", "-m", true, "model directory, GGUF file, tokenizer.model or tokenizer.json",
        "the default model"},
       {"--prompt", "-p", true, "text to tokenize", ""},
       {"--file", "-f", true, "read the text from a file", ""},
       {"--ids", "", false, "print a JSON array of ids", ""},
       {"--add-bos", "", false, "prepend the BOS id", ""},
       {"--parse-special", "", false, "map special-token text (e.g. <|im_start|>) to its id", ""}});
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  std::string text;
  if (args.has("--file"))
    text = read_text_file(args.str("--file"));
  else if (args.has("--prompt"))
    text = args.str("--prompt");
  else
    fail("llamarun tokenize: give the text with -p TEXT or -f FILE");
  auto tok = open_tokenizer(model_path_from(args));
  std::vector<int32_t> ids;
  if (args.has("--add-bos")) {
    if (tok->bos_id() < 0) fail("llamarun tokenize: --add-bos, but this tokenizer has no BOS token");
    ids.push_back(tok->bos_id());
  }
  auto body = tok->encode(text, args.has("--parse-special"));
  ids.insert(ids.end(), body.begin(), body.end());
  if (args.has("--ids")) {
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
  } else {
    for (int32_t id : ids)
      std::printf("%d\t%s\n", id,
                  nlohmann::json(tok->piece(id))
                      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                      .c_str());
  }
  return 0;
}

}  // namespace llamarun::cli
