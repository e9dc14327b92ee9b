// llamarun generate: prompt in, text streamed out, timing on stderr; one request to the serving Engine.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "core/mmap.h"
#include "engine/generate.h"

namespace llamarun::cli {

int cmd_generate(int argc, char** argv) {
  Args args(
      "generate",
      "Generate a continuation of a prompt. Text streams to stdout; a timing line goes to stderr.\n"
      "--json prints one JSON object instead: text, prompt_ids, token_ids, finish_reason, timings.\n"
      "--device cuda runs the model on a GPU (fp16, or bf16 for bf16 checkpoints / --act bf16).",
      concat(model_opts(), std::vector<OptSpec>{device_opt()},
             std::vector<OptSpec>{{"--prompt", "-p", true, "prompt text", ""},
                                  {"--file", "-f", true, "read the prompt from a file", ""},
                                  {"--no-bos", "", false, "do not add BOS even if the model wants it", ""},
                                  {"--json", "", false, "print one JSON object on stdout", ""}},
             sampling_opts("0.8")));
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
    fail("give the prompt with -p TEXT or -f FILE");
  SamplingParams sp = sampling_from(args, 0.8);
  const std::string device = device_from(args);

  auto model = open_model(args);
  if (!model->tokenizer) fail(model->path, ": no tokenizer found next to the model");
  const Tokenizer& tok = *model->tokenizer;
  std::vector<int32_t> prompt;
  if (tok.add_bos() && tok.bos_id() >= 0 && !args.has("--no-bos")) prompt.push_back(tok.bos_id());
  auto body = tok.encode(text);
  prompt.insert(prompt.end(), body.begin(), body.end());

  const bool json = args.has("--json");
  auto stream = [&](const std::string& piece) {
    if (!json) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  // One request through the serving engine. Not batch-invariant: one sequence at a time, and the blocked
  // GEMM prefills faster.
  EngineConfig ec;
  ec.batch_invariant = false;
  ec.enable_prefix_caching = false;
  auto engine = make_engine(args, *model, device, context_size(args, *model), ec);
  GenerationResult r = generate(*engine, prompt, sp, stream);
  int prompt_new = int(r.prompt_ids.size()) - r.cached_prompt_tokens;
  if (json) {
    nlohmann::json j{{"text", r.text},
                     {"prompt_ids", r.prompt_ids},
                     {"token_ids", r.token_ids},
                     {"finish_reason", r.finish_reason},
                     {"prompt_tokens", r.prompt_ids.size()},
                     {"generated_tokens", r.token_ids.size()},
                     {"prompt_tok_per_s", r.prompt_tok_per_s()},
                     {"gen_tok_per_s", r.gen_tok_per_s()},
                     {"device", device}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  std::fprintf(stderr,
               "llamarun: prompt %d tokens in %.3f s (%.1f tok/s); generated %zu tokens in %.3f s (%.1f "
               "tok/s); finish: %s\n",
               prompt_new, r.prompt_seconds, r.prompt_tok_per_s(), r.token_ids.size(), r.gen_seconds,
               r.gen_tok_per_s(), r.finish_reason.c_str());
  return 0;
}

}  // namespace llamarun::cli
