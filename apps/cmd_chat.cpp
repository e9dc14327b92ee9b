// llamarun chat: an interactive conversation using the model's chat template, through the serving Engine.
// Each turn submits the whole conversation; the engine's prefix cache holds the KV of what came before,
// so only the new turn is computed. When the conversation outgrows --ctx the oldest turns are dropped
// (the system prompt stays).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "engine/generate.h"
#include "tokenizer/chat_template.h"

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
  const int ctx = context_size(args, *model);
  EngineConfig ec;
  ec.batch_invariant = false;  // one conversation at a time
  auto engine = make_engine(args, *model, device, ctx, ec);
  // Room kept for the reply when the conversation is trimmed to the context.
  const int reply_room = std::max(1, std::min(sp.max_tokens, ctx / 2));

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
    // Message text is plain text (special-token strings in it stay text), as the server encodes it.
    std::vector<int32_t> ids;
    try {
      ids = encode_chat(tok, fmt, history, /*add_generation_prompt=*/true, chat_opts);
    } catch (const Error& e) {
      std::fprintf(stderr, "llamarun chat: %s\n", e.what());
      history.pop_back();
      continue;
    }
    // The conversation outgrew the context: drop the oldest turns (never the system prompt nor this
    // message) until the prompt leaves room for a reply.
    const size_t first = history.front().role == "system" ? 1 : 0;
    int dropped = 0;
    while (int(ids.size()) + reply_room > ctx && history.size() > first + 1) {
      history.erase(history.begin() + first);  // a user message and the reply to it
      if (history.size() > first + 1 && history[first].role == "assistant")
        history.erase(history.begin() + first);
      ++dropped;
      ids = encode_chat(tok, fmt, history, true, chat_opts);
    }
    if (dropped > 0)
      std::fprintf(stderr,
                   "llamarun chat: the conversation outgrew the context of %d tokens (--ctx); dropped the %d "
                   "oldest turn%s\n",
                   ctx, dropped, dropped == 1 ? "" : "s");
    GenerationResult r;
    try {
      r = generate(*engine, ids, sp, [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
      });
    } catch (const Error& e) {
      // One bad turn (e.g. a single message longer than the context) does not end the session.
      std::fprintf(stderr, "\nllamarun chat: %s\n", e.what());
      history.pop_back();
      continue;
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);
    history.push_back({"assistant", r.text});
    std::fprintf(stderr, "[%zu tokens, %.1f tok/s; %d of %zu prompt tokens from the cache]\n",
                 r.token_ids.size(), r.gen_tok_per_s(), r.cached_prompt_tokens, ids.size());
  }
  return 0;
}

}  // namespace llamarun::cli
