// llamarun: run Llama-family models. `llamarun --help` lists the subcommands.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "core/error.h"

namespace {

const char* kUsage =
    "usage: llamarun COMMAND [options]\n\n"
    "commands:\n"
    "  generate   generate text from a prompt (streams to stdout; --json for one JSON object)\n"
    "  chat       interactive chat with the model's chat template\n"
    "  info       architecture, config, tensors, dtypes and memory of a model\n"
    "  tokenize   text -> token ids (-m takes a model, a GGUF file, tokenizer.model or tokenizer.json)\n"
    "  bench      prompt-processing and generation speed against the machine's measured limits\n"
    "  serve      OpenAI-compatible HTTP server: completions, chat, streaming, metrics\n"
    "  convert    IN OUT: a Meta checkpoint, HF directory or GGUF file to an HF directory or a GGUF file\n"
    "  quantize   IN OUT TYPE: write a GGUF file quantized to Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, ...\n"
    "  perplexity perplexity over a text file, as llama.cpp's llama-perplexity computes it\n\n"
    "With no -m, the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf) is used.\n"
    "Run `llamarun COMMAND --help` for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    using namespace llamarun::cli;
    if (cmd == "generate") return cmd_generate(argc, argv);
    if (cmd == "chat") return cmd_chat(argc, argv);
    if (cmd == "info") return cmd_info(argc, argv);
    if (cmd == "tokenize") return cmd_tokenize(argc, argv);
    if (cmd == "bench") return cmd_bench(argc, argv);
    if (cmd == "serve") return cmd_serve(argc, argv);
    if (cmd == "convert") return cmd_convert(argc, argv);
    if (cmd == "quantize") return cmd_quantize(argc, argv);
    if (cmd == "perplexity") return cmd_perplexity(argc, argv);
    std::fprintf(stderr, "llamarun: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const llamarun::Error& e) {
    std::fprintf(stderr, "llamarun %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "llamarun %s: error: out of memory\n", cmd.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llamarun %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
