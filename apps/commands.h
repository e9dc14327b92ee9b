// The llamarun subcommands. Each returns the process exit code; errors are thrown as llamarun::Error
// and reported by main().
#pragma once

namespace llamarun::cli {

int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);

}  // namespace llamarun::cli
