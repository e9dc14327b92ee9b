// Chat templates: format detection and default-system extraction from a template text, and
// rendering + encoding of arbitrary conversations in every format. Input fields (split at 0xFF):
// template text, then role/content pairs (the first byte of a role field picks the role).
#include "core/error.h"
#include "fuzz_util.h"
#include "tokenizer/chat_template.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const auto fields = fuzz::split_fields(data, size);
  const Tokenizer& tok = fuzz::smollm2();
  const std::string& tmpl = fields[0];
  const ChatFormat detected = detect_chat_format(tmpl, tok);
  std::vector<ChatMessage> msgs;
  static const char* kRoles[] = {"system", "user", "assistant", "tool"};
  for (size_t i = 1; i + 1 < fields.size() && msgs.size() < 16; i += 2)
    msgs.push_back({kRoles[fields[i].empty() ? 1 : uint8_t(fields[i][0]) % 4], fields[i + 1]});
  for (ChatFormat f :
       {ChatFormat::kLlama2, ChatFormat::kChatML, ChatFormat::kLlama3, ChatFormat::kZephyr, detected}) {
    const ChatOptions opt = chat_options_from_template(f, tmpl);
    for (bool gen : {false, true}) {
      try {
        const std::string text = render_chat(f, msgs, gen, opt);
        std::string joined;
        for (const auto& p : render_chat_pieces(f, msgs, gen, opt)) joined += p.text;
        if (joined != text) __builtin_trap();  // the pieces must add up to the rendered text
        encode_chat(tok, f, msgs, gen, opt);
        encode_chat(tok, f, msgs, gen, opt, /*special_in_content=*/true);
      } catch (const Error&) {
      }
    }
  }
  return 0;
}
