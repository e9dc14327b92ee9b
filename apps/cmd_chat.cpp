// llamarun chat: an interactive conversation using the model's chat template. The KV cache of the
// conversation so far is reused from turn to turn.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "engine/generator.h"
#include "tokenizer/chat_template.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_generator.h"
#endif

namespace llamarun::cli {

int cmd_chat(int argc, char** argv) {
  Args args("chat",
            "Chat with the model on stdin/stdout, using its chat template (Llama 2 [INST]/<<SYS>>, ChatML, "
            "Llama 3).\n"
            "Type a message and press Enter; /reset starts over, /exit (or end of input) quits.",
            concat(model_opts(), std::vector<OptSpec>{device_opt()},
                   std::vector<OptSpec>{
                       {"--system", "", true, "system prompt", "the template's default"},
                       {"--format", "", true, "chat format: auto, llama2, chatml, llama3, zephyr", "auto"}},
                   sampling_opts("0.7")));
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  SamplingParams sp = sampling_from(args, 0.7);
  const std::string device = device_from(args);
  auto model = open_model(args);
  if (!model->tokenizer) fail(model->path, ": no tokenizer found next to the model");
  const Tokenizer& tok = *model->tokenizer;
  const std::string fmt_name = args.str("--format", "auto");
  ChatFormat fmt;
  if (fmt_name == "auto")
    fmt = detect_chat_format(model->chat_template, tok);
  else if (fmt_name == "llama2")
    fmt = ChatFormat::kLlama2;
  else if (fmt_name == "chatml")
    fmt = ChatFormat::kChatML;
  else if (fmt_name == "llama3")
    fmt = ChatFormat::kLlama3;
  else if (fmt_name == "zephyr")
    fmt = ChatFormat::kZephyr;
  else
    fail("--format must be auto, llama2, chatml, llama3 or zephyr, not '", fmt_name, "'");
  const ChatOptions chat_opts = chat_options_from_template(fmt, model->chat_template);
  // One generate() for the CPU Generator and the CUDA one; both keep the conversation's KV cache.
  std::function<GenerationResult(const std::vector<int32_t>&, const TextCallback&)> generate;
  std::unique_ptr<Generator> cpu;
#ifdef LLAMARUN_WITH_CUDA
  std::unique_ptr<CudaGenerator> gpu;
  if (is_cuda_device(device)) {
    CudaLlamaOptions co;
    co.device = device;
    co.max_context = context_size(args, *model);
    co.dtype = gpu_dtype_from(args, *model);
    gpu = std::make_unique<CudaGenerator>(*model, co);
    generate = [&](const std::vector<int32_t>& ids, const TextCallback& cb) {
      return gpu->generate(ids, sp, cb);
    };
  }
#endif
  if (!generate) {
    cpu = std::make_unique<Generator>(*model, context_size(args, *model));
    generate = [&](const std::vector<int32_t>& ids, const TextCallback& cb) {
      return cpu->generate(ids, sp, cb);
    };
  }

  std::vector<ChatMessage> history;
  if (args.has("--system")) history.push_back({"system", args.str("--system")});
  const bool tty = isatty(0);
  std::string line;
  while (true) {
    if (tty) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      history.resize(args.has("--system") ? 1 : 0);
      continue;
    }
    if (line.empty()) continue;
    history.push_back({"user", line});
    std::string text = render_chat(fmt, history, /*add_generation_prompt=*/true, chat_opts);
    std::vector<int32_t> ids = tok.encode(text, /*parse_special=*/true);
    GenerationResult r;
    try {
      r = generate(ids, [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
      });
    } catch (const Error& e) {
      // One bad turn (e.g. the conversation outgrew the context) does not end the session.
      std::fprintf(stderr, "\nllamarun chat: %s\n", e.what());
      history.pop_back();
      continue;
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);
    history.push_back({"assistant", r.text});
    std::fprintf(stderr, "[%zu tokens, %.1f tok/s]\n", r.token_ids.size(), r.gen_tok_per_s());
  }
  return 0;
}

}  // namespace llamarun::cli
